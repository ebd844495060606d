"""A producer for the MultiLang benchmarks: one record on every shard of a stream (explicit hash
keys inside each shard) every `every` seconds until `stop` is set."""

import boto3


def every_shard(endpoint, stream, stop, every, tag):
    client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
    shards = client.list_shards(StreamName=stream)["Shards"]
    keys = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
    n = 0
    while not stop.wait(every):
        client.put_records(StreamName=stream, Records=[
            {"Data": b"%s-%d" % (tag.encode(), n), "PartitionKey": tag, "ExplicitHashKey": k}
            for k in keys])
        n += 1
