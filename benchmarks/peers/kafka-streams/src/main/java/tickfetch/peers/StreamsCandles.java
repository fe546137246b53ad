package tickfetch.peers;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Suppressed.BufferConfig;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.WindowStore;

/**
 * tickfetch's 1s and 1m candles, computed by Kafka Streams from tickfetch's
 * trades topic: the peer of tickfetch's rollup in the benchmark harness.
 * See README.md for what it computes, the settings, and how it differs.
 */
public final class StreamsCandles {
    static final String USAGE = "--bootstrap HOST:PORT --input TOPIC --output-1s TOPIC --output-1m TOPIC"
            + " --application-id ID --state-dir DIR --grace-ms MS [--threads N] [--commit-interval-ms MS]"
            + " [--stop-after-idle-secs S] [--expect-trades N]";

    /** What the run did, counted as records pass (wall clock for the trade times). */
    static final class Stats {
        final LongAdder trades = new LongAdder();
        final LongAdder candles1s = new LongAdder();
        final LongAdder candles1m = new LongAdder();
        final AtomicLong firstTradeMs = new AtomicLong();
        volatile long lastTradeMs;

        void trade() {
            long now = System.currentTimeMillis();
            firstTradeMs.compareAndSet(0, now);
            lastTradeMs = now;
            trades.increment();
        }

        String json() {
            long first = firstTradeMs.get();
            long elapsed = first == 0 ? 0 : lastTradeMs - first;
            long n = trades.sum();
            double perSecond = elapsed > 0 ? n * 1000.0 / elapsed : 0;
            return String.format("{\"trades\":%d,\"candles_1s\":%d,\"candles_1m\":%d,\"elapsed_ms\":%d,"
                            + "\"first_trade_ms\":%d,\"last_trade_ms\":%d,\"trades_per_s\":%.1f}",
                    n, candles1s.sum(), candles1m.sum(), elapsed, first, first == 0 ? 0 : lastTradeMs, perSecond);
        }
    }

    /** Drops watermarks and gap markers (tickfetch's control records) and parses trades. */
    static final class ParseTrades implements FixedKeyProcessor<String, byte[], Trade> {
        private final Stats stats;
        private FixedKeyProcessorContext<String, Trade> context;

        ParseTrades(Stats stats) {
            this.stats = stats;
        }

        @Override
        public void init(FixedKeyProcessorContext<String, Trade> context) {
            this.context = context;
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> record) {
            if (!Trade.isTrade(record.headers())) {
                return;
            }
            if (record.key() == null || record.key().indexOf(':') < 0) {
                throw new IllegalArgumentException("trade key is not exchange:symbol: " + record.key());
            }
            Trade trade = Trade.parse(record.value());
            stats.trade();
            context.forward(record.withValue(trade));
        }
    }

    /** A final window as tickfetch's candle JSON, keyed {@code exchange:symbol}, with no headers. */
    static final class RenderCandles implements Processor<Windowed<String>, Bar, String, byte[]> {
        private final String interval;
        private final long intervalMs;
        private final LongAdder count;
        private ProcessorContext<String, byte[]> context;

        RenderCandles(String interval, long intervalMs, LongAdder count) {
            this.interval = interval;
            this.intervalMs = intervalMs;
            this.count = count;
        }

        @Override
        public void init(ProcessorContext<String, byte[]> context) {
            this.context = context;
        }

        @Override
        public void process(Record<Windowed<String>, Bar> record) {
            String key = record.key().key();
            int colon = key.indexOf(':');
            byte[] json = record.value().candleJson(key.substring(0, colon), key.substring(colon + 1), interval,
                    record.key().window().start(), intervalMs);
            count.increment();
            // A new Record, not record.withKey(..): the suppress buffer replays the
            // headers of the last trade of the window (tickfetch-kind: trade,
            // tickfetch-epoch), which a candle must not carry.
            context.forward(new Record<>(key, json, record.timestamp()));
        }
    }

    static Topology topology(Properties props, String input, String out1s, String out1m, Duration grace,
            Stats stats) {
        // The builder sees the same config as the client (a bare StreamsBuilder() reads defaults).
        StreamsBuilder builder = new StreamsBuilder(new TopologyConfig(new StreamsConfig(props)));
        // processValues keeps the key, so grouping by it needs no repartition topic:
        // the trades topic is already keyed exchange:symbol.
        KGroupedStream<String, Trade> trades = builder
                .stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray())
                        .withTimestampExtractor(new Trade.EventTime()))
                .processValues(() -> new ParseTrades(stats), Named.as("parse-trades"))
                .groupByKey();
        candles(trades, "1s", Duration.ofSeconds(1), grace, out1s, stats.candles1s);
        candles(trades, "1m", Duration.ofMinutes(1), grace, out1m, stats.candles1m);
        return builder.build();
    }

    private static void candles(KGroupedStream<String, Trade> trades, String name, Duration size, Duration grace,
            String topic, LongAdder count) {
        // Tumbling windows [t, t + size) aligned to the epoch. Kafka Streams drops a
        // trade whose window's end + grace is not past its partition's stream time.
        trades.windowedBy(TimeWindows.ofSizeAndGrace(size, grace))
                .aggregate(Bar::new, (key, trade, bar) -> bar.add(trade), Named.as("bars-" + name),
                        Materialized.<String, Bar, WindowStore<Bytes, byte[]>>as("bars-" + name)
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Bar.serde()))
                // One final record per window, once stream time passes its end + grace.
                .suppress(Suppressed.untilWindowCloses(BufferConfig.unbounded()).withName("final-" + name))
                .toStream(Named.as("closed-" + name))
                .process(() -> new RenderCandles(name, size.toMillis(), count), Named.as("render-" + name))
                .to(topic, Produced.with(Serdes.String(), Serdes.ByteArray()).withName("candles-" + name));
    }

    /** Creates the output topics where missing, with the input's partitions and replication. */
    static void ensureOutputs(String bootstrap, String input, List<String> outputs) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000))) {
            TopicDescription in;
            try {
                in = admin.describeTopics(List.of(input)).allTopicNames().get(30, TimeUnit.SECONDS).get(input);
            } catch (TimeoutException e) {
                throw new Args.Bad("no answer from Kafka at " + bootstrap + " within 30 s", false);
            } catch (ExecutionException e) {
                if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                    throw new Args.Bad("input topic " + input + " does not exist", false);
                }
                throw new Args.Bad("describing " + input + " at " + bootstrap + ": " + e.getCause(), false);
            }
            int partitions = in.partitions().size();
            short replicas = (short) in.partitions().get(0).replicas().size();
            Set<String> existing = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            List<NewTopic> missing = new ArrayList<>();
            for (String topic : outputs) {
                if (!existing.contains(topic)) {
                    missing.add(new NewTopic(topic, partitions, replicas));
                }
            }
            try {
                admin.createTopics(missing).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) { // another instance won the race
                    throw e;
                }
            }
        }
    }

    public static void main(String[] argv) throws Exception {
        try {
            Args args = new Args(argv, Set.of("--bootstrap", "--input", "--output-1s", "--output-1m", "--application-id",
                    "--state-dir", "--grace-ms", "--threads", "--commit-interval-ms", "--stop-after-idle-secs",
                    "--expect-trades"), Set.of());
            String bootstrap = args.str("--bootstrap");
            String input = args.str("--input");
            String out1s = args.str("--output-1s");
            String out1m = args.str("--output-1m");
            Properties props = new Properties();
            props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.str("--application-id"));
            props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(StreamsConfig.STATE_DIR_CONFIG, args.str("--state-dir"));
            props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
            props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, (int) Math.max(1, args.num("--threads", 1L)));
            props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, args.num("--commit-interval-ms", 100L));
            // Kafka Streams raises linger.ms to 100 for its producers; tickfetch's
            // stages use 5, so the peer does too (the commit interval, not the
            // linger, then bounds latency). Consumer fetch settings stay at the
            // client defaults (fetch.min.bytes 1, fetch.max.wait.ms 500), like
            // tickfetch's librdkafka consumers; isolation.level is read_committed
            // under exactly_once_v2.
            props.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
            long graceMs = args.num("--grace-ms", null);
            long idleMs = args.num("--stop-after-idle-secs", 0L) * 1000;
            long expect = args.num("--expect-trades", 0L);
            Stats stats = new Stats();
            Topology topology = topology(props, input, out1s, out1m, Duration.ofMillis(graceMs), stats);
            ensureOutputs(bootstrap, input, List.of(out1s, out1m));
            System.exit(run(new KafkaStreams(topology, props), stats, idleMs, expect));
        } catch (Args.Bad e) {
            Args.fail("StreamsCandles", USAGE, e);
        }
    }

    /**
     * Runs until {@code expect} trades went through, {@code idleMs} passed with
     * none, SIGTERM/SIGINT, or a failure; then closes cleanly and prints the
     * result line. A clean close commits: the caches flush into suppress, which
     * emits every window that stream time has closed, and the transaction
     * commits, so the counts are of candles on the output topics.
     */
    static int run(KafkaStreams streams, Stats stats, long idleMs, long expect) throws InterruptedException {
        CountDownLatch stop = new CountDownLatch(1);
        CountDownLatch finished = new CountDownLatch(1);
        AtomicInteger exitCode = new AtomicInteger();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        // A signal runs the shutdown hooks while main is still going: the hook
        // asks main to stop, waits for its close and result line, and halts with
        // main's code (an exiting JVM would otherwise end with 143 for SIGTERM).
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stop.countDown();
            try {
                finished.await(120, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                // halt anyway
            }
            Runtime.getRuntime().halt(exitCode.get());
        }, "stop"));
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            stop.countDown();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        long started = System.currentTimeMillis();
        while (!stop.await(50, TimeUnit.MILLISECONDS)) {
            if (expect > 0 && stats.trades.sum() >= expect) {
                break;
            }
            if (idleMs > 0 && System.currentTimeMillis() - Math.max(started, stats.lastTradeMs) >= idleMs) {
                break;
            }
        }
        boolean closed = streams.close(Duration.ofSeconds(60));
        Throwable error = failure.get();
        if (error != null || !closed) {
            Throwable root = error;
            while (root != null && root.getCause() != null) {
                root = root.getCause();
            }
            System.err.println("StreamsCandles: " + (root == null ? "did not close within 60 s" : "failed: " + root));
            exitCode.set(1);
        } else {
            System.out.println(stats.json());
        }
        System.out.flush();
        finished.countDown();
        return exitCode.get();
    }
}
