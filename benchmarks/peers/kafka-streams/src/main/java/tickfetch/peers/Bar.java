package tickfetch.peers;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One window's OHLCV so far: the aggregate kept in the window stores. It
 * follows tickfetch's {@code TradeWindow::add}: sums in exact decimals; open
 * moves to a trade that is strictly earlier by {@code (exchange_time, numeric
 * id)}; close moves to a trade that is later, or equal in time where the ids
 * cannot tell (so the last arrival wins ties).
 */
final class Bar {
    BigDecimal open, high, low, close;
    BigDecimal volume = BigDecimal.ZERO;
    BigDecimal quoteVolume = BigDecimal.ZERO;
    BigDecimal takerBuyVolume = BigDecimal.ZERO;
    BigDecimal takerBuyQuoteVolume = BigDecimal.ZERO;
    long tradeCount;
    String firstId, lastId;
    // Order keys of the current open and close trades.
    long openTime, openSeq, closeTime, closeSeq;
    boolean openHasSeq, closeHasSeq;

    Bar add(Trade t) {
        BigDecimal quote = t.price().multiply(t.quantity());
        if (open == null) {
            open = high = low = close = t.price();
            firstId = t.firstId();
            lastId = t.lastId();
            openTime = closeTime = t.time();
            openSeq = closeSeq = t.seq();
            openHasSeq = closeHasSeq = t.hasSeq();
        } else {
            high = high.max(t.price());
            low = low.min(t.price());
            if (t.time() < openTime || (t.time() == openTime && t.hasSeq() && openHasSeq
                    && Long.compareUnsigned(t.seq(), openSeq) < 0)) {
                open = t.price();
                firstId = t.firstId();
                openTime = t.time();
                openSeq = t.seq();
                openHasSeq = t.hasSeq();
            }
            if (t.time() > closeTime || (t.time() == closeTime && !(t.hasSeq() && closeHasSeq
                    && Long.compareUnsigned(t.seq(), closeSeq) <= 0))) {
                close = t.price();
                lastId = t.lastId();
                closeTime = t.time();
                closeSeq = t.seq();
                closeHasSeq = t.hasSeq();
            }
        }
        volume = volume.add(t.quantity());
        quoteVolume = quoteVolume.add(quote);
        tradeCount += t.count();
        if (t.buy()) {
            takerBuyVolume = takerBuyVolume.add(t.quantity());
            takerBuyQuoteVolume = takerBuyQuoteVolume.add(quote);
        }
        return this;
    }

    private static final JsonFactory JSON = new JsonFactory();

    /** The candle of window {@code [openTime, openTime + intervalMs)} as tickfetch's JSON. */
    byte[] candleJson(String exchange, String symbol, String interval, long windowStart, long intervalMs) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(448);
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("exchange", exchange);
            g.writeStringField("symbol", symbol);
            g.writeStringField("interval", interval);
            g.writeNumberField("open_time", windowStart);
            g.writeNumberField("close_time", windowStart + intervalMs - 1);
            decimal(g, "open", open);
            decimal(g, "high", high);
            decimal(g, "low", low);
            decimal(g, "close", close);
            decimal(g, "volume", volume);
            decimal(g, "quote_volume", quoteVolume);
            g.writeNumberField("trade_count", tradeCount);
            decimal(g, "taker_buy_volume", takerBuyVolume);
            decimal(g, "taker_buy_quote_volume", takerBuyQuoteVolume);
            g.writeStringField("first_trade_id", firstId);
            g.writeStringField("last_trade_id", lastId);
            g.writeStringField("status", "complete");
            g.writeNumberField("revision", 0);
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    private static void decimal(JsonGenerator g, String field, BigDecimal value) throws IOException {
        // Decimals travel as strings, never as JSON numbers (docs/wire-format.md).
        g.writeStringField(field, value.stripTrailingZeros().toPlainString());
    }

    /**
     * The window stores' format: decimals as scale + unscaled bytes (exact and
     * cheaper than text), written and read in one fixed order.
     */
    static Serde<Bar> serde() {
        Serializer<Bar> ser = (topic, b) -> {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(192);
            try (DataOutputStream out = new DataOutputStream(bytes)) {
                for (BigDecimal d : new BigDecimal[] {b.open, b.high, b.low, b.close, b.volume, b.quoteVolume,
                        b.takerBuyVolume, b.takerBuyQuoteVolume}) {
                    byte[] unscaled = d.unscaledValue().toByteArray();
                    out.writeInt(d.scale());
                    out.writeShort(unscaled.length);
                    out.write(unscaled);
                }
                out.writeLong(b.tradeCount);
                out.writeUTF(b.firstId);
                out.writeUTF(b.lastId);
                out.writeLong(b.openTime);
                out.writeLong(b.openSeq);
                out.writeBoolean(b.openHasSeq);
                out.writeLong(b.closeTime);
                out.writeLong(b.closeSeq);
                out.writeBoolean(b.closeHasSeq);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return bytes.toByteArray();
        };
        Deserializer<Bar> de = (topic, data) -> {
            if (data == null) {
                return null;
            }
            Bar b = new Bar();
            try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(data))) {
                BigDecimal[] d = new BigDecimal[8];
                for (int i = 0; i < d.length; i++) {
                    int scale = in.readInt();
                    byte[] unscaled = new byte[in.readShort()];
                    in.readFully(unscaled);
                    d[i] = new BigDecimal(new BigInteger(unscaled), scale);
                }
                b.open = d[0];
                b.high = d[1];
                b.low = d[2];
                b.close = d[3];
                b.volume = d[4];
                b.quoteVolume = d[5];
                b.takerBuyVolume = d[6];
                b.takerBuyQuoteVolume = d[7];
                b.tradeCount = in.readLong();
                b.firstId = in.readUTF();
                b.lastId = in.readUTF();
                b.openTime = in.readLong();
                b.openSeq = in.readLong();
                b.openHasSeq = in.readBoolean();
                b.closeTime = in.readLong();
                b.closeSeq = in.readLong();
                b.closeHasSeq = in.readBoolean();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return b;
        };
        return Serdes.serdeFrom(ser, de);
    }
}
