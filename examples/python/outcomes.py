#!/usr/bin/env python3
"""Consumes Tidewater's outcome events (read_committed) and acts on the failed ones.

Outcomes are written in one Kafka transaction with the scheduler's offsets, so a
read_committed consumer sees exactly one per task. Each is Avro in single-object encoding
(../../schemas/outcome.avsc). A succeeded task is printed. A failed one is acted on: it is
appended to a local dead-letter log (JSON lines, everything needed to compensate) and a
compensation line is printed. Acting is idempotent by task id, and offsets are committed
only after the log is written.

With --expect (the output of submit.py), it stops once every listed task has an outcome,
and exits 1 if one is missing after --timeout or ended otherwise than expected.
"""

import argparse
import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

import fastavro
from confluent_kafka import Consumer, KafkaError

SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"


def load_schema(name):
    schema = fastavro.parse_schema(json.loads((SCHEMAS / name).read_text()))
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return schema, bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


OUTCOME, OUTCOME_FP = load_schema("outcome.avsc")


def decode_outcome(value):
    if len(value) < 10 or value[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object record")
    if value[2:10] != OUTCOME_FP:
        raise ValueError(f"fingerprint {value[2:10].hex()} is not outcome.avsc's ({OUTCOME_FP.hex()})")
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), OUTCOME)


def text(b):
    return None if b is None else b.decode("utf-8", "replace")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default=os.environ.get("TW_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    p.add_argument("--topics", default="demo.shop.done,demo.dlq.shop",
                   help="comma-separated outcome topics (default: the demo's)")
    p.add_argument("--group", default=f"tidewater-example-py-{uuid.uuid4().hex[:8]}")
    p.add_argument("--expect", help="JSON lines from submit.py ('-' for stdin)")
    p.add_argument("--dead-letter-log", default="failed-tasks.jsonl")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for the outcomes")
    args = p.parse_args()

    expected = {}
    if args.expect:
        lines = sys.stdin if args.expect == "-" else open(args.expect)
        expected = {e["id"]: e for e in map(json.loads, filter(str.strip, lines))}

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",  # only outcomes of committed transactions
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe(args.topics.split(","))
    seen, problems = {}, []
    deadline = time.monotonic() + args.timeout
    with open(args.dead_letter_log, "a") as dead_letters:
        while time.monotonic() < deadline and not (expected and expected.keys() <= seen.keys()):
            msgs = consumer.consume(num_messages=100, timeout=1.0)
            for msg in msgs:
                if msg.error():
                    if msg.error().fatal():
                        raise SystemExit(f"outcomes.py: {msg.error()}")
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        print(f"outcomes.py: {msg.error()}", file=sys.stderr)
                    continue
                headers = {k: text(v) for k, v in msg.headers() or []}
                if headers.get("tw-event") != "outcome":
                    continue
                try:
                    o = decode_outcome(msg.value())
                except ValueError as e:
                    problems.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {e}")
                    continue
                tid = o["task_id"]
                if expected and tid not in expected:
                    continue
                if tid in seen:
                    print(f"duplicate outcome for {tid} ignored", file=sys.stderr)
                    continue
                seen[tid] = o["status"]
                if o["status"] == "succeeded":
                    print(f"succeeded  {tid} {o['function']}: {text(o['result'])}")
                else:
                    entry = {"task_id": tid, "tenant": o["tenant"], "function": o["function"],
                             "status": o["status"], "reason": o["reason"], "error": o["error"],
                             "attempts": len(o["attempts"]), "payload": text(o["payload"]),
                             "task_headers": o["task_headers"], "traceparent": o["traceparent"],
                             "source": o["source"]}
                    dead_letters.write(json.dumps(entry) + "\n")
                    print(f"compensate {tid} {o['function']}: {o['reason']} after "
                          f"{len(o['attempts'])} attempt(s): {o['error']}")
                want = expected.get(tid)
                if want and want["expect"] != o["status"]:
                    problems.append(f"{tid}: {o['status']}, expected {want['expect']}")
                if want and want["traceparent"] != o["traceparent"]:
                    problems.append(f"{tid}: traceparent {o['traceparent']}, expected {want['traceparent']}")
            if any(not m.error() for m in msgs):
                dead_letters.flush()
                consumer.commit(asynchronous=False)
    consumer.close()

    failed = sum(1 for s in seen.values() if s != "succeeded")
    print(f"outcomes.py: {len(seen)} outcomes, {failed} failed (logged to {args.dead_letter_log})",
          file=sys.stderr)
    missing = sorted(expected.keys() - seen.keys())
    if missing:
        problems.append(f"no outcome after {args.timeout:g} s for {len(missing)} task(s): {', '.join(missing)}")
    for problem in problems:
        print(f"outcomes.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
