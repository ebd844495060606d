#!/usr/bin/env python3
"""Times the Python aws-kinesis-agg deaggregator on the given vector files; prints one JSON line
per vector: {"name", "bytes", "user_records", "seconds", "iterations"}. Called by kcl-core's
`deaggregation` benchmark so both sides measure the same bytes in one run."""
import base64
import json
import sys
import time

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

seconds = float(sys.argv[1])
for path in sys.argv[2:]:
    with open(path) as f:
        v = json.load(f)
    payload = base64.b64decode(v["aggregate"])
    rec = {"SequenceNumber": v["sequence_number"], "PartitionKey": "outer",
           "ApproximateArrivalTimestamp": 0, "Data": payload}
    n, users, start = 0, 0, time.perf_counter()
    while True:
        for _ in iter_deaggregate_records([rec], data_format="Boto3"):
            users += 1
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    print(json.dumps({"name": v["name"], "bytes": len(payload) * n, "user_records": users,
                      "seconds": elapsed, "iterations": n}))
