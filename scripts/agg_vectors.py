#!/usr/bin/env python3
"""Generates KPL aggregate test vectors with the independent Python `aws-kinesis-agg` library.

Each vector holds the aggregated Kinesis record (base64) and the user records the Python
deaggregator returns for it; kcl-core's test `python_vectors` deaggregates the same bytes and
compares every field. Run with a Python that has `aws-kinesis-agg` installed:

    scripts/tools.sh python-agg && .tools/venv/bin/python scripts/agg_vectors.py

The output is deterministic (seeded) and checked in under kcl-core/tests/vectors/.
"""
import base64
import json
import os
import random
import sys

import aws_kinesis_agg
# The library's aggregator module puts its own folder on sys.path; messages_pb2 needs that.
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg import messages_pb2
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kcl-core", "tests", "vectors")
SEQ = "49590338271490256608559692538361571095921575989136588898"


def aggregate(records, max_size=aws_kinesis_agg.MAX_BYTES_PER_RECORD):
    """Packs (pk, data, ehk) tuples; returns a list of aggregated payloads."""
    agg = RecordAggregator(max_size)
    out = []
    for pk, data, ehk in records:
        full = agg.add_user_record(pk, data, ehk)
        if full is not None:
            out.append(full.get_contents()[2])
    last = agg.clear_and_get()
    if last is not None and last.get_num_user_records() > 0:
        out.append(last.get_contents()[2])
    return out


def python_deaggregate(payload):
    """The library's own deaggregation of one Kinesis record (boto3 format: raw bytes)."""
    rec = {"SequenceNumber": SEQ, "PartitionKey": "outer", "ApproximateArrivalTimestamp": 0, "Data": payload}
    users = []
    for u in iter_deaggregate_records([rec], data_format="Boto3"):
        k = u["kinesis"]
        users.append({
            "partition_key": k["partitionKey"],
            "explicit_hash_key": k.get("explicitHashKey"),
            # Unpacked records come back base64-encoded, passed-through ones as the raw bytes.
            "data": k["data"].decode() if k.get("aggregated") else base64.b64encode(k["data"]).decode(),
            "sequence_number": k["sequenceNumber"],
            "sub_sequence_number": k.get("subSequenceNumber", 0),
            "aggregated": bool(k.get("aggregated", False)),
        })
    return users


def protobuf_deaggregate(payload):
    """Reference decoding with the generated protobuf classes, honouring field presence (the
    library reads a missing explicit_hash_key_index as 0, so mixed aggregates need this)."""
    msg = messages_pb2.AggregatedRecord()
    msg.ParseFromString(payload[4:-16])
    users = []
    for i, r in enumerate(msg.records):
        ehk = msg.explicit_hash_key_table[r.explicit_hash_key_index] if r.HasField("explicit_hash_key_index") else None
        users.append({
            "partition_key": msg.partition_key_table[r.partition_key_index],
            "explicit_hash_key": ehk,
            "data": base64.b64encode(r.data).decode(),
            "sequence_number": SEQ,
            "sub_sequence_number": i,
            "aggregated": True,
        })
    return users


def write(name, payload, expected, source):
    doc = {
        "name": name,
        "generated_by": "aws-kinesis-agg " + source,
        "sequence_number": SEQ,
        "aggregate": base64.b64encode(payload).decode(),
        "expected": expected,
    }
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    rng = random.Random(20261122)
    data = lambda n: bytes(rng.getrandbits(8) for _ in range(n))
    ehk = lambda: str(rng.getrandbits(128))
    cases = {
        "small": [("alpha", b"one", None), ("beta", b"two", None), ("alpha", b"three", None)],
        "bench_100x1KiB": [("pk-%d" % i, data(1024), None) for i in range(100)],
        "bench_1000x100B": [("pk-%d" % i, data(100), None) for i in range(1000)],
        "explicit_hash_keys": [("k%d" % i, data(50), ehk()) for i in range(20)],
        "unicode_keys": [(k, ("données ✓ %d" % i).encode(), None)
                         for i, k in enumerate(["ключ", "鍵", "🔑🗝️", "e\u0301", "a" * 256, "ü" * 256])],
        "empty_data": [("e%d" % (i % 3), b"", None) for i in range(10)],
        "repeated_keys": [("hot" if i % 4 else "cold-%d" % i, data(30), None) for i in range(200)],
        "single_record": [("only", b"just one", None)],
        "large_200KiB": [("big-%d" % i, data(50 * 1024), None) for i in range(4)],
        "many_tiny_records": [("p", data(10), None) for i in range(5000)],
    }
    os.makedirs(OUT, exist_ok=True)
    for name, records in cases.items():
        payloads = aggregate(records)
        for j, payload in enumerate(payloads):
            suffix = "" if len(payloads) == 1 else "_part%d" % j
            write(name + suffix, payload, python_deaggregate(payload), "deaggregator")
    mixed = [("m%d" % i, data(20), ehk() if i % 2 else None) for i in range(9)]
    [payload] = aggregate(mixed)
    write("mixed_explicit_hash_keys", payload, protobuf_deaggregate(payload), "messages_pb2 (field presence)")
    # Not aggregates: the library passes them through unchanged, as one record.
    good = aggregate([("x", b"payload", None)])[0]
    corrupt = good[:-1] + bytes([good[-1] ^ 0xFF])
    for name, payload in [("not_agg_md5_mismatch", corrupt), ("not_agg_plain", b"plain record"),
                          ("not_agg_too_short", aws_kinesis_agg.MAGIC + b"\x00" * 16)]:
        users = python_deaggregate(payload)
        assert len(users) == 1
        write(name, payload, users, "deaggregator")
    print("wrote vectors to", os.path.normpath(OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
