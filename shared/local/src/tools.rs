//! The anvil binary: where it is looked for, and how it is installed.
//!
//! Looked for, in order: `$NODEFLEET_ANVIL` (an explicit path), then the tools folder
//! (`<tools>/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`). Nothing is taken from
//! `PATH`, so every run of the project uses the pinned version. Installing runs
//! `npm install` of the pinned package into the tools folder (the npm registry is the one
//! place these machines can get it from).

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The npm package that ships a prebuilt anvil for x86_64 Linux.
pub const ANVIL_NPM_PACKAGE: &str = "@foundry-rs/anvil-linux-amd64";
/// The pinned anvil version: every developer, CI run and `nodefleet up` runs this one.
pub const ANVIL_VERSION: &str = "1.7.1";
/// Environment variable naming an anvil binary to use instead of the tools folder's.
pub const ANVIL_ENV: &str = "NODEFLEET_ANVIL";
/// Environment variable naming the tools folder.
pub const TOOLS_DIR_ENV: &str = "NODEFLEET_TOOLS_DIR";
/// The tools folder when nothing else is said: `tools/` in the current directory, which is
/// the project root when commands are run as the README shows.
pub const DEFAULT_TOOLS_DIR: &str = "tools";

/// Why anvil is not available.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "anvil not found at {path}; install it with `nodefleet tools install` (runs `npm install {ANVIL_NPM_PACKAGE}@{ANVIL_VERSION}` into the tools folder) or set {ANVIL_ENV} to an anvil binary"
    )]
    AnvilMissing { path: PathBuf },
    #[error("{ANVIL_ENV}={path} does not name an executable file")]
    AnvilEnvInvalid { path: PathBuf },
    #[error(
        "cannot install anvil: npm is not available ({source}); install Node.js and npm (Debian: apt-get install npm), or set {ANVIL_ENV}"
    )]
    NpmMissing { source: std::io::Error },
    #[error("installing anvil with npm failed ({status}): {stderr}")]
    NpmFailed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot create the tools folder {path}: {source}")]
    ToolsDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where anvil was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnvilLocation {
    pub path: PathBuf,
}

/// The tools folder: `explicit`, else `$NODEFLEET_TOOLS_DIR`, else `./tools`.
pub fn tools_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(TOOLS_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOOLS_DIR))
}

/// Where the npm package puts the binary inside `tools`.
pub fn anvil_in(tools: &Path) -> PathBuf {
    tools
        .join("node_modules")
        .join(ANVIL_NPM_PACKAGE)
        .join("bin")
        .join("anvil")
}

/// Finds anvil without installing it.
pub fn find_anvil(tools: &Path) -> Result<AnvilLocation, ToolError> {
    locate_anvil(std::env::var_os(ANVIL_ENV).map(PathBuf::from), tools)
}

/// Finds anvil given the value of `$NODEFLEET_ANVIL`.
fn locate_anvil(explicit: Option<PathBuf>, tools: &Path) -> Result<AnvilLocation, ToolError> {
    if let Some(path) = explicit {
        return if is_executable(&path) {
            Ok(AnvilLocation { path })
        } else {
            Err(ToolError::AnvilEnvInvalid { path })
        };
    }
    let path = anvil_in(tools);
    if is_executable(&path) {
        Ok(AnvilLocation { path })
    } else {
        Err(ToolError::AnvilMissing { path })
    }
}

/// Finds anvil, installing the pinned version into `tools` when it is missing.
pub async fn ensure_anvil(tools: &Path) -> Result<AnvilLocation, ToolError> {
    match find_anvil(tools) {
        Err(ToolError::AnvilMissing { .. }) => install_anvil(tools).await,
        found => found,
    }
}

/// Installs the pinned anvil into `tools` with npm (idempotent).
pub async fn install_anvil(tools: &Path) -> Result<AnvilLocation, ToolError> {
    std::fs::create_dir_all(tools).map_err(|source| ToolError::ToolsDir {
        path: tools.to_path_buf(),
        source,
    })?;
    tracing::info!(tools = %tools.display(), "installing anvil {ANVIL_VERSION} from npm");
    let output = tokio::process::Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(tools)
        .args(["--no-save", "--no-audit", "--no-fund", "--loglevel=error"])
        .arg(format!("{ANVIL_NPM_PACKAGE}@{ANVIL_VERSION}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| ToolError::NpmMissing { source })?;
    if !output.status.success() {
        return Err(ToolError::NpmFailed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let path = anvil_in(tools);
    if is_executable(&path) {
        Ok(AnvilLocation { path })
    } else {
        Err(ToolError::AnvilMissing { path })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_anvil_error_says_how_to_install() {
        let err = ToolError::AnvilMissing {
            path: anvil_in(Path::new("/nowhere")),
        };
        let text = err.to_string();
        assert!(text.contains("nodefleet tools install"), "{text}");
        assert!(
            text.contains("/nowhere/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_tools_folder_has_no_anvil_and_the_explicit_path_wins() {
        let dir = std::env::temp_dir().join(format!("nodefleet-tools-{}", std::process::id()));
        assert!(matches!(
            locate_anvil(None, &dir),
            Err(ToolError::AnvilMissing { .. })
        ));
        let sh = PathBuf::from("/bin/sh");
        assert_eq!(
            locate_anvil(Some(sh.clone()), &dir).unwrap(),
            AnvilLocation { path: sh }
        );
        assert!(matches!(
            locate_anvil(Some(dir.join("nothing")), &dir),
            Err(ToolError::AnvilEnvInvalid { .. })
        ));
    }
}
