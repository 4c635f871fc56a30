//! Hostile records end to end: thousands of random and mutated records on a queue, a
//! delay topic and the control topic, while real tasks flow, against the real binary and
//! a real broker. Every bad queue record becomes a `failed` outcome with a reason on the
//! dead-letter topic; every bad delay or control record is skipped and logged; every real
//! task still gets its outcome; the scheduler never stops or restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestEnv;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use tidewater::codec::{self, Encoding, OutcomeStatus, Task};

const BODY: &str = r#"
[tenants.acme.functions.resize]
executor = { type = "inprocess", handler = "echo" }
on_success = "{prefix}.done"
"#;

const WAIT: Duration = Duration::from_secs(180);
/// Bad records of each kind on the queue.
const PER_KIND: usize = 250;
/// Bad records on the delay topic and on the control topic, each.
const SIDE: usize = 300;
const REAL: usize = 200;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn real_task(i: usize) -> Task {
    common::task(&format!("real-{i}"), "resize", &format!("payload {i}"))
}

/// A zig-zag varint, as Avro writes longs.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A record value with the headers it carries.
type Bad = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// The bad values of every kind.
fn hostile(rng: &mut Rng) -> Vec<Bad> {
    let good = codec::encode_task_as(&real_task(0), Encoding::Avro).unwrap();
    let ct = |v: &str| vec![("content-type".to_string(), v.as_bytes().to_vec())];
    let mut out = Vec::new();
    for _ in 0..PER_KIND {
        // Random bytes, any length, sometimes empty.
        let n = rng.below(512);
        out.push((rng.bytes(n), vec![]));
        // Truncated Avro.
        let cut = 1 + rng.below(good.len() - 1);
        out.push((good[..cut].to_vec(), ct("application/avro")));
        // A wrong fingerprint.
        let mut wrong = good.clone();
        let at = 2 + rng.below(8);
        wrong[at] ^= 1 + rng.below(255) as u8;
        out.push((wrong, vec![]));
        // A giant map: a header map whose block claims billions of entries.
        let mut giant = good[..10].to_vec();
        giant.extend(varint(3));
        giant.extend(b"abc");
        giant.push(0); // tenant: null branch
        giant.extend(varint(0)); // function: empty
        giant.extend(varint(0)); // payload: empty
        giant.extend(varint(i64::MAX / 2 - rng.below(1000) as i64));
        giant.extend(rng.bytes(16));
        out.push((giant, vec![]));
        // Deeply nested JSON.
        let depth = 1_000 + rng.below(100_000);
        let json = format!(
            "{{\"function\":\"resize\",\"payload\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        out.push((json.into_bytes(), ct("application/json")));
        // Invalid UTF-8 in every string field of an Avro task.
        let mut bad_utf8 = good[..10].to_vec();
        for _ in 0..2 {
            bad_utf8.extend(varint(4));
            bad_utf8.extend([0xff, 0xfe, 0xc3, 0x28]);
        }
        out.push((bad_utf8, vec![]));
        // Invalid UTF-8 in a JSON task.
        out.push((
            b"{\"id\":\"\xff\xfe\",\"function\":\"resi\xc3\x28\"}".to_vec(),
            ct("application/json"),
        ));
        // Oversized and non-UTF-8 headers around an undecodable value.
        let n = 1 + rng.below(64);
        out.push((
            rng.bytes(n),
            vec![
                ("content-type".into(), vec![0xff; 4]),
                ("traceparent".into(), vec![b'x'; 100_000]),
                ("junk".into(), rng.bytes(50_000)),
            ],
        ));
    }
    out
}

#[test]
fn hostile_records_never_crash_or_block_the_scheduler() {
    let env = TestEnv::with_partitions("hostile", BODY, 2);
    env.init_topics();
    let mut scheduler = env.start_scheduler(0);
    let queue = env.queue("acme");
    let done = env.topic("done");
    let dlq = env.dlq("acme");
    let control = tidewater::names::topics::control(&env.prefix);
    let delay = env
        .config
        .delay_tiers()
        .into_iter()
        .map(|(_, t)| t)
        .next()
        .expect("a delay tier");

    // The scheduler is up (and its control reader placed) once a first task finishes.
    env.submit("acme", vec![real_task(0)]);
    assert_eq!(env.outcome_ids(&done, 1, WAIT).len(), 1, "no first outcome");

    let mut rng = Rng(0x7f4a_7c15_9e37_79b9);
    let bad = hostile(&mut rng);
    let producer = env.producer();
    let mut bad_queue = 0;
    let mut real = 1;
    for (i, (value, headers)) in bad.iter().enumerate() {
        let hs = headers.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v),
            })
        });
        // Null keys and null values too.
        let key = format!("bad-{i}");
        let mut rec = BaseRecord::<str, [u8]>::to(&queue).headers(hs);
        if i % 3 != 0 {
            rec = rec.key(&key);
        }
        if !(i % 17 == 0 && value.is_empty()) {
            rec = rec.payload(value);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        bad_queue += 1;
        if i % 10 == 0 && real < REAL {
            producer.flush(Duration::from_secs(30)).unwrap();
            env.submit("acme", vec![real_task(real)]);
            real += 1;
        }
    }
    let null = BaseRecord::<str, [u8]>::to(&queue).key("null-value");
    producer.send(null).map_err(|(e, _)| e).unwrap();
    bad_queue += 1;
    for i in 0..SIDE {
        let n = rng.below(300);
        let value = rng.bytes(n);
        for topic in [&delay, &control] {
            let mut rec = BaseRecord::<str, [u8]>::to(topic.as_str());
            if i % 5 != 0 {
                rec = rec.payload(&value);
            }
            producer.send(rec).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    env.submit("acme", (real..REAL).map(real_task).collect());

    // Every real task gets its outcome.
    let ids = env.outcome_ids(&done, REAL, WAIT);
    let want: BTreeSet<String> = (0..REAL).map(|i| format!("real-{i}")).collect();
    assert_eq!(ids, want, "real tasks without an outcome");
    // Every bad queue record is a failed outcome with a reason.
    let failed = env.outcomes(&dlq, bad_queue, WAIT);
    assert_eq!(failed.len(), bad_queue, "bad records without an outcome");
    for o in &failed {
        assert_eq!(o.status, OutcomeStatus::Failed, "{}", o.task_id);
        assert!(o.reason.is_some(), "{}: no reason", o.task_id);
        assert!(
            o.error.as_deref().is_some_and(|e| !e.is_empty()),
            "{}",
            o.task_id
        );
        assert!(!o.task_id.starts_with("real-"), "a real task failed: {o:?}");
    }
    // Every bad delay and control record is skipped, each with a log line.
    let deadline = Instant::now() + WAIT;
    let count = |text: &str, what: &str| text.matches(what).count();
    loop {
        let log = scheduler.log_text();
        let delayed = count(&log, "undecodable record in a delay topic skipped");
        let stops = count(&log, "undecodable stop request skipped");
        if delayed >= SIDE && stops >= SIDE {
            assert_eq!((delayed, stops), (SIDE, SIDE));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "skips logged: {delayed} delayed, {stops} control, of {SIDE} each"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And counted.
    let page = common::http_get(&scheduler.metrics_url(Duration::from_secs(10)));
    let skipped = common::metric(&page, tidewater::names::metrics::RECORDS_SKIPPED);
    assert_eq!(skipped, (2 * SIDE) as f64, "skips counted in the metric");
    assert!(scheduler.is_running(), "the scheduler exited");
    let log = scheduler.log_text();
    assert!(!log.contains("panicked"), "a panic in the scheduler log");
}
