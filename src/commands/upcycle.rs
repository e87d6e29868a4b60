//! `latentevo upcycle` (owned by the upcycle work; filled in there).

/// Arguments of `latentevo upcycle`.
#[derive(Debug, clap::Args)]
pub struct UpcycleArgs {}

/// Runs `latentevo upcycle`.
pub fn run(_args: UpcycleArgs) -> anyhow::Result<()> {
    anyhow::bail!("`latentevo upcycle` is not available in this build yet")
}
