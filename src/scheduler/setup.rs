//! Building a scheduler: its functions (executors, limits, destinations parsed once),
//! its Kafka clients and its worker threads.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::consumer::{self, FromConsumer, GroupContext, Shared};
use super::control;
use super::dispatch::{Dispatcher, FnLimits};
use super::engine::{Engine, Inputs, Published, Workers};
use super::heal::{Committed, GroupOffsets, Healer};
use super::held;
use super::publisher::{
    DeliveryCounter, HeldBack, LANES, Lane, Marks, ProducerFactory, Publisher, Sweeper, Unit,
};
use super::records::Target;
use super::spill::{self, Overflow, Seen, Spill};
use super::txn_calls::init_transactions;
use super::worker::Worker;
use super::{Ctx, FunctionRt, Functions, Job, SchedulerError};
use crate::clock::default_instance_id;
use crate::config::{Config, Delivery};
use crate::executor::{Executor, ExecutorBuildError, Handlers};
use crate::health::Health;
use crate::kafka::{self, KafkaOpError};
use crate::kafka_stats::{self, Client as StatsClient, KafkaStats};
use crate::names::{metrics as m, topics};
use crate::scale::lag;
use crate::types::{TopicPartition, TpMap};

/// Longest wait at start for the transactional producer to be initialised.
const INIT_WAIT: Duration = Duration::from_secs(30);

/// Builds every configured function's executor and registers its limits.
pub(super) fn build_functions(
    config: &Config,
    handlers: &Handlers,
    dispatcher: &mut Dispatcher<Box<Job>>,
) -> Result<Functions, SchedulerError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| SchedulerError::Executor {
            tenant: String::new(),
            function: String::new(),
            source: ExecutorBuildError::Http(e.to_string()),
        })?;
    let mut out: TpMap<String, TpMap<String, Arc<FunctionRt>>> = TpMap::default();
    for (tname, tenant) in &config.tenants {
        for (fname, f) in &tenant.functions {
            let executor = Executor::build(&f.executor, &client, handlers).map_err(|source| {
                SchedulerError::Executor {
                    tenant: tname.clone(),
                    function: fname.clone(),
                    source,
                }
            })?;
            let burst = f.burst.map(|b| b.get()).unwrap_or_else(|| {
                f.rate
                    .map_or(1, |r| u32::try_from(r.ceil() as u64).unwrap_or(u32::MAX))
            });
            let id = dispatcher.add_function(FnLimits {
                concurrency: f.concurrency.get(),
                rate: f.rate,
                burst,
                weight: f.weight,
            });
            let rt = FunctionRt {
                id,
                name: fname.clone(),
                tenant: tname.clone(),
                executor,
                on_success: f.on_success.as_deref().map(Target::parse),
                on_failure: Target::parse(&config.failure_destination(tname, fname)),
                max_payload: config.max_payload(f),
                shared_queue: (f.queue == crate::config::QueueMode::Shared)
                    .then(|| config.queue_topic(tname, fname)),
                labels: (tname.clone(), fname.clone()),
                metrics: super::fn_metrics::FnMetrics::register(tname, fname),
                cfg: f.clone(),
            };
            out.entry(tname.clone())
                .or_default()
                .insert(fname.clone(), Arc::new(rt));
        }
    }
    Ok(Functions(out))
}

/// Everything a run needs, started: clients connected, threads running.
pub(super) async fn start(
    config: Arc<Config>,
    handlers: &Handlers,
    shutdown: &CancellationToken,
) -> Result<(Engine, Inputs, Workers), SchedulerError> {
    let sc = &config.scheduler;
    let mut dispatcher: Dispatcher<Box<Job>> = Dispatcher::new(sc.max_running.get());
    let functions = build_functions(&config, handlers, &mut dispatcher)?;
    blocking({
        let (c, s) = (config.clone(), shutdown.clone());
        move || wait_for_cluster(&c, &s)
    })
    .await?;
    let scheduler_id = sc.id.clone().unwrap_or_else(default_instance_id);
    let exactly_once = sc.delivery == Delivery::ExactlyOnce;
    let make = {
        // One transactional id per lane of the process, kept by every producer rebuilt
        // after a failure (see `publisher_producer`).
        let txn_id = format!("{}.{scheduler_id}.{}", config.group_id(), ulid::Ulid::new());
        let c = config.clone();
        move |lane: usize| publisher_producer(&c, (&format!("{txn_id}.{lane}"), lane), exactly_once)
    };
    let (lanes, make) = blocking(move || {
        let count = if exactly_once { LANES } else { 1 };
        // The lanes' producers are initialised side by side: each waits for its
        // transaction coordinator, a while on a broker that is starting.
        let lanes = std::thread::scope(|scope| {
            let started: Vec<_> = (0..count)
                .map(|lane| {
                    let make = &make;
                    scope.spawn(move || lane_producer(make, lane, exactly_once))
                })
                .collect();
            started
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(internal("a producer's start panicked")))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok((lanes, make))
    })
    .await?;
    let mut lanes = lanes.into_iter();
    let (Some(lane), spare) = (lanes.next(), lanes.next()) else {
        return Err(internal("no publisher producer"));
    };
    let factory: ProducerFactory = Box::new(move |lane| {
        make(lane).map_err(|e| match e {
            SchedulerError::Kafka(KafkaOpError::Client { source, .. }) => source,
            _ => KafkaError::Canceled,
        })
    });
    let shared = Arc::new(Shared::new(sc.rebalance_grace, exactly_once));
    let (records_tx, records) = mpsc::channel::<FromConsumer>(256);
    let consumer = Arc::new(group_consumer(&config, &shared, records_tx.clone())?);
    let mut queues = config.queue_topics();
    queues.extend(config.delay_tiers().into_iter().map(|(_, t)| t));
    let topic_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| SchedulerError::Subscribe {
            topics: queues.clone(),
            source,
        })?;
    let consumer_worker = Worker::spawn("tw-consumer", {
        let (c, s) = (consumer.clone(), shared.clone());
        move |signal| consumer::poll_loop(c, s, records_tx, signal)
    })
    .map_err(internal)?;
    info!(scheduler_id = %scheduler_id, group = %config.group_id(), topics = ?queues,
        delivery = ?sc.delivery, "scheduler started");

    let (outbox, outbox_rx) = std::sync::mpsc::channel::<Unit<Published>>();
    let (back_tx, published) = mpsc::unbounded_channel();
    let publisher = Publisher {
        lane,
        spare,
        factory,
        exactly_once,
        rx: outbox_rx,
        back: back_tx,
        shared: shared.clone(),
        consumer: consumer.clone(),
        linger: sc.publish_linger,
        healer: Healer::new(group_offsets_reader(config.clone())),
        sweeper: Sweeper::new(marks_reader(config.clone())),
        held: HeldBack::default(),
    };
    let publisher_worker =
        Worker::spawn("tw-publisher", move |signal| publisher.run(signal)).map_err(internal)?;
    let (stop_tx, stops) = mpsc::unbounded_channel();
    let control_worker = Worker::spawn("tw-control", {
        let c = config.clone();
        move |signal| control::read_loop(c, stop_tx, signal)
    })
    .map_err(internal)?;
    let ctx = Arc::new(Ctx {
        status_topic: topics::status(&config.topics.prefix).into(),
        group_id: config.group_id(),
        delay_tiers: config.delay_tiers(),
        config: config.clone(),
        scheduler_id,
        outbox,
        functions,
        hard_stop: CancellationToken::new(),
    });
    let (spill, spill_worker) = spill_setup(&config, &ctx.functions, exactly_once).await?;
    let engine = Engine::new(ctx, shared, consumer, dispatcher, spill);
    let inputs = Inputs {
        records,
        published,
        stops,
    };
    let after = sc.held_partition_after;
    let held_worker = (!after.is_zero())
        .then(|| {
            let c = config.clone();
            Worker::spawn("tw-held", move |signal| held::watch(c, after, signal))
        })
        .transpose()
        .map_err(internal)?;
    let workers = Workers {
        consumer: consumer_worker,
        publisher: publisher_worker,
        control: control_worker,
        spill: spill_worker,
        held: held_worker,
    };
    Ok((engine, inputs, workers))
}

/// Each function's overflow queue (they exist: the start checked every topic), and the
/// thread that watches them while a function spills.
async fn spill_setup(
    config: &Arc<Config>,
    functions: &Functions,
    exactly_once: bool,
) -> Result<((Spill, Seen, Arc<AtomicBool>), Option<Worker>), SchedulerError> {
    let existing = blocking({
        let c = config.clone();
        move || kafka::existing_topics(&c).map_err(SchedulerError::from)
    })
    .await?;
    let mut overflows: Vec<Option<Overflow>> = vec![None; functions.iter().count()];
    for f in functions.iter() {
        let Some(topic) = config.overflow_topic(&f.tenant, &f.name) else {
            continue;
        };
        let partitions = existing.get(&topic).copied().unwrap_or(1);
        // Every function that can spill has its series from the start (0 until it does).
        let (t, fname) = f.labels.clone();
        metrics::gauge!(m::FUNCTION_SPILLING, m::L_TENANT => t.clone(), m::L_FUNCTION => fname.clone())
            .set(0.0);
        metrics::counter!(m::TASKS_SPILLED, m::L_TENANT => t, m::L_FUNCTION => fname).increment(0);
        if let Some(slot) = overflows.get_mut(f.id) {
            *slot = Some(Overflow {
                topic,
                partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            });
        }
    }
    let spill = Spill::new(config.scheduler.spill_threshold(), overflows);
    let seen: Seen = Arc::default();
    let active = Arc::new(AtomicBool::new(false));
    let topics = spill.topics();
    let worker = if topics.is_empty() {
        None
    } else {
        let (c, a, s) = (config.clone(), active.clone(), seen.clone());
        Some(
            Worker::spawn("tw-spill", move |signal| {
                spill::watch(c, topics, exactly_once, a, s, signal)
            })
            .map_err(internal)?,
        )
    };
    Ok(((spill, seen, active), worker))
}

/// How long one probe of the cluster waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a process waiting for the cluster says so.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Waits until the cluster answers and has the topics the configuration needs. A broker
/// that cannot be reached is waited for (logged every few seconds, not ready meanwhile);
/// missing topics and refused credentials end the start at once.
fn wait_for_cluster(config: &Config, shutdown: &CancellationToken) -> Result<(), SchedulerError> {
    let mut logged: Option<Instant> = None;
    let started = Instant::now();
    loop {
        // A short probe first, so waiting is reported within seconds.
        let answer = kafka::existing_topics_within(config, PROBE_TIMEOUT)
            .and_then(|_| kafka::check_topics(config));
        match answer {
            Ok(()) => {
                if logged.is_some() {
                    info!(after = ?started.elapsed(), "Kafka answers; starting");
                }
                Health::global().ready("consumer");
                return Ok(());
            }
            Err(e @ KafkaOpError::Unreachable { .. }) if !kafka::is_auth_error(&e) => {
                if shutdown.is_cancelled() {
                    return Err(e.into());
                }
                Health::global().not_ready("consumer", e.to_string());
                if logged.is_none_or(|at| at.elapsed() >= WAIT_LOG_EVERY) {
                    warn!(bootstrap = %config.kafka.bootstrap_servers, waited = ?Duration::from_secs(started.elapsed().as_secs()),
                        error = %e, "waiting for the Kafka cluster to answer");
                    logged = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Internal(e.to_string())
}

/// Runs a blocking Kafka call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SchedulerError> + Send + 'static,
) -> Result<T, SchedulerError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// Reads what the scheduler group has committed, without `require_stable`: with a
/// [`lag::stable_group_reader`] that asks once and is dropped (a heal is rare).
fn group_offsets_reader(config: Arc<Config>) -> GroupOffsets {
    Box::new(move |partitions| {
        let consumer = lag::stable_group_reader(&config).map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((
                    TopicPartition::new(e.topic(), e.partition()),
                    (o, e.metadata().to_string()),
                )),
                _ => None,
            })
            .collect::<Committed>())
    })
}

/// Reads partitions' stable offsets and ends for the publisher's sweep, with two readers
/// made at the first sweep and kept (a sweep reads twice or more, on a cluster that has
/// just had a fault: no new connections each time).
fn marks_reader(config: Arc<Config>) -> Marks {
    let readers = std::sync::Mutex::new(None);
    Box::new(move |topics, signal| {
        let mut kept = readers
            .lock()
            .map_err(|_| "the readers' lock is poisoned".to_string())?;
        if kept.is_none() {
            *kept = Some(held::readers(&config).map_err(|e| e.to_string())?);
        }
        let (stable, end) = kept.as_ref().ok_or("no readers")?;
        held::look(stable, end, topics, signal).map_err(|e| e.to_string())
    })
}

/// The consumer of the scheduler group.
fn group_consumer(
    config: &Config,
    shared: &Arc<Shared>,
    tx: mpsc::Sender<FromConsumer>,
) -> Result<BaseConsumer<GroupContext>, SchedulerError> {
    let mut cc = kafka::client_config(config);
    cc.set("group.id", config.group_id());
    cc.set("enable.auto.commit", "false");
    kafka::set_default(&mut cc, "auto.offset.reset", "earliest");
    kafka::set_default(&mut cc, "isolation.level", "read_committed");
    // The KIP-848 group protocol: incremental rebalances driven by the broker, and the
    // range assignor spreads each topic's partitions over the members (queues and delay
    // topics alike), so an added scheduler takes a share of every queue. Session and
    // heartbeat timing are the broker's (`group.consumer.*`).
    kafka::set_default(&mut cc, "group.protocol", "consumer");
    if cc.get("group.protocol") == Some("consumer") {
        kafka::set_default(&mut cc, "group.remote.assignor", "range");
    } else {
        kafka::set_default(
            &mut cc,
            "partition.assignment.strategy",
            "cooperative-sticky",
        );
        kafka::set_default(&mut cc, "session.timeout.ms", "10000");
        kafka::set_default(&mut cc, "heartbeat.interval.ms", "1000");
    }
    kafka::set_default(&mut cc, "topic.metadata.refresh.interval.ms", "10000");
    // Pre-fetched records in librdkafka are memory too: keep them small; Tidewater
    // buffers what matters in its own bounded queues.
    kafka::set_default(&mut cc, "queued.max.messages.kbytes", "8192");
    kafka::set_default(&mut cc, "fetch.max.bytes", "8388608");
    // A partition resumed after backpressure is fetched in the broker connection's next
    // fetch request, which waits for the one in flight: with librdkafka's defaults a
    // long poll of idle partitions (500 ms) plus the backoff of a partition whose fetch
    // queue was full (1 s). A backlog drained to nothing meanwhile (0.3-0.8 s without a
    // record, several times a run, in the throughput bench). 100 ms each: ten fetch
    // requests a second per broker when idle.
    kafka::set_default(&mut cc, "fetch.wait.max.ms", "100");
    kafka::set_default(&mut cc, "fetch.queue.backoff.ms", "100");
    kafka_stats::enable(&mut cc, config);
    let ctx = GroupContext {
        shared: shared.clone(),
        tx,
        stats: KafkaStats::new(StatsClient::Consumer),
    };
    cc.create_with_context(ctx)
        .map_err(|source| KafkaOpError::Client {
            what: "consumer",
            source,
        })
        .map_err(SchedulerError::from)
}

/// Lane `lane`'s producer, made by `make` and, in exactly-once mode, initialised.
fn lane_producer(
    make: &impl Fn(usize) -> Result<BaseProducer<DeliveryCounter>, SchedulerError>,
    lane: usize,
    exactly_once: bool,
) -> Result<Lane, SchedulerError> {
    let p = make(lane)?;
    if exactly_once {
        // A coordinator still loading after a broker restart answers late: wait a while.
        let deadline = Instant::now() + INIT_WAIT;
        init_transactions(&p, |e| {
            debug!(error = %e, "transactional producer not ready yet; retrying");
            Instant::now() < deadline
        })
        .map_err(SchedulerError::Fatal)?;
    }
    Ok(Lane::new(p, lane))
}

/// A publisher's producer: transactional in exactly-once mode (initialised by the
/// caller), with its lane's transactional id `txn_id`. The first lane's producer exports
/// the `client="producer"` statistics (a second one would overwrite its gauges).
///
/// A producer rebuilt after a failure keeps its lane's id, so it continues its predecessor's
/// producer id with a newer epoch: initialising it fences the predecessor (a call of it
/// still stuck can no longer write) and ends its open transaction. A partition whose part
/// of a transaction the coordinator never marked (Kafka skips the marker of a partition
/// without a leader, see RELIABILITY.md) is then ended by this producer id's next marker
/// there; with a new id it would hold the partition's `read_committed` readers for good.
fn publisher_producer(
    config: &Config,
    (txn_id, lane): (&str, usize),
    exactly_once: bool,
) -> Result<BaseProducer<DeliveryCounter>, SchedulerError> {
    let mut cc = kafka::client_config(config);
    kafka::set_default(&mut cc, "enable.idempotence", "true");
    kafka::set_default(&mut cc, "acks", "all");
    // The publisher makes its own batches (what finished while the previous batch was
    // made durable) and waits for their delivery: a linger here would only delay them.
    // Under load librdkafka still batches what queues while requests are in flight.
    kafka::set_default(&mut cc, "linger.ms", "0");
    kafka::set_default(&mut cc, "compression.type", "lz4");
    // Every record gets a delivery report, though only failures are counted: without
    // one (`delivery.report.only.error`), librdkafka frees each delivered record, its
    // header list and each header on its broker thread, while the publisher's thread
    // allocated them. Frees across threads cost more than the reports do (BENCHMARKS.md,
    // "Delivery reports for every record": 10% less CPU per exactly-once task).
    if exactly_once {
        kafka::set_default(&mut cc, "message.timeout.ms", "10000");
    }
    kafka::set_default(&mut cc, "message.timeout.ms", "60000");
    if exactly_once {
        // Unique per process; other processes' zombies are fenced through the consumer
        // group generation sent with each transaction's offsets.
        cc.set("transactional.id", txn_id);
        // After a crash, read_committed consumers wait for the open transaction to time
        // out: keep that short (transactions here last well under a second).
        kafka::set_default(&mut cc, "transaction.timeout.ms", "10000");
        // A transaction that follows another is refused (CONCURRENT_TRANSACTIONS) until
        // the previous one's markers are written, a few milliseconds; librdkafka retries
        // adding the offsets after `retry.backoff.ms` (default 100 ms, growing up to
        // `retry.backoff.max.ms`), which would idle the publisher for most of that.
        kafka::set_default(&mut cc, "retry.backoff.ms", "10");
    }
    if lane == 0 {
        kafka_stats::enable(&mut cc, config);
    }
    cc.create_with_context(DeliveryCounter::new(StatsClient::Producer))
        .map_err(|source| {
            SchedulerError::Kafka(KafkaOpError::Client {
                what: "producer",
                source,
            })
        })
}
