//! `tidewater events`: prints the records of a topic (outcomes, status events, tasks) as
//! JSON lines, or one short line each.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use tidewater::codec;
use tidewater::config::Config;
use tidewater::kafka;
use tidewater::names::headers as h;
use tidewater::otel;

#[derive(Args, Clone)]
pub struct EventsArgs {
    /// Topic to read (an outcome destination, <prefix>.status, a queue).
    topic: String,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// One short line per record (task id, status, function, result or error) instead of JSON.
    #[arg(long)]
    brief: bool,
    /// Also print records of transactions not committed: open ones, and aborted ones
    /// (read_uncommitted). Shows what a transaction left open holds back from
    /// read_committed readers, before `kafka-transactions.sh abort` drops it.
    #[arg(long)]
    uncommitted: bool,
}

/// One line for people: `task_id  status  function  result|error`.
fn brief_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let id = [s("task_id"), s("id")]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or("-");
    let status = match s("kind") {
        "task" => "queued",
        _ => s("status"),
    };
    let detail = match (s("error"), s("reason")) {
        ("", _) => s("result").trim_end().replace('\n', " "),
        (e, r) => format!("{r}: {e}"),
    };
    format!("{id}  {status}  {}  {detail}", s("function"))
}

/// Renders one record as JSON: outcome and status events decoded, tasks decoded, anything
/// else as text.
fn record_json(msg: &rdkafka::message::BorrowedMessage<'_>) -> serde_json::Value {
    let value = msg.payload().unwrap_or_default();
    let mut event = None;
    let mut content_type = None;
    let mut traceparent = None;
    if let Some(hs) = msg.headers() {
        for hd in hs.iter() {
            let v = hd.value.and_then(|v| std::str::from_utf8(v).ok());
            if hd.key == h::EVENT {
                event = v;
            } else if hd.key == h::CONTENT_TYPE {
                content_type = v;
            } else if hd.key.eq_ignore_ascii_case(h::TRACEPARENT) {
                traceparent = v;
            }
        }
    }
    let text = |b: &[u8]| serde_json::Value::String(codec::text(b));
    let mut out = match event {
        Some(h::EVENT_OUTCOME) => match codec::decode_outcome(value) {
            Ok(o) => {
                let mut v = codec::outcome_json(&o);
                v["kind"] = "outcome".into();
                v
            }
            Err(e) => serde_json::json!({"kind": "undecodable", "error": e.to_string()}),
        },
        Some(h::EVENT_STATUS) => match codec::decode_status(value) {
            Ok(s) => {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["kind"] = "status".into();
                v
            }
            Err(e) => serde_json::json!({"kind": "undecodable", "error": e.to_string()}),
        },
        // Only `--uncommitted` shows these: records of a transaction aborted on purpose.
        Some(h::EVENT_SWEEP) => {
            serde_json::json!({"kind": "sweep", "key": msg.key().map(codec::text)})
        }
        _ => match codec::decode_task(value, content_type) {
            Ok(t) => {
                let payload = text(&t.payload);
                let mut v = serde_json::to_value(&t).unwrap_or_default();
                v["payload"] = payload;
                v["kind"] = "task".into();
                v
            }
            Err(_) => serde_json::json!({"kind": "raw", "value": codec::text(value)}),
        },
    };
    out["_topic"] = msg.topic().into();
    out["_partition"] = msg.partition().into();
    out["_offset"] = msg.offset().into();
    if let Some(tp) = traceparent {
        out["_traceparent"] = tp.into();
    }
    out
}

/// With traces on, reading a record is a consumer `process` span that continues the
/// record's trace (the outcome of a task continues the task's).
fn process_span(
    group: &str,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    json: &serde_json::Value,
) -> tracing::Span {
    if !otel::enabled() {
        return tracing::Span::none();
    }
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_str);
    let consumed = otel::Consumed {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        group,
        traceparent: field("_traceparent"),
        tracestate: None,
    };
    let id = field("task_id").or_else(|| field("id")).unwrap_or_default();
    otel::process_span(
        &consumed,
        id,
        field("tenant").unwrap_or_default(),
        field("function").unwrap_or_default(),
    )
}

/// `tidewater events TOPIC`. The metadata fetch and the poll loop block, so they run on
/// a blocking thread and leave the runtime's workers free.
pub async fn events(config: Config, args: EventsArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || print_events(&config, &args)).await?
}

/// Reads `args.topic` from the beginning and prints each record until `--max` records or
/// `--idle` without one.
fn print_events(config: &Config, args: &EventsArgs) -> Result<()> {
    let mut cc = kafka::client_config(config);
    let group = format!("{}.events-cli", config.topics.prefix);
    cc.set("group.id", &group);
    cc.set("enable.auto.commit", "false");
    cc.set(
        "isolation.level",
        if args.uncommitted {
            "read_uncommitted"
        } else {
            "read_committed"
        },
    );
    let consumer: BaseConsumer = cc.create()?;
    let md = consumer.fetch_metadata(Some(&args.topic), kafka::ADMIN_TIMEOUT)?;
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {} does not exist", args.topic);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(&args.topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while args.max.is_none_or(|m| seen < m) && last.elapsed() < args.idle {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                seen += 1;
                last = Instant::now();
                let json = record_json(&msg);
                let _span = process_span(&group, &msg, &json);
                let line = if args.brief {
                    brief_line(&json)
                } else {
                    json.to_string()
                };
                if let Err(e) = writeln!(out, "{line}") {
                    // The reader went away (`| head`): that is the end, not an error.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
    }
    Ok(())
}
