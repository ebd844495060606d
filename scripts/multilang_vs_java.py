"""kcl-rs's MultiLang worker beside the Java MultiLangDaemon (KCL 2.5.8), both running the
unmodified amazon-kclpy sample (`sample_kclpy_app.py`) on the same kind of kinesis-local stream:
4 shards, RECORDS records put before start, then one record per shard per second while it
runs. For each: time until every shard's lease is checkpointed at or past the last record put
before start, and until the first checkpoint (the sample checkpoints its first batch at once: an
upper bound on the time to the first processed record) (the sample checkpoints on its first batch, then on the first batch 30 s after its
last checkpoint — without the trickle, a shard whose last batch came within those 30 s would
never be checkpointed at its end, which is what happened at 100k records),
peak RSS of the whole process tree (daemon + Python children, sampled every 0.2 s) and of the
daemon alone, and the
CPU seconds of the tree (daemon + reaped children) until it exits after SIGTERM.

Run by scripts/multilang-vs-java, which starts the emulators and installs what it needs.
Needs: boto3 (the moto venv has it), KCL_KINESIS_ENDPOINT, KCL_DYNAMODB_ENDPOINT.
"""

import os
import resource
import signal
import subprocess
import sys
import threading
import time

import boto3

import kinesis_feed

RECORDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
KCL_WORKER, KCLPY_SRC, JAVA_VENV, KCLPY_VENV_BIN = sys.argv[2:6]
KINESIS = os.environ["KCL_KINESIS_ENDPOINT"]
DYNAMO = os.environ["KCL_DYNAMODB_ENDPOINT"]
kinesis = boto3.client("kinesis", endpoint_url=KINESIS, region_name="us-east-1")
dynamo = boto3.client("dynamodb", endpoint_url=DYNAMO, region_name="us-east-1")


def fill(stream):
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    last = {}
    for start in range(0, RECORDS, 500):
        entries = [
            {"Data": ("record-%d-" % i).encode() + b"x" * 100, "PartitionKey": "key-%d" % (i % 997)}
            for i in range(start, min(start + 500, RECORDS))
        ]
        out = kinesis.put_records(StreamName=stream, Records=entries)
        assert out["FailedRecordCount"] == 0
        for r in out["Records"]:
            s = r["ShardId"]
            if s not in last or int(r["SequenceNumber"]) > int(last[s]):
                last[s] = r["SequenceNumber"]
    return last


def properties(dir, stream, app, extra=()):
    base = open(os.path.join(KCLPY_SRC, "samples", "sample.properties")).read()
    text = base + "\n" + "\n".join([
        "streamName = %s" % stream,
        "streamArn = arn:aws:kinesis:us-east-1:000000000000:stream/%s" % stream,
        "applicationName = %s" % app,
        "kinesisEndpoint = %s" % KINESIS,
        "dynamoDBEndpoint = %s" % DYNAMO,
        "failoverTimeMillis = 10000",
        "idleTimeBetweenReadsInMillis = 1000",
    ] + list(extra)) + "\n"
    path = os.path.join(dir, "app.properties")
    open(path, "w").write(text)
    return path


def tree_rss_kib(pid):
    """VmRSS of pid and all its descendants."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except OSError:
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open("/proc/%d/status" % p):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def own_rss_kib(pid):
    """VmRSS of pid alone (the daemon without its children)."""
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def checkpoints(app):
    try:
        items = dynamo.scan(TableName=app)["Items"]
    except dynamo.exceptions.ResourceNotFoundException:
        return {}
    return {i["leaseKey"]["S"]: i.get("checkpoint", {}).get("S", "") for i in items}


def checkpointed(marks, last):
    return all(marks.get(s, "").isdigit() and int(marks[s]) >= int(seq) for s, seq in last.items())


def owners(app):
    items = dynamo.scan(TableName=app)["Items"]
    return {i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S") for i in items}


def run(name, command, env, dir, app, last, second_start_wait):
    log = open(os.path.join(dir, name + ".log"), "w")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.Popen(command, cwd=dir, env=env, stdout=log, stderr=log)
    peak, own, done_at, first_at = 0, 0, None, None
    while time.time() - start < 900 and proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        own = max(own, own_rss_kib(proc.pid))
        marks = checkpoints(app)
        if first_at is None and any(m.isdigit() for m in marks.values()):
            # The sample checkpoints its first batch at once: the first record was processed.
            first_at = time.time() - start
        if checkpointed(marks, last):
            done_at = time.time() - start
            break
        time.sleep(0.2)
    # A second worker joins (kcl-rs balances: it may take half the leases before the SIGTERM);
    # once it is up, the first gets SIGTERM: how long until the second owns every lease.
    takeover = None
    second = None
    if done_at is not None:
        first_owner = set(owners(app).values())
        log2 = open(os.path.join(dir, name + "-second.log"), "w")
        second = subprocess.Popen(command, cwd=dir, env=env, stdout=log2, stderr=log2)
        time.sleep(second_start_wait)
    proc.send_signal(signal.SIGTERM)
    term = time.time()
    if second is not None:
        while time.time() - term < 300:
            now = owners(app)
            if all(o is not None and o not in first_owner for o in now.values()):
                takeover = time.time() - term
                break
            time.sleep(0.2)
    while proc.poll() is None and time.time() - term < 60:
        peak = max(peak, tree_rss_kib(proc.pid))
        own = max(own, own_rss_kib(proc.pid))
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    exited = time.time() - term
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if second is not None:
        second.kill()
        second.wait()
    return {"name": name, "first checkpoint s": first_at, "all checkpointed s": done_at, "peak tree RSS MiB": peak / 1024,
            "peak daemon RSS MiB (no children)": own / 1024,
            "CPU s": cpu, "CPU s per 100k": cpu * 100000 / RECORDS, "exit after SIGTERM s": exited,
            "exit code": proc.returncode, "second worker owns every lease after SIGTERM s": takeover}


def main():
    results = []
    tag = str(os.getpid())
    path = KCLPY_VENV_BIN + ":" + os.environ["PATH"]
    for name in ["kcl-rs", "java-2.5.8"]:
        stream, app = "bench-%s-%s" % (name.replace(".", ""), tag), "bench-%s-%s" % (name.replace(".", ""), tag)
        last = fill(stream)
        dir = "/tmp/" + stream
        os.makedirs(dir, exist_ok=True)
        sample = os.path.join(KCLPY_SRC, "samples", "sample_kclpy_app.py")
        subprocess.check_call(["cp", sample, dir])
        # KCL 2.5.8 reads `AWSCredentialsProvider` (an SDK v1 class name), the kclpy 3.x sample
        # sets `AwsCredentialsProvider`; kcl-rs accepts both.
        extra = [] if name == "kcl-rs" else ["AWSCredentialsProvider = DefaultAWSCredentialsProviderChain"]
        # The Java daemon looks the executable up on PATH, not beside the properties file.
        extra.append("executableName = %s" % os.path.join(dir, "sample_kclpy_app.py"))
        props = properties(dir, stream, app, extra)
        env = dict(os.environ, PATH=path, PYTHONPATH=KCLPY_SRC, AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
        if name == "kcl-rs":
            env.update(KCL_WORKER_LOG_FORMAT="text", KCL_WORKER_METRICS_LEVEL="NONE",
                       KCL_WORKER_HTTP_ADDR="127.0.0.1:0", KCL_WORKER_LOG="warn")
            command = [KCL_WORKER, "--properties-file", props]
        else:
            helper = os.path.join(JAVA_VENV, "bin", "amazon_kclpy_helper.py")
            printed = subprocess.check_output([os.path.join(JAVA_VENV, "bin", "python"), helper,
                                               "--print_command", "--java", "java", "--properties", props],
                                              cwd=dir).decode().strip()
            command = printed.split()
            command.insert(1, "-Daws.cborEnabled=false")
        # Start-up before the first worker is stopped: the JVM takes over a minute here.
        wait = 10 if name == "kcl-rs" else 100
        stop = threading.Event()
        feeder = threading.Thread(target=kinesis_feed.every_shard,
                                  args=(KINESIS, stream, stop, 1.0, "trickle"), daemon=True)
        feeder.start()
        try:
            results.append(run(name, command, env, dir, app, last, wait))
        finally:
            stop.set()
            feeder.join()
    for r in results:
        print("  ".join("%s: %s" % (k, ("%.1f" % v) if isinstance(v, float) else v) for k, v in r.items()))


main()
