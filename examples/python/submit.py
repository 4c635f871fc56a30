#!/usr/bin/env python3
"""Submits tasks to a Tidewater queue topic, half as Avro and half as JSON.

Avro tasks are written with ../../schemas/task.avsc in Avro's single-object encoding, as
Tidewater's own clients write them: the bytes C3 01, the schema's CRC-64-AVRO fingerprint
(8 bytes, little-endian), then the binary datum. JSON tasks are the JSON form of the
README. Each record is keyed by its task id and names its encoding in the `content-type`
header; every third one carries a W3C `traceparent` header.

Of every four tasks, the last two go to the failing function. One JSON line per task goes
to stdout (its id, the status it should end with, its traceparent): outcomes.py reads them.
"""

import argparse
import io
import json
import os
import secrets
import sys
import time
from pathlib import Path

import fastavro
from confluent_kafka import Producer

SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"


def load_schema(name):
    """Parses schemas/<name> and returns it with its single-object header."""
    schema = fastavro.parse_schema(json.loads((SCHEMAS / name).read_text()))
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    # fastavro gives the fingerprint as the hex of its little-endian bytes, the byte order
    # of the single-object header (as Java's and Tidewater's).
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return schema, b"\xc3\x01" + fingerprint


def avro_task(schema, header, task):
    out = io.BytesIO()
    out.write(header)
    fastavro.schemaless_writer(out, schema, task)
    return out.getvalue()


def json_task(task):
    # The JSON form has the same fields; a JSON payload reaches the function as JSON text.
    body = {k: v for k, v in task.items() if v is not None}
    body["payload"] = json.loads(task["payload"])
    return json.dumps(body).encode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default=os.environ.get("TW_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    p.add_argument("--topic", default="demo.q.shop", help="queue topic (default: the demo's)")
    p.add_argument("--ok-function", default="shout", help="a function that succeeds")
    p.add_argument("--fail-function", default="broken", help="a function that fails")
    p.add_argument("--count", type=int, default=8, help="tasks to submit")
    p.add_argument("--id-prefix", default=f"py-{int(time.time())}", help="task ids are PREFIX-N")
    args = p.parse_args()

    schema, header = load_schema("task.avsc")
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(f"{msg.key().decode()}: {err}")

    expected = []
    for n in range(args.count):
        fails = n % 4 >= 2
        encoding = "avro" if n % 2 == 0 else "json"
        task = {
            "id": f"{args.id_prefix}-{n}",
            "tenant": None,
            "function": args.fail_function if fails else args.ok_function,
            "payload": json.dumps({"order": n, "client": "python"}).encode(),
            "headers": {"origin": "python-example", "encoding": encoding},
            "submitted_at": int(time.time() * 1000),
            "not_before": None,
        }
        headers = [("content-type", f"application/{encoding}")]
        traceparent = None
        if n % 3 == 0:
            traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
            headers.append(("traceparent", traceparent))
        value = avro_task(schema, header, task) if encoding == "avro" else json_task(task)
        producer.produce(args.topic, key=task["id"], value=value, headers=headers, on_delivery=delivered)
        producer.poll(0)
        expected.append({"id": task["id"], "expect": "failed" if fails else "succeeded",
                         "encoding": encoding, "traceparent": traceparent})

    left = producer.flush(30)
    if left or errors:
        for e in errors:
            print(f"submit.py: not delivered: {e}", file=sys.stderr)
        if left:
            print(f"submit.py: {left} task(s) still undelivered after 30 s", file=sys.stderr)
        return 1
    for e in expected:
        print(json.dumps(e))
    print(f"submit.py: submitted {len(expected)} tasks to {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
