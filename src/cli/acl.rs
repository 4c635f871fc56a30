//! `tidewater acl`: prints the least-privilege ACLs of a role for a principal.

use anyhow::Result;
use clap::{Args, ValueEnum};
use tidewater::acl::{self, Role};
use tidewater::config::Config;

/// A role on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// `tidewater run`.
    Scheduler,
    /// `tidewater serve`.
    Serve,
    /// The controller of `tidewater run --replicas` (give it the scheduler's too).
    Controller,
    /// A producer that only submits tasks.
    Submitter,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Scheduler => Role::Scheduler,
            RoleArg::Serve => Role::Serve,
            RoleArg::Controller => Role::Controller,
            RoleArg::Submitter => Role::Submitter,
        }
    }
}

/// How the ACLs are printed.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum AclFormat {
    /// `PRINCIPAL OPERATION RESOURCE PATTERN NAME`, one per line (the input of
    /// `scripts/kafka.sh acl add`).
    #[default]
    Lines,
    /// `kafka-acls.sh` commands (Apache Kafka's command-line tools).
    KafkaAcls,
}

#[derive(Debug, Clone, Args)]
pub struct AclArgs {
    /// The role whose ACLs to print; repeat for several.
    #[arg(long = "role", value_enum, required = true)]
    pub roles: Vec<RoleArg>,
    /// The Kafka principal, e.g. `User:tidewater` (a SASL user or a certificate's
    /// mapped name).
    #[arg(long)]
    pub principal: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = AclFormat::Lines)]
    pub format: AclFormat,
}

/// Prints the ACLs of the roles in `args` for `args.principal`, without duplicates.
pub fn print(config: &Config, args: &AclArgs) -> Result<()> {
    if !args.principal.contains(':') {
        anyhow::bail!(
            "--principal `{}` is not `Type:name` (e.g. User:tidewater)",
            args.principal
        );
    }
    let mut all = std::collections::BTreeSet::new();
    for r in &args.roles {
        all.extend(acl::acls(config, Role::from(*r)));
    }
    let p = &args.principal;
    for a in &all {
        match args.format {
            AclFormat::Lines => println!("{}", a.line(p)),
            AclFormat::KafkaAcls => println!(
                "kafka-acls.sh --bootstrap-server {} --command-config admin.properties --add {}",
                config.kafka.bootstrap_servers,
                a.kafka_acls_args(p)
            ),
        }
    }
    Ok(())
}
