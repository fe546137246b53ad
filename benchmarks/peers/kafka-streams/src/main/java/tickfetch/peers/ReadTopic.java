package tickfetch.peers;

import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Copies a topic, as a read_committed consumer sees it now, to a file of
 * {@code partition TAB key TAB value} lines (for the checker and the
 * idle-partition demo). No consumer group, no offsets committed.
 */
public final class ReadTopic {
    static final String USAGE = "--bootstrap HOST:PORT --topic TOPIC --out FILE";

    public static void main(String[] argv) throws Exception {
        try {
            Args a = new Args(argv, Set.of("--bootstrap", "--topic", "--out"), Set.of());
            read(a.str("--bootstrap"), a.str("--topic"), Path.of(a.str("--out")));
        } catch (Args.Bad e) {
            Args.fail("ReadTopic", USAGE, e);
        }
    }

    static void read(String bootstrap, String topic, Path out) throws Exception {
        Map<String, Object> config = Map.of(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        long n = 0;
        try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(config, new StringDeserializer(),
                new ByteArrayDeserializer()); Writer w = Files.newBufferedWriter(out)) {
            List<TopicPartition> parts = consumer.partitionsFor(topic, Duration.ofSeconds(30)).stream()
                    .map(p -> new TopicPartition(topic, p.partition())).collect(Collectors.toList());
            if (parts.isEmpty()) {
                throw new Args.Bad("topic " + topic + " does not exist", false);
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            // read_committed end offsets are the last stable offsets: everything committed so far.
            Map<TopicPartition, Long> end = consumer.endOffsets(parts);
            while (parts.stream().anyMatch(p -> consumer.position(p) < end.get(p))) {
                for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    w.write(r.partition() + "\t" + r.key() + "\t" + new String(r.value(), StandardCharsets.UTF_8) + "\n");
                    n++;
                }
            }
        }
        System.err.println("ReadTopic: " + n + " records from " + topic);
    }
}
