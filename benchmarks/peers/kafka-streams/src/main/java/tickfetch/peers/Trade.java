package tickfetch.peers;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * The fields of one record of tickfetch's trades topic that a candle needs.
 *
 * <p>{@code seq} is the trade id read as an unsigned 64-bit number where it is
 * one ({@code hasSeq}): tickfetch's candle engine orders trades by
 * {@code (exchange_time, numeric trade id)} and falls back to arrival order only
 * when an id is not numeric, so the peer does the same. {@code firstId} and
 * {@code lastId} are the raw ids a candle reports: an aggregated trade's
 * {@code first_trade_id}/{@code last_trade_id} when it has them, else its
 * {@code trade_id} (as tickfetch's {@code Trade::first_raw_id}).
 */
record Trade(
        BigDecimal price,
        BigDecimal quantity,
        boolean buy,
        long time,
        long seq,
        boolean hasSeq,
        long count,
        String firstId,
        String lastId) {

    static final String KIND_HEADER = "tickfetch-kind";
    private static final JsonFactory JSON = new JsonFactory();

    /**
     * Whether a record is a trade: watermarks and gap markers travel on the same
     * topic, marked by their kind header. Unmarked records, {@code trade}, and
     * kinds this program does not know are trades, as tickfetch decodes them.
     */
    static boolean isTrade(Headers headers) {
        Header kind = headers.lastHeader(KIND_HEADER);
        if (kind == null || kind.value() == null) {
            return true;
        }
        String value = new String(kind.value(), StandardCharsets.UTF_8);
        return !value.equals("watermark") && !value.equals("gap");
    }

    static Trade parse(byte[] json) {
        String tradeId = null;
        BigDecimal price = null;
        BigDecimal quantity = null;
        boolean buy = false;
        long time = Long.MIN_VALUE;
        String first = null;
        String last = null;
        try (JsonParser p = JSON.createParser(json)) {
            expectObject(p);
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String field = p.currentName();
                JsonToken token = p.nextToken();
                switch (field) {
                    case "trade_id" -> tradeId = p.getText();
                    // new BigDecimal(text) keeps every digit and the scale.
                    case "price" -> price = new BigDecimal(p.getText());
                    case "quantity" -> quantity = new BigDecimal(p.getText());
                    case "side" -> buy = "buy".equals(p.getText());
                    case "exchange_time" -> time = p.getLongValue();
                    case "first_trade_id" -> first = token == JsonToken.VALUE_NULL ? null : p.getText();
                    case "last_trade_id" -> last = token == JsonToken.VALUE_NULL ? null : p.getText();
                    default -> p.skipChildren();
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new IllegalArgumentException("not a trade: " + e.getMessage(), e);
        }
        if (tradeId == null || price == null || quantity == null || time == Long.MIN_VALUE) {
            throw new IllegalArgumentException("not a trade (trade_id, price, quantity or exchange_time missing): "
                    + new String(json, StandardCharsets.UTF_8));
        }
        Long seq = unsigned(tradeId);
        Long firstNum = first == null ? null : unsigned(first);
        Long lastNum = last == null ? null : unsigned(last);
        // last - first + 1 raw trades for an aggregated trade, else 1 (Trade::trade_count).
        long count = firstNum != null && lastNum != null && Long.compareUnsigned(lastNum, firstNum) >= 0
                ? lastNum - firstNum + 1
                : 1;
        return new Trade(price, quantity, buy, time, seq == null ? 0 : seq, seq != null, count,
                firstNum != null ? Long.toUnsignedString(firstNum) : tradeId,
                lastNum != null ? Long.toUnsignedString(lastNum) : tradeId);
    }

    /** {@code text} as an unsigned 64-bit number, or null (no exception on the hot path for text ids). */
    private static Long unsigned(String text) {
        if (text.isEmpty()) {
            return null;
        }
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if ((c < '0' || c > '9') && !(i == 0 && c == '+' && text.length() > 1)) {
                return null;
            }
        }
        try {
            return Long.parseUnsignedLong(text);
        } catch (NumberFormatException tooLarge) {
            return null;
        }
    }

    private static void expectObject(JsonParser p) throws IOException {
        if (p.nextToken() != JsonToken.START_OBJECT) {
            throw new IOException("expected a JSON object");
        }
    }

    /**
     * Event time is the trade's {@code exchange_time}, not the record timestamp:
     * tickfetch's producers leave the record timestamp to the client (wall clock
     * at send), which is later than the trade and differs per replica. The
     * parser stops at the field, so the full parse happens once, later.
     * Control records keep their record timestamp: they are dropped right after
     * the source, so their time reaches no window.
     */
    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            if (!isTrade(record.headers())) {
                return record.timestamp();
            }
            byte[] json = (byte[]) record.value();
            try (JsonParser p = JSON.createParser(json)) {
                expectObject(p);
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String field = p.currentName();
                    p.nextToken();
                    if (field.equals("exchange_time")) {
                        return p.getLongValue();
                    }
                    p.skipChildren();
                }
            } catch (IOException e) {
                throw new UncheckedIOException("not a trade at " + where(record) + ": " + e.getMessage(), e);
            }
            throw new IllegalArgumentException("trade without exchange_time at " + where(record));
        }

        private static String where(ConsumerRecord<?, ?> r) {
            return r.topic() + "[" + r.partition() + "]@" + r.offset();
        }
    }
}
