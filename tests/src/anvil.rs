//! The pinned anvil for tests: the project's tools folder, or `$NODEFLEET_ANVIL`.
//!
//! The test command (README) installs it before the tests run; a test that needs anvil fails
//! with the install hint when it is missing, never skips.

use std::path::PathBuf;

use nodefleet_local::tools;

/// The project's tools folder (`<root>/tools`, or `$NODEFLEET_TOOLS_DIR`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os(tools::TOOLS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(tools::DEFAULT_TOOLS_DIR))
}

/// The anvil binary; panics with the install hint when it is missing.
pub fn binary() -> PathBuf {
    match tools::find_anvil(&tools_dir()) {
        Ok(location) => location.path,
        Err(e) => panic!("{e}\n(the README's test command installs it: scripts/test.sh)"),
    }
}
