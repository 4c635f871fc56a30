#!/usr/bin/env node
// Submits tasks to a Tidewater queue topic, half as Avro and half as JSON.
//
// Avro tasks use ../../schemas/task.avsc in single-object encoding (see avro.js), as
// Tidewater's own clients write them; JSON tasks are the JSON form of the README. Each
// record is keyed by its task id and names its encoding in the `content-type` header; every
// third one carries a W3C `traceparent` header. Of every four tasks, the last two go to the
// failing function. One JSON line per task goes to stdout (its id, the status it should end
// with, its traceparent): outcomes.js reads them.
'use strict';
const crypto = require('crypto');
const { parseArgs } = require('util');
const { Partitioners } = require('kafkajs');
const { kafka } = require('./kafka');
const { load } = require('./avro');

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string', default: process.env.TW_BOOTSTRAP_SERVERS || '127.0.0.1:19092' },
    topic: { type: 'string', default: 'demo.q.shop' },
    'ok-function': { type: 'string', default: 'shout' },
    'fail-function': { type: 'string', default: 'broken' },
    count: { type: 'string', default: '8' },
    'id-prefix': { type: 'string', default: `js-${Math.floor(Date.now() / 1000)}` },
  },
});

async function main() {
  const taskType = load('task.avsc');
  const producer = kafka(args.bootstrap, 'tidewater-example-submit').producer({
    idempotent: true,
    createPartitioner: Partitioners.DefaultPartitioner, // the Java client's partitioner
  });
  await producer.connect();
  const messages = [];
  const expected = [];
  for (let n = 0; n < Number(args.count); n++) {
    const fails = n % 4 >= 2;
    const encoding = n % 2 === 0 ? 'avro' : 'json';
    const task = {
      id: `${args['id-prefix']}-${n}`,
      tenant: null,
      function: fails ? args['fail-function'] : args['ok-function'],
      payload: { order: n, client: 'node' },
      headers: { origin: 'node-example', encoding },
      submitted_at: Date.now(),
      not_before: null,
    };
    const value = encoding === 'avro'
      ? taskType.encode({ ...task, payload: Buffer.from(JSON.stringify(task.payload)) })
      : Buffer.from(JSON.stringify({ ...task, tenant: undefined, not_before: undefined }));
    const headers = { 'content-type': `application/${encoding}` };
    let traceparent = null;
    if (n % 3 === 0) {
      traceparent = `00-${crypto.randomBytes(16).toString('hex')}-${crypto.randomBytes(8).toString('hex')}-01`;
      headers.traceparent = traceparent;
    }
    messages.push({ key: task.id, value, headers });
    expected.push({ id: task.id, expect: fails ? 'failed' : 'succeeded', encoding, traceparent });
  }
  await producer.send({ topic: args.topic, acks: -1, messages });
  await producer.disconnect();
  for (const e of expected) console.log(JSON.stringify(e));
  console.error(`submit.js: submitted ${expected.length} tasks to ${args.topic}`);
}

main().catch((e) => {
  console.error(`submit.js: ${e.message}`);
  process.exit(1);
});
