//! The least-privilege ACLs of each role, computed from the configuration.
//!
//! `tidewater acl` prints them, one per line, for Kafka's admin API (the secured test
//! broker's `scripts/kafka.sh acl add` reads exactly these lines) or as `kafka-acls.sh`
//! commands. `docs/security.md` explains each. Topics, groups and transactional ids
//! are named literally wherever the configuration knows them; prefixes are used only for
//! names made at run time (transactional ids, indexer groups).

use std::collections::BTreeSet;
use std::fmt;

use crate::config::{Config, Delivery, Destination};
use crate::names::topics;

/// A process role that talks to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `tidewater run`: consumes queues, publishes outcomes in transactions.
    Scheduler,
    /// `tidewater serve`: the indexer and the task query API (submit, stop).
    Serve,
    /// The controller of `tidewater run --replicas` (in addition to [`Role::Scheduler`]).
    Controller,
    /// A producer that only submits tasks (`tidewater submit`, the library's submitter).
    Submitter,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 4] = [
        Role::Scheduler,
        Role::Serve,
        Role::Controller,
        Role::Submitter,
    ];

    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Serve => "serve",
            Role::Controller => "controller",
            Role::Submitter => "submitter",
        }
    }
}

/// Kafka's resource types that Tidewater needs rights on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
}

/// How a resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this name.
    Literal,
    /// Every name that starts with this.
    Prefixed,
}

/// An operation allowed on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Consume (topics), join or commit (groups).
    Read,
    /// Produce (topics), use in a transaction (transactional ids).
    Write,
    /// See metadata and committed offsets.
    Describe,
    /// Add partitions.
    Alter,
}

/// One allow rule for the principal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    /// Kind of resource.
    pub resource: Resource,
    /// How `name` matches.
    pub pattern: Pattern,
    /// The resource's name (or prefix).
    pub name: String,
    /// What is allowed.
    pub operation: Operation,
}

impl Resource {
    fn kafka(self) -> &'static str {
        match self {
            Resource::Topic => "TOPIC",
            Resource::Group => "GROUP",
            Resource::TransactionalId => "TRANSACTIONAL_ID",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Resource::Topic => "--topic",
            Resource::Group => "--group",
            Resource::TransactionalId => "--transactional-id",
        }
    }
}

impl Pattern {
    fn kafka(self) -> &'static str {
        match self {
            Pattern::Literal => "LITERAL",
            Pattern::Prefixed => "PREFIXED",
        }
    }
}

impl Operation {
    fn kafka(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Describe => "DESCRIBE",
            Operation::Alter => "ALTER",
        }
    }
}

impl Acl {
    /// `PRINCIPAL OPERATION RESOURCE PATTERN NAME`, the line format of
    /// `scripts/kafka/SecureAdmin.java`.
    pub fn line(&self, principal: &str) -> String {
        format!(
            "{principal} {} {} {} {}",
            self.operation.kafka(),
            self.resource.kafka(),
            self.pattern.kafka(),
            self.name
        )
    }

    /// The arguments of `kafka-acls.sh --add` for this rule.
    pub fn kafka_acls_args(&self, principal: &str) -> String {
        format!(
            "--allow-principal {principal} --operation {} {} {} --resource-pattern-type {}",
            self.operation.kafka(),
            self.resource.flag(),
            self.name,
            self.pattern.kafka().to_ascii_lowercase()
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Set(BTreeSet<Acl>);

impl Set {
    fn add(&mut self, resource: Resource, pattern: Pattern, name: &str, ops: &[Operation]) {
        for op in ops {
            self.0.insert(Acl {
                resource,
                pattern,
                name: name.to_string(),
                operation: *op,
            });
        }
    }

    fn topics<'a>(&mut self, names: impl IntoIterator<Item = &'a String>, ops: &[Operation]) {
        for n in names {
            self.add(Resource::Topic, Pattern::Literal, n, ops);
        }
    }
}

/// The topics outcomes are written to: dead letters, `on_success`/`on_failure` topics,
/// and the queues of `function:` destinations.
fn outcome_topics(config: &Config) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = config.destination_topics().into_iter().collect();
    for (tname, tenant) in &config.tenants {
        for f in tenant.functions.values() {
            for dest in [&f.on_success, &f.on_failure].into_iter().flatten() {
                if let Destination::Function(name) = Destination::parse(dest) {
                    out.insert(config.queue_topic(tname, name));
                }
            }
        }
    }
    out
}

/// The ACLs a role needs, for this configuration.
pub fn acls(config: &Config, role: Role) -> Vec<Acl> {
    use Operation::{Alter, Describe, Read, Write};
    let prefix = &config.topics.prefix;
    let queues = config.queue_topics();
    let delays: Vec<String> = config.delay_tiers().into_iter().map(|(_, t)| t).collect();
    let group = config.group_id();
    let mut set = Set(BTreeSet::new());
    match role {
        Role::Scheduler => {
            set.topics(&queues, &[Read]);
            set.topics(&delays, &[Read, Write]);
            set.topics(&[topics::status(prefix), topics::logs(prefix)], &[Write]);
            set.topics(&[topics::control(prefix)], &[Read]);
            set.topics(&outcome_topics(config), &[Write]);
            set.add(Resource::Group, Pattern::Literal, &group, &[Read]);
            set.add(
                Resource::Group,
                Pattern::Literal,
                &topics::control_readers_group(prefix),
                &[Read],
            );
            if config.scheduler.delivery == Delivery::ExactlyOnce {
                // Each publisher producer's id is `<group>.<scheduler id>.<ulid>`.
                set.add(
                    Resource::TransactionalId,
                    Pattern::Prefixed,
                    &format!("{group}."),
                    &[Write],
                );
            }
        }
        Role::Serve => {
            set.topics(&queues, &[Read, Write]);
            set.topics(&[topics::status(prefix), topics::logs(prefix)], &[Read]);
            set.topics(&[topics::control(prefix)], &[Write]);
            set.add(
                Resource::Group,
                Pattern::Prefixed,
                &topics::indexer_group_prefix(prefix),
                &[Read],
            );
            // Redrives from a dead-letter topic read its records.
            set.topics(config.dead_letter_topics().keys(), &[Read]);
            // Task records read back by position (payload previews, redrives), and
            // dead-letter ranges; this group id never joins or commits.
            set.add(
                Resource::Group,
                Pattern::Literal,
                &topics::record_readers_group(prefix),
                &[Read],
            );
            // Backlog: the scheduler group's committed offsets.
            set.add(Resource::Group, Pattern::Literal, &group, &[Describe]);
        }
        Role::Controller => {
            set.topics(&[topics::controller(prefix)], &[Read, Write]);
            set.topics(&queues, &[Describe, Alter]);
            set.add(
                Resource::Group,
                Pattern::Literal,
                &topics::controller_group(prefix),
                &[Read],
            );
            set.add(Resource::Group, Pattern::Literal, &group, &[Describe]);
            set.add(
                Resource::TransactionalId,
                Pattern::Literal,
                &topics::controller_transactional_id(prefix),
                &[Write],
            );
        }
        Role::Submitter => {
            set.topics(&queues, &[Write]);
        }
    }
    set.0.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            r#"
            [scheduler]
            delivery = "exactly_once"
            [tenants.acme.functions.resize]
            executor = {{ type = "inprocess", handler = "echo" }}
            on_success = "acme.resized"
            on_failure = "function:undo"
            [tenants.acme.functions.undo]
            executor = {{ type = "inprocess", handler = "echo" }}
            queue = "exclusive"
            {extra}
            "#
        ))
        .unwrap()
    }

    fn lines(c: &Config, role: Role) -> Vec<String> {
        acls(c, role).iter().map(|a| a.line("User:u")).collect()
    }

    #[test]
    fn the_scheduler_may_write_exactly_its_outcome_topics() {
        let l = lines(&config(""), Role::Scheduler);
        for want in [
            "User:u READ TOPIC LITERAL tw.q.acme",
            "User:u WRITE TOPIC LITERAL tw.dlq.acme",
            "User:u WRITE TOPIC LITERAL acme.resized",
            "User:u WRITE TOPIC LITERAL tw.q.acme.undo",
            "User:u WRITE TOPIC LITERAL tw.status",
            "User:u READ GROUP LITERAL tw.schedulers",
            "User:u WRITE TRANSACTIONAL_ID PREFIXED tw.schedulers.",
        ] {
            assert!(l.iter().any(|x| x == want), "missing {want} in {l:#?}");
        }
        assert!(
            !l.iter()
                .any(|x| x.contains("WRITE TOPIC LITERAL tw.q.acme "))
        );
        assert!(!l.iter().any(|x| x.contains("controller")));
    }

    #[test]
    fn serve_reads_dead_letter_topics_but_not_success_topics() {
        let l = lines(&config(""), Role::Serve);
        for want in [
            "User:u READ TOPIC LITERAL tw.dlq.acme",
            "User:u READ GROUP LITERAL tw.record-readers",
        ] {
            assert!(l.iter().any(|x| x == want), "missing {want} in {l:#?}");
        }
        assert!(!l.iter().any(|x| x.contains("acme.resized")), "{l:#?}");
        assert!(!l.iter().any(|x| x.contains("WRITE TOPIC LITERAL tw.dlq")));
    }

    #[test]
    fn at_least_once_needs_no_transactional_id() {
        let c = config("").clone();
        let mut c2 = c.clone();
        c2.scheduler.delivery = Delivery::AtLeastOnce;
        assert!(
            !lines(&c2, Role::Scheduler)
                .iter()
                .any(|l| l.contains("TRANSACTIONAL_ID"))
        );
    }

    #[test]
    fn a_submitter_only_writes_queues() {
        let l = lines(&config(""), Role::Submitter);
        assert!(
            l.iter()
                .all(|x| x.starts_with("User:u WRITE TOPIC LITERAL tw.q."))
        );
        let a = &acls(&config(""), Role::Controller)[0];
        assert!(
            a.kafka_acls_args("User:u")
                .starts_with("--allow-principal User:u")
        );
    }
}
