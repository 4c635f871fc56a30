#!/usr/bin/env node
// Consumes Tidewater's outcome events (read_committed) and acts on the failed ones.
//
// Outcomes are written in one Kafka transaction with the scheduler's offsets, so a
// read_committed consumer sees exactly one per task. Each is Avro in single-object encoding
// (../../schemas/outcome.avsc). A succeeded task is printed. A failed one is acted on: it is
// appended to a local dead-letter log (JSON lines, everything needed to compensate) and a
// compensation line is printed. Acting is idempotent by task id; an offset is committed only
// after its handler has returned, so after the log line is written.
//
// With --expect (the output of submit.js), it stops once every listed task has an outcome,
// and exits 1 if one is missing after --timeout or ended otherwise than expected.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { parseArgs } = require('util');
const { kafka } = require('./kafka');
const { load } = require('./avro');

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string', default: process.env.TW_BOOTSTRAP_SERVERS || '127.0.0.1:19092' },
    topics: { type: 'string', default: 'demo.shop.done,demo.dlq.shop' },
    group: { type: 'string', default: `tidewater-example-js-${crypto.randomBytes(4).toString('hex')}` },
    expect: { type: 'string' },
    'dead-letter-log': { type: 'string', default: 'failed-tasks.jsonl' },
    timeout: { type: 'string', default: '60' },
  },
});

const text = (b) => (b == null ? null : b.toString('utf8'));

async function main() {
  const outcomeType = load('outcome.avsc');
  const expected = new Map();
  if (args.expect) {
    const lines = fs.readFileSync(args.expect === '-' ? 0 : args.expect, 'utf8').split('\n');
    for (const line of lines.filter((l) => l.trim())) {
      const e = JSON.parse(line);
      expected.set(e.id, e);
    }
  }
  const seen = new Map();
  const problems = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const timer = setTimeout(done, Number(args.timeout) * 1000);

  // KafkaJS consumers read committed records only unless readUncommitted is set: stated here.
  const consumer = kafka(args.bootstrap, 'tidewater-example-outcomes')
    .consumer({ groupId: args.group, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topics: args.topics.split(','), fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      if (text(message.headers['tw-event']) !== 'outcome') return;
      let o;
      try {
        o = outcomeType.decode(message.value);
      } catch (e) {
        problems.push(`${topic}[${partition}]@${message.offset}: ${e.message}`);
        return;
      }
      const id = o.task_id;
      if (expected.size && !expected.has(id)) return;
      if (seen.has(id)) {
        console.error(`duplicate outcome for ${id} ignored`);
        return;
      }
      seen.set(id, o.status);
      if (o.status === 'succeeded') {
        console.log(`succeeded  ${id} ${o.function}: ${text(o.result)}`);
      } else {
        const entry = {
          task_id: id, tenant: o.tenant, function: o.function, status: o.status,
          reason: o.reason, error: o.error, attempts: o.attempts.length, payload: text(o.payload),
          task_headers: o.task_headers, traceparent: o.traceparent, source: o.source,
        };
        fs.appendFileSync(args['dead-letter-log'], `${JSON.stringify(entry)}\n`);
        console.log(`compensate ${id} ${o.function}: ${o.reason} after ${o.attempts.length} attempt(s): ${o.error}`);
      }
      const want = expected.get(id);
      if (want && want.expect !== o.status) problems.push(`${id}: ${o.status}, expected ${want.expect}`);
      if (want && want.traceparent !== o.traceparent) {
        problems.push(`${id}: traceparent ${o.traceparent}, expected ${want.traceparent}`);
      }
      if (expected.size && [...expected.keys()].every((k) => seen.has(k))) done();
    },
  });
  await finished;
  clearTimeout(timer);
  await consumer.disconnect();

  const failed = [...seen.values()].filter((s) => s !== 'succeeded').length;
  console.error(`outcomes.js: ${seen.size} outcomes, ${failed} failed (logged to ${args['dead-letter-log']})`);
  const missing = [...expected.keys()].filter((k) => !seen.has(k)).sort();
  if (missing.length) {
    problems.push(`no outcome after ${args.timeout} s for ${missing.length} task(s): ${missing.join(', ')}`);
  }
  for (const p of problems) console.error(`outcomes.js: ${p}`);
  process.exitCode = problems.length ? 1 : 0;
}

main().catch((e) => {
  console.error(`outcomes.js: ${e.message}`);
  process.exit(1);
});
