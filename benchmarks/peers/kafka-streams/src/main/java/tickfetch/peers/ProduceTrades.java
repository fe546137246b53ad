package tickfetch.peers;

import java.io.IOException;
import java.io.Writer;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * Writes synthetic trades in tickfetch's trades-topic format, paced at
 * {@code --rate} per second: random-walk prices, increasing trade ids per
 * symbol, {@code exchange_time} = now (less up to {@code --jitter-ms}, to put
 * trades out of order within a window), some aggregated trades, both forms of
 * the kind header, and a watermark or gap marker every {@code --control-every}
 * trades (which the peer must skip). With {@code --jsonl} each trade is also
 * appended as {@code partition TAB json} for an independent check.
 */
public final class ProduceTrades {
    static final String USAGE = "--bootstrap HOST:PORT --topic TOPIC [--partitions 4] [--symbols 500]"
            + " [--rate 20000] (--seconds 10 | --count N) [--jitter-ms 0] [--control-every 1000]"
            + " [--jsonl FILE] [--seed N]";

    public static void main(String[] argv) throws Exception {
        try {
            Args a = new Args(argv, Set.of("--bootstrap", "--topic", "--partitions", "--symbols", "--rate",
                    "--seconds", "--count", "--jitter-ms", "--control-every", "--jsonl", "--seed"), Set.of());
            String bootstrap = a.str("--bootstrap");
            String topic = a.str("--topic");
            int partitions = ensureTopic(bootstrap, topic, (int) a.num("--partitions", 4L));
            int symbols = (int) Math.max(1, a.num("--symbols", 500L));
            long rate = Math.max(1, a.num("--rate", 20_000L));
            long count = a.num("--count", rate * a.num("--seconds", 10L));
            produce(bootstrap, topic, partitions, symbols, rate, count, a.num("--jitter-ms", 0L),
                    a.num("--control-every", 1000L), a.str("--jsonl", null), new Random(a.num("--seed", 1L)));
        } catch (Args.Bad e) {
            Args.fail("ProduceTrades", USAGE, e);
        }
    }

    /** The topic's partition count, creating it with {@code partitions} if missing. */
    static int ensureTopic(String bootstrap, String topic, int partitions) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
            return admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get(topic).partitions().size();
        }
    }

    static void produce(String bootstrap, String topic, int partitions, int symbols, long rate, long count,
            long jitterMs, long controlEvery, String jsonl, Random random) throws IOException, InterruptedException {
        Map<String, Object> config = Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ProducerConfig.LINGER_MS_CONFIG, 5, ProducerConfig.ACKS_CONFIG, "all");
        // Per symbol: price in units of 10^-scale, next trade id and raw id; ids
        // start from the clock so that runs into one topic never reuse an id.
        int[] scale = new int[symbols];
        long[] units = new long[symbols];
        long[] nextId = new long[symbols];
        long[] nextRaw = new long[symbols];
        for (int s = 0; s < symbols; s++) {
            scale[s] = new int[] {2, 4, 8}[s % 3];
            units[s] = 1 + (long) (Math.pow(10, scale[s]) * Math.pow(10, random.nextInt(9) - 4) * (1 + random.nextDouble()));
            nextId[s] = System.currentTimeMillis() * 1000;
            nextRaw[s] = nextId[s] * 4;
        }
        AtomicReference<Exception> failed = new AtomicReference<>();
        Writer log = jsonl == null ? Writer.nullWriter() : Files.newBufferedWriter(Path.of(jsonl),
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        long start = System.nanoTime();
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(config, new StringSerializer(),
                new ByteArraySerializer()); Writer out = log) {
            for (long i = 0; i < count && failed.get() == null; i++) {
                // Pace: trade i is due at start + i / rate.
                long due = start + i * 1_000_000_000L / rate;
                long wait = due - System.nanoTime();
                if (wait > 1_000_000) {
                    TimeUnit.NANOSECONDS.sleep(wait);
                }
                int s = random.nextInt(symbols);
                String symbol = String.format("S%04dUSDT", s);
                String key = "binance:" + symbol;
                byte[] keyBytes = key.getBytes(StandardCharsets.UTF_8);
                // What Kafka's default partitioner picks for a keyed record, set
                // explicitly so that the JSONL file names the partition.
                int partition = Utils.toPositive(Utils.murmur2(keyBytes)) % partitions;
                long now = System.currentTimeMillis();
                RecordHeaders headers = new RecordHeaders();
                headers.add("tickfetch-epoch", "1".getBytes(StandardCharsets.UTF_8));
                String json;
                if (controlEvery > 0 && i % controlEvery == controlEvery - 1) {
                    headers.add(Trade.KIND_HEADER, (i / controlEvery % 2 == 0 ? "watermark" : "gap").getBytes(StandardCharsets.UTF_8));
                    json = i / controlEvery % 2 == 0
                            ? String.format("{\"exchange\":\"binance\",\"symbol\":\"%s\",\"time\":%d}", symbol, now - 2000)
                            : String.format("{\"exchange\":\"binance\",\"symbol\":\"%s\",\"first_missing\":1,"
                                    + "\"last_missing\":2,\"from_time\":%d,\"to_time\":%d}", symbol, now - 2000, now - 1000);
                } else {
                    if (random.nextBoolean()) {
                        headers.add(Trade.KIND_HEADER, "trade".getBytes(StandardCharsets.UTF_8));
                    }
                    // Random walk of at most 0.1% a step, never below one unit.
                    units[s] = Math.max(1, units[s] + (long) ((random.nextDouble() - 0.5) * 0.002 * units[s])
                            + random.nextInt(3) - 1);
                    String price = BigDecimal.valueOf(units[s], scale[s]).toPlainString();
                    String quantity = BigDecimal.valueOf(1 + random.nextInt(50_000_000), 8).toPlainString();
                    long time = now - (jitterMs > 0 ? random.nextInt((int) jitterMs + 1) : 0);
                    long id = nextId[s]++;
                    String raw = "";
                    if (random.nextInt(4) == 0) { // an aggregated trade of 1..4 raw trades
                        long first = nextRaw[s];
                        nextRaw[s] += 1 + random.nextInt(4);
                        raw = String.format(",\"first_trade_id\":%d,\"last_trade_id\":%d", first, nextRaw[s] - 1);
                    }
                    json = String.format("{\"exchange\":\"binance\",\"symbol\":\"%s\",\"instrument\":\"%s-USDT\","
                                    + "\"trade_id\":\"%d\",\"price\":\"%s\",\"quantity\":\"%s\",\"side\":\"%s\","
                                    + "\"exchange_time\":%d,\"receive_time\":%d%s}",
                            symbol, symbol.substring(0, 5), id, price, quantity, random.nextBoolean() ? "buy" : "sell",
                            time, now, raw);
                    out.write(partition + "\t" + json + "\n");
                }
                producer.send(new ProducerRecord<>(topic, partition, key, json.getBytes(StandardCharsets.UTF_8),
                        headers), (meta, e) -> {
                            if (e != null) {
                                failed.compareAndSet(null, e);
                            }
                        });
            }
            producer.flush();
        }
        if (failed.get() != null) {
            System.err.println("ProduceTrades: send failed: " + failed.get());
            System.exit(1);
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        System.err.printf("ProduceTrades: %d records (trades and control records) to %s in %.1f s (%.0f/s)%n",
                count, topic, seconds, count / seconds);
    }
}
