//! `nodefleet tools install`: puts the pinned anvil into the tools folder.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodefleet_local::tools;

#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    action: ToolsAction,
}

#[derive(Debug, Subcommand)]
enum ToolsAction {
    /// Install anvil (npm package @foundry-rs/anvil-linux-amd64, pinned) unless present.
    Install {
        /// Tools folder [default: $NODEFLEET_TOOLS_DIR or ./tools]
        #[arg(long)]
        tools: Option<PathBuf>,
    },
}

pub async fn run(args: ToolsArgs) -> anyhow::Result<()> {
    match args.action {
        ToolsAction::Install { tools: dir } => {
            let dir = tools::tools_dir(dir.as_deref());
            let anvil = tools::ensure_anvil(&dir).await?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                println!("anvil {}: {}", tools::ANVIL_VERSION, anvil.path.display());
            }
            Ok(())
        }
    }
}
