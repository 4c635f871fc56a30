//! `tidewater topics init`: creates the topics the configuration implies.

use anyhow::Result;
use clap::Subcommand;
use tidewater::config::Config;
use tidewater::kafka::{self, TopicState};

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create every queue, status and destination topic that does not exist yet.
    /// Safe to re-run: existing topics are left as they are.
    Init {
        /// Only list what would be created.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `tidewater topics init [--dry-run]`.
pub async fn init(config: &Config, dry_run: bool) -> Result<()> {
    if dry_run {
        let existing = {
            let c = config.clone();
            tokio::task::spawn_blocking(move || kafka::existing_topics(&c)).await??
        };
        for spec in kafka::topic_specs(config) {
            let state = if existing.contains_key(&spec.name) {
                "exists"
            } else {
                "would create"
            };
            println!(
                "{:<14} {} ({} partitions)",
                state, spec.name, spec.partitions
            );
        }
        return Ok(());
    }
    let report = kafka::init_topics(config).await?;
    let mut created = 0;
    for (spec, state) in &report {
        match state {
            TopicState::Created => {
                created += 1;
                println!("created  {} ({} partitions)", spec.name, spec.partitions);
            }
            TopicState::Existed(n) => println!("exists   {} ({n} partitions)", spec.name),
        }
    }
    println!(
        "{created} created, {} already there",
        report.len() - created
    );
    Ok(())
}
