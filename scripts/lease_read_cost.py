#!/usr/bin/env python3
"""Lease-table read units per shard-hour for the listing designs compared in
kcl-core/src/lease/coordinator/scale-design.md, by DynamoDB's unit rules: item size is the sum
of attribute name and value bytes (a number takes about one byte per two digits plus one); a
Scan is charged 1 read unit per 4 KB read when strongly consistent, half when eventually
consistent. Usage: scripts/lease_read_cost.py [shards, default 10000]
"""

import math
import sys

SHARDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000

# A representative kcl-rs / KCL lease item: (attribute name, value bytes).
ITEM = [
    ("leaseKey", len("shardId-000000012345")),
    ("leaseOwner", len("worker-ip-10-0-12-34.ec2.internal-4f3c")),
    ("leaseCounter", 1 + math.ceil(6 / 2)),
    ("checkpoint", 56),  # a sequence number, stored as a string
    ("checkpointSubSequenceNumber", 2),
    ("ownerSwitchesSinceCheckpoint", 2),
    ("parentShardId", len("shardId-000000006172")),
    ("startingHashKey", 39),
    ("endingHashKey", 39),
    ("throughputKBps", 1 + math.ceil(6 / 2)),
]
item_bytes = sum(len(name) + size for name, size in ITEM)
table_bytes = item_bytes * SHARDS
strong = math.ceil(table_bytes / 4096)
eventual = strong / 2

# Listings per hour: (name, listings per worker per hour or None when fleet-wide, units per listing).
DESIGNS = [
    ("KCL 2.x: every worker, every (F + 25 ms) x 2 ~ 20 s, eventually consistent", 3600 / 20.05, eventual, True),
    ("kcl-rs today: every worker, every F = 10 s, strongly consistent", 3600 / 10, strong, True),
    ("proposal: one leader, every ~6 s, eventually consistent", 3600 / 6, eventual, False),
]

print(f"item ~ {item_bytes} B; one listing of {SHARDS} leases: {strong} RRU strong, {eventual:.0f} eventual")
print(f"{'design':80} {'5 workers':>10} {'500 workers':>12}   (read units per shard-hour)")
for name, per_hour, units, per_worker in DESIGNS:
    cells = []
    for workers in (5, 500):
        listers = workers if per_worker else 1
        cells.append(per_hour * units * listers / SHARDS)
    print(f"{name:80} {cells[0]:>10.0f} {cells[1]:>12.0f}")
