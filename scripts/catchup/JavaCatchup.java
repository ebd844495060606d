// Drains a stream with the real Java KCL (3.x Scheduler, polling) and prints, as one JSON line,
// when the first record was processed and when the expected count was reached.
// Run by scripts/catchup-vs-java. Usage: java -cp <jars>:<classes> JavaCatchup <stream> <application> <expected> <kinesis-endpoint> <dynamodb-endpoint>
import java.net.URI;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

public class JavaCatchup {
    static final AtomicLong count = new AtomicLong();
    static volatile long firstNanos = 0;
    // The first initialize: the KCL starts a shard's prefetching just before it, so reads
    // begin here (records fetched ahead of the first processRecords count in the drain).
    static volatile long initNanos = 0;
    static volatile long startNanos = System.nanoTime();

    static class Counter implements ShardRecordProcessor {
        public void initialize(InitializationInput input) {
            synchronized (JavaCatchup.class) { if (initNanos == 0) initNanos = System.nanoTime(); }
        }
        public void processRecords(ProcessRecordsInput input) {
            if (firstNanos == 0 && !input.records().isEmpty()) {
                synchronized (JavaCatchup.class) { if (firstNanos == 0) firstNanos = System.nanoTime(); }
            }
            count.addAndGet(input.records().size());
            try { input.checkpointer().checkpoint(); } catch (Exception e) { throw new RuntimeException(e); }
        }
        public void leaseLost(LeaseLostInput input) {}
        public void shardEnded(ShardEndedInput input) {
            try { input.checkpointer().checkpoint(); } catch (Exception e) { throw new RuntimeException(e); }
        }
        public void shutdownRequested(ShutdownRequestedInput input) {}
    }

    public static void main(String[] args) throws Exception {
        String stream = args[0], app = args[1];
        long expected = Long.parseLong(args[2]);
        StaticCredentialsProvider creds = StaticCredentialsProvider.create(AwsBasicCredentials.create("x", "x"));
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder().endpointOverride(URI.create(args[3]))
            .region(Region.US_EAST_1).credentialsProvider(creds)
            .httpClient(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP1_1).build()).build();
        DynamoDbAsyncClient dynamo = DynamoDbAsyncClient.builder().endpointOverride(URI.create(args[4]))
            .region(Region.US_EAST_1).credentialsProvider(creds).build();
        CloudWatchAsyncClient cw = CloudWatchAsyncClient.builder().endpointOverride(URI.create(args[4]))
            .region(Region.US_EAST_1).credentialsProvider(creds).build();
        ConfigsBuilder cb = new ConfigsBuilder(stream, app, kinesis, dynamo, cw, UUID.randomUUID().toString(), Counter::new);
        Scheduler scheduler = new Scheduler(cb.checkpointConfig(), cb.coordinatorConfig(),
            cb.leaseManagementConfig(), cb.lifecycleConfig(), cb.metricsConfig().metricsLevel(MetricsLevel.NONE),
            cb.processorConfig(),
            cb.retrievalConfig().retrievalSpecificConfig(new PollingConfig(stream, kinesis))
                .initialPositionInStreamExtended(InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON)));
        Thread t = new Thread(scheduler);
        t.setDaemon(true);
        t.start();
        while (count.get() < expected) {
            Thread.sleep(5);
            if (System.nanoTime() - startNanos > 600_000_000_000L) { System.err.println("timed out at " + count.get()); System.exit(1); }
        }
        long done = System.nanoTime();
        System.out.printf("{\"framework\":\"java-kcl-3.1.3\",\"records\":%d,\"first_record_s\":%.3f,\"drain_s\":%.3f,\"from_initialize_s\":%.3f}%n",
            count.get(), (firstNanos - startNanos) / 1e9, (done - firstNanos) / 1e9, (done - initNanos) / 1e9);
        System.exit(0);
    }
}
