"""The MultiLang SIGTERM hand-off, per shard: two kcl-rs MultiLang daemons (`kcl-worker
--properties-file`, two workers of one application) run the unmodified amazon-kclpy sample on a
4-shard kinesis-local stream while a producer puts a record on every shard every 50 ms. EVENTS
times, the daemon holding the most leases gets SIGTERM, and once every shard it held has had a
batch processed by the other, it is started again and given time to take its share back.

Per shard moved, from the daemons' logs (each logs, at debug level, when its child answered a
processRecords: "batch processed by the child"):
- idle gap: the stopping daemon's last processed batch -> the other daemon's first, and
- SIGTERM -> the other daemon's first batch.
Each event's figure is its worst shard. Also: the stopping daemon's exit code and time to exit.

Run by scripts/multilang-handoff, which installs what it needs and starts the emulators.
Usage: multilang_handoff.py EVENTS KCL_WORKER KCLPY_SRC KCLPY_VENV_BIN
Needs: boto3 (the moto venv has it), KCL_KINESIS_ENDPOINT, KCL_DYNAMODB_ENDPOINT.
"""

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import boto3

import kinesis_feed

EVENTS = int(sys.argv[1])
KCL_WORKER, KCLPY_SRC, KCLPY_VENV_BIN = sys.argv[2:5]
KINESIS = os.environ["KCL_KINESIS_ENDPOINT"]
DYNAMO = os.environ["KCL_DYNAMODB_ENDPOINT"]
SHARDS = 4
kinesis = boto3.client("kinesis", endpoint_url=KINESIS, region_name="us-east-1")
dynamo = boto3.client("dynamodb", endpoint_url=DYNAMO, region_name="us-east-1")


def owners(app):
    try:
        items = dynamo.scan(TableName=app, ConsistentRead=True)["Items"]
    except dynamo.exceptions.ResourceNotFoundException:
        return {}
    return {i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S") for i in items}


def batches(path):
    """(shard id, unix seconds) of every batch the daemon whose log is `path` had processed."""
    out = []
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return out
    for line in lines:
        if "batch processed by the child" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        out.append((entry["fields"]["shard_id"], at))
    return out


class Daemon:
    def __init__(self, slot, props, env, dir):
        self.slot, self.props, self.env, self.dir = slot, props, env, dir
        self.incarnation = 0
        self.proc = None
        self.log = None
        self.worker_id = None

    def start(self):
        self.incarnation += 1
        self.log = os.path.join(self.dir, "daemon-%d-%d.log" % (self.slot, self.incarnation))
        out = open(self.log, "w")
        # The worker id is the daemon's own (host:pid:...); it is read from the lease table.
        self.proc = subprocess.Popen([KCL_WORKER, "--properties-file", self.props], cwd=self.dir,
                                     env=self.env, stdout=out, stderr=out)
        self.worker_id = None

    def held(self, leases):
        return sorted(k for k, o in leases.items() if o is not None and o == self.worker_id)


def worker_id_of(log):
    """The worker id the daemon logged at start ("worker_id" field of its first entries)."""
    try:
        for line in open(log):
            if '"worker_id"' in line:
                return json.loads(line)["fields"]["worker_id"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def wait(what, check, limit=120):
    start = time.time()
    while time.time() - start < limit:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    sys.exit("timed out waiting for " + what)


def main():
    tag = str(os.getpid())
    stream = app = "handoff-%s" % tag
    kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    dir = "/tmp/" + stream
    os.makedirs(dir, exist_ok=True)
    sample = os.path.join(KCLPY_SRC, "samples", "sample_kclpy_app.py")
    subprocess.check_call(["cp", sample, dir])
    base = open(os.path.join(KCLPY_SRC, "samples", "sample.properties")).read()
    props = os.path.join(dir, "app.properties")
    open(props, "w").write(base + "\n" + "\n".join([
        "streamName = %s" % stream,
        "streamArn = arn:aws:kinesis:us-east-1:000000000000:stream/%s" % stream,
        "applicationName = %s" % app,
        "kinesisEndpoint = %s" % KINESIS,
        "dynamoDBEndpoint = %s" % DYNAMO,
        "executableName = %s" % os.path.join(dir, "sample_kclpy_app.py"),
        "initialPositionInStream = TRIM_HORIZON",
        "failoverTimeMillis = 10000",
        "idleTimeBetweenReadsInMillis = 250",
        "metricsLevel = NONE",
    ]) + "\n")
    env = dict(os.environ, PATH=KCLPY_VENV_BIN + ":" + os.environ["PATH"], PYTHONPATH=KCLPY_SRC,
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               KCL_WORKER_LOG_FORMAT="json",
               KCL_WORKER_LOG=os.environ.get("KCL_HANDOFF_LOG", "info,kcl_worker::multilang::child=warn,kcl_worker::multilang=debug"))
    stop = threading.Event()
    producer = threading.Thread(target=kinesis_feed.every_shard,
                                args=(KINESIS, stream, stop, 0.05, "r"), daemon=True)
    producer.start()
    daemons = [Daemon(0, props, env, dir), Daemon(1, props, env, dir)]
    for d in daemons:
        d.start()
    idle, takeover, exits = [], [], []
    try:
        for d in daemons:
            d.worker_id = wait("daemon %d's worker id" % d.slot, lambda: worker_id_of(d.log))
        # Settled: both hold leases and every shard has been processed.
        wait("both daemons holding leases",
             lambda: all(d.held(owners(app)) for d in daemons) and len(owners(app)) == SHARDS)
        time.sleep(15 + random.uniform(0, 3.5))
        for event in range(EVENTS):
            leases = owners(app)
            stopping = max(daemons, key=lambda d: (len(d.held(leases)), (d.slot + event) % 2))
            other = daemons[1 - stopping.slot]
            shards = stopping.held(leases)
            # A lease key is its shard id (single-stream application).
            last_before = {s: max((t for sh, t in batches(stopping.log) if sh == s), default=None)
                           for s in shards}
            signalled = time.time()
            stopping.proc.send_signal(signal.SIGTERM)

            def moved():
                theirs = batches(other.log)
                firsts = {}
                for s in shards:
                    after = [t for sh, t in theirs if sh == s and t > signalled - 1]
                    if not after:
                        return None
                    firsts[s] = min(after)
                return firsts

            firsts = wait("the other daemon to process every moved shard", moved, limit=60)
            code = stopping.proc.wait(timeout=60)
            exits.append((code, time.time() - signalled))
            mine = batches(stopping.log)
            gaps, takes = [], []
            for s in shards:
                last = max((t for sh, t in mine if sh == s), default=last_before[s])
                gaps.append(firsts[s] - last)
                takes.append(firsts[s] - signalled)
            idle.append(max(gaps))
            takeover.append(max(takes))
            print("event %d: %s stopped holding %d shard(s); idle gap per shard %s s; SIGTERM -> "
                  "first batch elsewhere %s s; exit code %s after %.2f s" % (
                      event + 1, "daemon-%d" % stopping.slot, len(shards),
                      " ".join("%.2f" % g for g in gaps), " ".join("%.2f" % t for t in takes),
                      code, exits[-1][1]), flush=True)
            stopping.start()
            stopping.worker_id = wait("the restarted daemon's worker id",
                                      lambda: worker_id_of(stopping.log))
            # It takes its share back (graceful steals) before the next event.
            wait("the restarted daemon holding leases", lambda: stopping.held(owners(app)), limit=90)
            # Then a random moment: the offer is read at the receiver's next renewal (every
            # failover time / 3), and events that follow the fleet's own steps would all fall at
            # the same phase of it.
            time.sleep(5 + random.uniform(0, 3.5))
    finally:
        stop.set()
        for d in daemons:
            if d.proc and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
    print("multilang hand-off (kclpy sample, 2 daemons, %d shards, poll 250 ms, %d SIGTERMs): "
          "idle gap per event (worst shard), s: %s; SIGTERM -> first batch elsewhere, s: %s; "
          "exit codes %s" % (SHARDS, EVENTS, " ".join("%.2f" % g for g in idle),
                             " ".join("%.2f" % t for t in takeover),
                             sorted(set(c for c, _ in exits))))
    print("logs in " + dir)


main()
