#!/usr/bin/env python3
"""Make the target collection ready for a timed run of the Kafka Connect peer.

    prepare_collection.py --uri URI --db DB --collection C [--drop] [--business-key-index]

--drop drops the collection first. Then it must be empty (a count that starts
above zero would make the timing wrong): exit 2 with a message otherwise.
--business-key-index creates the unique index
{exchange: 1, symbol: 1, interval: 1, open_time: 1} that
ReplaceOneBusinessKeyStrategy's filter needs: without it every replaceOne is a
collection scan, and two upserts of one candle in flight at once could insert
it twice. The connector creates no index itself.
"""
import argparse
import sys

from pymongo import ASCENDING, MongoClient

BUSINESS_KEY = [("exchange", ASCENDING), ("symbol", ASCENDING), ("interval", ASCENDING), ("open_time", ASCENDING)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--drop", action="store_true")
    ap.add_argument("--business-key-index", action="store_true")
    args = ap.parse_args()

    coll = MongoClient(args.uri, serverSelectionTimeoutMS=10_000)[args.db][args.collection]
    if args.drop:
        coll.drop()
    held = coll.estimated_document_count()
    if held:
        print(f"prepare_collection: {args.db}.{args.collection} already holds {held} documents; "
              "name a new collection or set DROP=1", file=sys.stderr)
        sys.exit(2)
    if args.business_key_index:
        coll.create_index(BUSINESS_KEY, unique=True, name="business_key")


if __name__ == "__main__":
    main()
