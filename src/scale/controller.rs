//! The controller: one leader among any number of `tidewater run --replicas` processes,
//! elected through Kafka.
//!
//! Election: every controller is a member of the consumer group `<prefix>.controllers`
//! (KIP-848 protocol) subscribed to `<prefix>.controller`, a topic with ONE partition; the
//! member assigned partition 0 leads. When the leader dies, the broker gives the
//! partition to another member once the leader's session times out.
//!
//! Fencing: the new leader reads the controller topic to its end, takes the highest term
//! recorded there plus one as its term, and writes every decision, tagged with that term,
//! through a transactional producer whose `transactional.id` is shared by all leaders.
//! Initialising that producer bumps its epoch and fences any earlier leader's producer:
//! a deposed leader that has not noticed yet cannot commit a decision, and it acts (adds
//! partitions) only after its decision record committed. Readers of the topic
//! (`read_committed`) therefore see terms that never go down.
//!
//! Every controller samples the lag and computes the desired replicas (followers keep
//! their history, so a new leader does not start from nothing); only the leader adds
//! partitions and records decisions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ScaleError;
use super::lag::{self, TopicLag};
use crate::clock::now_ms;
use crate::config::{Config, ScaleConfig};
use crate::kafka::{self, KafkaOpError};
use crate::names::{metrics as m, topics};

/// One record of the controller topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// A controller took the lead with this term.
    Leader {
        /// Fencing term.
        term: u64,
        /// The controller's id.
        leader: String,
        /// Its process id.
        pid: u32,
        /// When (ms since the epoch).
        at: i64,
    },
    /// Partitions added to a queue.
    Expand {
        /// Fencing term.
        term: u64,
        /// The controller's id.
        leader: String,
        /// Queue topic.
        topic: String,
        /// Partitions before.
        from: u32,
        /// Partitions after (the new total).
        to: u32,
        /// Mean lag per partition when decided.
        lag_per_partition: u64,
        /// The configured threshold.
        threshold: u64,
        /// How long the lag had been above the threshold, ms.
        above_for_ms: i64,
        /// When (ms since the epoch).
        at: i64,
    },
    /// A new desired replica count.
    Replicas {
        /// Fencing term.
        term: u64,
        /// The controller's id.
        leader: String,
        /// Desired replicas.
        desired: u32,
        /// Total lag over all queues.
        total_lag: u64,
        /// Total queue partitions.
        partitions: u32,
        /// When (ms since the epoch).
        at: i64,
    },
}

impl Decision {
    /// The fencing term of the record.
    pub fn term(&self) -> u64 {
        match self {
            Decision::Leader { term, .. }
            | Decision::Expand { term, .. }
            | Decision::Replicas { term, .. } => *term,
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Decision::Leader { .. } => "leader",
            Decision::Expand { .. } => "expand",
            Decision::Replicas { .. } => "replicas",
        }
    }
}

/// The replica count recommended for a total lag, before hysteresis:
/// `clamp(ceil(total_lag / lag_per_replica), min_replicas, min(max_replicas, partitions))`.
pub fn raw_desired(cfg: &ScaleConfig, total_lag: u64, partitions: u32) -> u32 {
    let want = total_lag.div_ceil(cfg.lag_per_replica.max(1));
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    // More replicas than partitions would sit idle; but never below the floor.
    let upper = cfg.max_replicas.min(partitions).max(cfg.min_replicas);
    want.clamp(cfg.min_replicas, upper)
}

/// Scale-in hysteresis: the desired count is the highest recommendation of the last
/// `scale_in_after`, so scaling out is immediate and scaling in waits until the lower
/// recommendation held for the whole period.
#[derive(Debug, Default)]
pub struct ReplicaPlanner {
    history: VecDeque<(i64, u32)>,
}

impl ReplicaPlanner {
    /// Records a recommendation at `now` (ms) and returns the desired count.
    pub fn observe(&mut self, now: i64, raw: u32, scale_in_after: Duration) -> u32 {
        let keep = i64::try_from(scale_in_after.as_millis()).unwrap_or(i64::MAX);
        self.history.push_back((now, raw));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > keep)
        {
            self.history.pop_front();
        }
        self.history.iter().map(|(_, r)| *r).max().unwrap_or(raw)
    }
}

/// Per-queue memory of the expansion rule.
#[derive(Debug, Default, Clone)]
pub struct QueueWatch {
    /// Since when (ms) the lag per partition has been above the threshold.
    pub above_since: Option<i64>,
    /// When (ms) partitions were last added (by any leader).
    pub last_expansion: Option<i64>,
}

/// An expansion the rule calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandPlan {
    /// Partitions now.
    pub from: u32,
    /// New total.
    pub to: u32,
    /// Mean lag per partition.
    pub lag_per_partition: u64,
    /// How long the lag was above the threshold, ms.
    pub above_for_ms: i64,
}

/// The expansion rule for one queue: lag per partition above `threshold` for `window`,
/// not within `cooldown` of the last expansion, below the cap: double, up to the cap.
pub fn plan_expansion(
    cfg: &ScaleConfig,
    lag: &TopicLag,
    watch: &mut QueueWatch,
    now: i64,
) -> Option<ExpandPlan> {
    let per = lag.per_partition();
    if per <= cfg.threshold {
        watch.above_since = None;
        return None;
    }
    let since = *watch.above_since.get_or_insert(now);
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let above_for_ms = now - since;
    if above_for_ms < ms(cfg.window) || !cfg.may_expand(&lag.topic) {
        return None;
    }
    if watch
        .last_expansion
        .is_some_and(|t| now - t < ms(cfg.cooldown))
    {
        return None;
    }
    let from = u32::try_from(lag.partitions.len()).unwrap_or(u32::MAX);
    let cap = cfg.max_partitions_of(&lag.topic);
    if from == 0 || from >= cap {
        return None;
    }
    Some(ExpandPlan {
        from,
        to: from.saturating_mul(2).min(cap),
        lag_per_partition: per,
        above_for_ms,
    })
}

/// What the controller thread hands back.
pub struct ControllerHandle {
    /// The desired replica count, updated at every lag sample.
    pub desired: watch::Receiver<u32>,
    thread: std::thread::JoinHandle<Result<(), ScaleError>>,
}

impl ControllerHandle {
    /// Waits for the controller thread to stop (after `shutdown`).
    pub fn join(self) -> Result<(), ScaleError> {
        self.thread
            .join()
            .map_err(|_| ScaleError::Join("controller thread panicked".into()))?
    }
}

/// Starts the controller on a thread of its own until `shutdown`. Needs a Tokio runtime
/// (for admin requests) and the controller topic.
pub fn start(
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<ControllerHandle, ScaleError> {
    let existing = kafka::existing_topics(&config)?;
    let topic = topics::controller(&config.topics.prefix);
    if !existing.contains_key(&topic) {
        return Err(KafkaOpError::MissingTopics(vec![topic]).into());
    }
    let runtime = tokio::runtime::Handle::current();
    let mut controller = Controller::new(config, runtime)?;
    let (tx, rx) = watch::channel(controller.cfg().min_replicas);
    let thread = std::thread::Builder::new()
        .name("tw-controller".into())
        .spawn(move || controller.run(&tx, &shutdown))
        .map_err(|e| ScaleError::Join(format!("cannot start the controller thread: {e}")))?;
    Ok(ControllerHandle {
        desired: rx,
        thread,
    })
}

struct Leadership {
    term: u64,
    producer: BaseProducer,
}

struct Controller {
    config: Arc<Config>,
    id: String,
    topic: String,
    runtime: tokio::runtime::Handle,
    election: BaseConsumer,
    group: lag::GroupReader,
    admin: AdminClient<DefaultClientContext>,
    /// Highest term seen on the controller topic, and whether we read it to its end.
    max_term: u64,
    caught_up: bool,
    leadership: Option<Leadership>,
    watches: BTreeMap<String, QueueWatch>,
    planner: ReplicaPlanner,
    last_recorded_desired: Option<u32>,
}

fn call(what: &str) -> impl FnOnce(KafkaError) -> ScaleError + '_ {
    move |source| ScaleError::KafkaCall {
        what: what.to_string(),
        source,
    }
}

impl Controller {
    fn new(config: Arc<Config>, runtime: tokio::runtime::Handle) -> Result<Self, ScaleError> {
        let prefix = &config.topics.prefix;
        let topic = topics::controller(prefix);
        let mut cc = kafka::client_config(&config);
        cc.set("group.id", topics::controller_group(prefix));
        cc.set("enable.auto.commit", "false");
        cc.set("auto.offset.reset", "earliest");
        cc.set("isolation.level", "read_committed");
        cc.set("enable.partition.eof", "true");
        kafka::set_default(&mut cc, "group.protocol", "consumer");
        let election: BaseConsumer = cc.create().map_err(|source| KafkaOpError::Client {
            what: "controller election consumer",
            source,
        })?;
        election
            .subscribe(&[&topic])
            .map_err(call("subscribing to the controller topic"))?;
        let admin =
            kafka::client_config(&config)
                .create()
                .map_err(|source| KafkaOpError::Client {
                    what: "admin client",
                    source,
                })?;
        let id = config
            .scheduler
            .id
            .clone()
            .unwrap_or_else(crate::clock::default_instance_id);
        Ok(Self {
            // Stable offsets: under load a busy exactly-once group always has a
            // transaction pending, and waiting for it would blind the controller.
            group: lag::GroupReader::stable(&config)?,
            config,
            id,
            topic,
            runtime,
            election,
            admin,
            max_term: 0,
            caught_up: false,
            leadership: None,
            watches: BTreeMap::new(),
            planner: ReplicaPlanner::default(),
            last_recorded_desired: None,
        })
    }

    fn cfg(&self) -> &ScaleConfig {
        &self.config.scale
    }

    fn run(
        &mut self,
        desired: &watch::Sender<u32>,
        shutdown: &CancellationToken,
    ) -> Result<(), ScaleError> {
        info!(id = %self.id, topic = %self.topic, "controller started");
        ::metrics::gauge!(m::CONTROLLER_LEADER).set(0.0);
        ::metrics::gauge!(m::CONTROLLER_TERM).set(0.0);
        let mut next_sample = Instant::now();
        while !shutdown.is_cancelled() {
            self.poll_election(Duration::from_millis(200));
            self.check_leadership();
            if Instant::now() >= next_sample {
                next_sample = Instant::now() + self.cfg().lag_interval;
                if let Err(e) = self.sample(desired) {
                    warn!(error = %e, "lag sample failed");
                }
            }
        }
        if let Some(l) = self.leadership.take() {
            info!(term = l.term, "controller stopping: giving up the lead");
        }
        ::metrics::gauge!(m::CONTROLLER_LEADER).set(0.0);
        self.election.unsubscribe();
        Ok(())
    }

    /// Reads the controller topic: terms and expansion times of every leader so far.
    fn poll_election(&mut self, timeout: Duration) {
        let mut wait = timeout;
        while let Some(r) = self.election.poll(wait) {
            wait = Duration::ZERO;
            match r {
                Ok(msg) => {
                    let Some(payload) = msg.payload() else {
                        continue;
                    };
                    match serde_json::from_slice::<Decision>(payload) {
                        Ok(d) => {
                            self.max_term = self.max_term.max(d.term());
                            if let Decision::Expand { topic, at, .. } = &d {
                                self.watches
                                    .entry(topic.clone())
                                    .or_default()
                                    .last_expansion = Some(*at);
                            }
                        }
                        Err(e) => {
                            warn!(offset = msg.offset(), error = %e, "unreadable controller record")
                        }
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => self.caught_up = true,
                Err(e) => warn!(error = %e, "controller consumer error"),
            }
        }
    }

    fn owns_partition(&self) -> bool {
        self.election.assignment().is_ok_and(|a| {
            a.elements()
                .iter()
                .any(|e| e.topic() == self.topic && e.partition() == 0)
        })
    }

    fn check_leadership(&mut self) {
        let owns = self.owns_partition();
        if !owns {
            self.caught_up = false;
            if let Some(l) = self.leadership.take() {
                warn!(term = l.term, "controller lost the lead");
                ::metrics::gauge!(m::CONTROLLER_LEADER).set(0.0);
                ::metrics::gauge!(m::CONTROLLER_TERM).set(0.0);
            }
            return;
        }
        if self.leadership.is_some() || !self.caught_up {
            return;
        }
        match self.take_lead() {
            Ok(term) => {
                info!(term, id = %self.id, "controller took the lead");
                ::metrics::gauge!(m::CONTROLLER_LEADER).set(1.0);
                ::metrics::gauge!(m::CONTROLLER_TERM).set(term as f64);
            }
            Err(e) => warn!(error = %e, "cannot take the lead; retrying"),
        }
    }

    fn take_lead(&mut self) -> Result<u64, ScaleError> {
        let mut cc = kafka::client_config(&self.config);
        cc.set(
            "transactional.id",
            topics::controller_transactional_id(&self.config.topics.prefix),
        );
        kafka::set_default(&mut cc, "transaction.timeout.ms", "10000");
        let producer: BaseProducer = cc.create().map_err(|source| KafkaOpError::Client {
            what: "controller producer",
            source,
        })?;
        // Fences the producer of any earlier leader.
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(call("initialising the controller's transactions"))?;
        // Anything an earlier leader committed before it was fenced is readable now.
        self.poll_election(Duration::from_millis(500));
        let term = self.max_term + 1;
        self.leadership = Some(Leadership { term, producer });
        self.last_recorded_desired = None;
        let record = Decision::Leader {
            term,
            leader: self.id.clone(),
            pid: std::process::id(),
            at: now_ms(),
        };
        if let Err(e) = self.record(&record) {
            self.leadership = None;
            return Err(e);
        }
        self.max_term = term;
        Ok(term)
    }

    /// Writes a decision in a transaction of its own; an error means it must not be
    /// acted on (and, when fenced, that the lead is lost).
    fn record(&mut self, decision: &Decision) -> Result<(), ScaleError> {
        let body = serde_json::to_vec(decision).map_err(|e| ScaleError::Encode(e.to_string()))?;
        let result = {
            let Some(l) = &self.leadership else {
                return Err(ScaleError::NotLeader);
            };
            let attempt = || -> Result<(), KafkaError> {
                l.producer.begin_transaction()?;
                l.producer
                    .send(
                        BaseRecord::to(&self.topic)
                            .key(decision.key())
                            .payload(&body),
                    )
                    .map_err(|(e, _)| e)?;
                l.producer.commit_transaction(Duration::from_secs(30))
            };
            let r = attempt();
            if r.is_err() {
                let _ = l.producer.abort_transaction(Duration::from_secs(10));
            }
            r
        };
        result.map_err(|e| {
            warn!(error = %e, "decision not recorded; giving up the lead");
            self.leadership = None;
            ::metrics::gauge!(m::CONTROLLER_LEADER).set(0.0);
            ::metrics::gauge!(m::CONTROLLER_TERM).set(0.0);
            call("recording a decision")(e)
        })
    }

    fn sample(&mut self, desired: &watch::Sender<u32>) -> Result<(), ScaleError> {
        let queues = self.config.queue_topics();
        let marks = self
            .group
            .read(&queues, kafka::ADMIN_TIMEOUT)
            .map_err(ScaleError::Lag)?;
        let lags = lag::by_topic(&queues, &marks);
        lag::export(&lags);
        let now = now_ms();
        let total_lag: u64 = lags.iter().map(TopicLag::total).sum();
        let partitions: u32 = lags
            .iter()
            .map(|t| u32::try_from(t.partitions.len()).unwrap_or(u32::MAX))
            .sum();
        let raw = raw_desired(self.cfg(), total_lag, partitions);
        let scale_in_after = self.cfg().scale_in_after;
        let want = self.planner.observe(now, raw, scale_in_after);
        ::metrics::gauge!(m::DESIRED_REPLICAS).set(f64::from(want));
        if *desired.borrow() != want {
            info!(
                desired = want,
                recommended = raw,
                total_lag,
                partitions,
                "desired replicas changed"
            );
        }
        desired.send_replace(want);

        let mut plans = Vec::new();
        let config = self.config.clone();
        for t in &lags {
            let w = self.watches.entry(t.topic.clone()).or_default();
            if let Some(plan) = plan_expansion(&config.scale, t, w, now) {
                plans.push((t.topic.clone(), plan));
            }
        }
        let Some(term) = self.leadership.as_ref().map(|l| l.term) else {
            return Ok(());
        };
        if !self.owns_partition() {
            return Ok(());
        }
        if self.last_recorded_desired != Some(want) {
            self.record(&Decision::Replicas {
                term,
                leader: self.id.clone(),
                desired: want,
                total_lag,
                partitions,
                at: now,
            })?;
            self.last_recorded_desired = Some(want);
        }
        for (topic, plan) in plans {
            self.expand(term, &topic, &plan, now)?;
        }
        Ok(())
    }

    fn expand(
        &mut self,
        term: u64,
        topic: &str,
        plan: &ExpandPlan,
        now: i64,
    ) -> Result<(), ScaleError> {
        info!(
            topic,
            from = plan.from,
            to = plan.to,
            lag_per_partition = plan.lag_per_partition,
            threshold = self.cfg().threshold,
            above_for_ms = plan.above_for_ms,
            term,
            "adding partitions to a backed-up queue"
        );
        self.record(&Decision::Expand {
            term,
            leader: self.id.clone(),
            topic: topic.to_string(),
            from: plan.from,
            to: plan.to,
            lag_per_partition: plan.lag_per_partition,
            threshold: self.cfg().threshold,
            above_for_ms: plan.above_for_ms,
            at: now,
        })?;
        let w = self.watches.entry(topic.to_string()).or_default();
        w.last_expansion = Some(now);
        w.above_since = None;
        let total = usize::try_from(plan.to).unwrap_or(usize::MAX);
        let parts = [NewPartitions::new(topic, total)];
        let opts = AdminOptions::new().operation_timeout(Some(kafka::ADMIN_TIMEOUT));
        let result = self
            .runtime
            .block_on(self.admin.create_partitions(&parts, &opts));
        let outcome = match result {
            Ok(rs) => rs
                .into_iter()
                .find_map(|r| r.err())
                .map_or(Ok(()), |(_, code)| Err(code.to_string())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                ::metrics::counter!(m::PARTITION_EXPANSIONS, m::L_TOPIC => topic.to_string(), m::L_RESULT => "ok").increment(1);
                info!(topic, partitions = plan.to, "partitions added");
            }
            Err(e) => {
                ::metrics::counter!(m::PARTITION_EXPANSIONS, m::L_TOPIC => topic.to_string(), m::L_RESULT => "error").increment(1);
                warn!(topic, error = %e, "adding partitions failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScaleConfig {
        ScaleConfig {
            threshold: 100,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(60),
            lag_per_replica: 100,
            min_replicas: 1,
            max_replicas: 4,
            ..ScaleConfig::default()
        }
    }

    fn lag(parts: &[u64]) -> TopicLag {
        TopicLag {
            topic: "tw.q.a".into(),
            partitions: parts
                .iter()
                .enumerate()
                .map(|(i, l)| (i as i32, *l))
                .collect(),
        }
    }

    #[test]
    fn desired_replicas_follow_lag_within_bounds() {
        let c = cfg();
        assert_eq!(raw_desired(&c, 0, 12), 1);
        assert_eq!(raw_desired(&c, 101, 12), 2);
        assert_eq!(raw_desired(&c, 10_000, 12), 4);
        // No more replicas than partitions.
        assert_eq!(raw_desired(&c, 10_000, 2), 2);
        // The floor wins over a small partition count.
        let c = ScaleConfig {
            min_replicas: 3,
            ..c
        };
        assert_eq!(raw_desired(&c, 0, 1), 3);
    }

    #[test]
    fn scale_in_waits_scale_out_does_not() {
        let mut p = ReplicaPlanner::default();
        let after = Duration::from_secs(30);
        assert_eq!(p.observe(0, 1, after), 1);
        assert_eq!(p.observe(1_000, 4, after), 4);
        assert_eq!(p.observe(2_000, 1, after), 4);
        assert_eq!(p.observe(30_000, 1, after), 4);
        assert_eq!(p.observe(31_500, 1, after), 1);
    }

    #[test]
    fn expansion_needs_the_window_the_cooldown_and_room() {
        let c = cfg();
        let mut w = QueueWatch::default();
        assert_eq!(plan_expansion(&c, &lag(&[500]), &mut w, 0), None);
        assert_eq!(plan_expansion(&c, &lag(&[500]), &mut w, 5_000), None);
        let p = plan_expansion(&c, &lag(&[500]), &mut w, 10_000).unwrap();
        assert_eq!((p.from, p.to, p.above_for_ms), (1, 2, 10_000));
        w.last_expansion = Some(10_000);
        assert_eq!(plan_expansion(&c, &lag(&[500, 500]), &mut w, 30_000), None);
        assert_eq!(
            plan_expansion(&c, &lag(&[500, 500]), &mut w, 70_000).map(|p| p.to),
            Some(4)
        );
        // Dropping below the threshold restarts the window.
        assert_eq!(plan_expansion(&c, &lag(&[50, 50]), &mut w, 80_000), None);
        assert_eq!(w.above_since, None);
        // Capped.
        let c2 = ScaleConfig {
            max_partitions: std::num::NonZeroU32::new(3).unwrap(),
            ..c.clone()
        };
        let mut w = QueueWatch::default();
        let _ = plan_expansion(&c2, &lag(&[500, 500]), &mut w, 0);
        assert_eq!(
            plan_expansion(&c2, &lag(&[500, 500]), &mut w, 20_000).map(|p| p.to),
            Some(3)
        );
        assert_eq!(
            plan_expansion(&c2, &lag(&[500, 500, 500]), &mut w, 40_000),
            None
        );
    }

    #[test]
    fn ordered_queues_are_left_alone_unless_allowed() {
        let mut c = cfg();
        c.queues.insert(
            "tw.q.a".into(),
            crate::config::QueueScale {
                max_partitions: None,
                ordered: true,
            },
        );
        let mut w = QueueWatch::default();
        let _ = plan_expansion(&c, &lag(&[500]), &mut w, 0);
        assert_eq!(plan_expansion(&c, &lag(&[500]), &mut w, 20_000), None);
        c.expand_ordered = true;
        assert!(plan_expansion(&c, &lag(&[500]), &mut w, 20_000).is_some());
    }

    #[test]
    fn decisions_round_trip_with_their_kind() {
        let d = Decision::Replicas {
            term: 3,
            leader: "h-1".into(),
            desired: 2,
            total_lag: 10,
            partitions: 4,
            at: 5,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains("\"kind\":\"replicas\""), "{text}");
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), d);
        assert_eq!(d.term(), 3);
    }
}
