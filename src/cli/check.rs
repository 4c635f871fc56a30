//! `tidewater config check`: validates a configuration without connecting to Kafka.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Subcommand;
use tidewater::config::{Config, ExecutorConfig};
use tidewater::executor::Handlers;
use tidewater::kafka;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE: exit 0 when it is usable, else print the field at fault and exit 1.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Loads `file`, checks that every in-process handler it names is built into this
/// binary, and prints a summary.
pub fn check(file: &Path) -> Result<()> {
    let config = Config::load(file)?;
    // The binary knows only the built-in handlers: a name it lacks would stop
    // `tidewater run` at start, so say so now.
    let handlers = Handlers::builtin();
    for (tname, tenant) in &config.tenants {
        for (fname, f) in &tenant.functions {
            if let ExecutorConfig::Inprocess { handler } = &f.executor {
                if handlers.get(handler).is_none() {
                    bail!(
                        "invalid `tenants.{tname}.functions.{fname}.executor.handler`: no in-process handler `{handler}` in this binary (built in: noop, echo, fail)"
                    );
                }
            }
        }
    }
    let functions: usize = config.tenants.values().map(|t| t.functions.len()).sum();
    println!(
        "{}: ok ({} tenants, {} functions, {} topics)",
        file.display(),
        config.tenants.len(),
        functions,
        kafka::topic_specs(&config).len()
    );
    Ok(())
}
