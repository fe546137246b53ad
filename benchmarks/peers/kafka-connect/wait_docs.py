#!/usr/bin/env python3
"""Wait until a MongoDB collection holds EXPECTED documents while Kafka Connect fills it.

    wait_docs.py --uri URI --db DB --collection C --expected N --start EPOCH_S
                 [--timeout 1800] [--rest http://127.0.0.1:PORT --connector NAME] [--pid PID]

Polls the collection's count (the `count` command, estimated_document_count)
every --interval seconds, or four times the last count's own duration if that
is longer: SecantusDB answers `count` by scanning (about 0.2 s at 20,000
documents on the busy 2-core machine), so a fast poll would take server time
from the writes it measures. Stops
with an error when Connect's process (--pid) is gone or the connector or one of
its tasks is FAILED on Connect's REST API. Prints one JSON line:
docs, seconds and docs_per_s from --start (Connect's launch) to the poll that
saw EXPECTED documents, and first_doc_s / first_to_last_s /
first_to_last_docs_per_s from the first poll that saw any document, which
leaves JVM and worker start-up out. Exit 0 when reached, 1 on time-out, 2 when
Connect died or failed.
"""
import argparse
import json
import os
import sys
import time
import urllib.request

from pymongo import MongoClient


def count(coll):
    try:
        return coll.estimated_document_count()
    except Exception:  # a server without `count`: the aggregate form
        return coll.count_documents({})


def connector_failure(rest, name):
    """The trace of a FAILED connector or task, None while all run (or the REST API is not up yet)."""
    try:
        with urllib.request.urlopen(f"{rest}/connectors/{name}/status", timeout=2) as r:
            status = json.load(r)
    except Exception:
        return None
    for part in [status.get("connector", {})] + status.get("tasks", []):
        if part.get("state") == "FAILED":
            return part.get("trace", "FAILED")
    return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by run.sh) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument("--start", type=float, help="Connect's launch, seconds since the epoch")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--rest")
    ap.add_argument("--connector")
    ap.add_argument("--pid", type=int)
    args = ap.parse_args()

    client = MongoClient(args.uri, serverSelectionTimeoutMS=10_000)
    coll = client[args.db][args.collection]
    start = args.start if args.start is not None else time.time()
    first_t = first_n = None
    last_rest = 0.0
    n = 0
    outcome = 1
    while True:
        before = time.time()
        n = count(coll)
        after = time.time()
        now = (before + after) / 2  # the middle of the count's round trip
        if n > 0 and first_t is None:
            first_t, first_n = now, n
        if n >= args.expected:
            outcome = 0
            break
        if now - start > args.timeout:
            print(f"wait_docs: timed out after {args.timeout:.0f} s with {n} of {args.expected} documents",
                  file=sys.stderr)
            break
        if args.pid and not alive(args.pid):
            print(f"wait_docs: Connect (pid {args.pid}) exited with {n} of {args.expected} documents",
                  file=sys.stderr)
            outcome = 2
            break
        if args.rest and args.connector and now - last_rest > 2:
            last_rest = now
            trace = connector_failure(args.rest, args.connector)
            if trace:
                print(f"wait_docs: connector failed with {n} of {args.expected} documents:\n{trace}",
                      file=sys.stderr)
                outcome = 2
                break
        time.sleep(max(args.interval, 4 * (after - before)))

    seconds = now - start
    result = {"docs": n, "seconds": round(seconds, 3), "docs_per_s": round(n / seconds, 1) if seconds > 0 else None}
    if first_t is not None:
        span = now - first_t
        result.update({
            "first_doc_s": round(first_t - start, 3),
            "docs_at_first_poll": first_n,
            "first_to_last_s": round(span, 3),
            # documents written after the first poll that saw any, over the time since
            "first_to_last_docs_per_s": round((n - first_n) / span, 1) if span > 0 else None,
        })
    if outcome:
        result["reached"] = False
    print(json.dumps(result))
    sys.exit(outcome)


if __name__ == "__main__":
    main()
