package dev.segments.flink;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.zip.CRC32;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.types.Row;

/**
 * Reads what the JVM needs from each raw event, with one streaming pass over its JSON: the batch
 * key of its customer and its event time. (Flink SQL's JSON_VALUE builds a whole JsonPath tree per
 * call: half the JVM's CPU; bench/HISTORY.md.)
 *
 * <p>Input rows: (partition INT, offset BIGINT, kafka timestamp Instant, key BYTES, value BYTES).
 * Output rows: (batch key INT, event time BIGINT or null, record BYTES); {@code KeyByKeySelector}
 * keys them by the batch key. The record is the source record in the binary layout the batcher
 * concatenates into batches and Python's {@code batching.decode_batch} reads ({@link #record}):
 * framing it here, on the source's thread, keeps the work off the segment function's thread,
 * which also runs Python in thread mode.
 *
 * <p>Only top-level fields are read; when a field appears twice the last one counts (as in
 * Python's json). The customer id is a string ({@code batchKey(null)} = 0 otherwise). The event
 * time is epoch milliseconds (a non-negative integer) or ISO-8601 text with an offset; anything
 * else, or a time more than {@code maxFutureMs} ahead of the clock, is null: the record is then
 * not held for the watermark (the parser, which has the last word, rejects or buffers it).
 */
public class EventKeys implements MapFunction<Row, Row> {

    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();

    private final int batchKeys;
    private final long maxFutureMs;
    private transient CRC32 crc;

    public EventKeys(int batchKeys, long maxFutureMs) {
        this.batchKeys = batchKeys;
        this.maxFutureMs = maxFutureMs;
    }

    /** What {@link #read} finds in a raw event. */
    static final class Fields {
        String customerId;
        Long eventTime; // null: none, unreadable, or more than maxFutureMs ahead of the clock
        boolean whole; // the object was read to its end (not cut short, not garbage inside)
    }

    /** The top-level customer id and event time of a raw event, in one streaming pass. */
    static Fields read(byte[] value, long maxFutureMs) {
        Fields f = new Fields();
        if (value == null) {
            return f;
        }
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() == JsonToken.START_OBJECT) {
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.getCurrentName();
                    JsonToken v = p.nextToken();
                    if ("customer_id".equals(name)) {
                        f.customerId = v == JsonToken.VALUE_STRING ? p.getText() : null;
                    } else if ("event_time".equals(name)) {
                        f.eventTime = eventTime(p, v);
                    } else {
                        p.skipChildren();
                    }
                }
                f.whole = true;
            }
        } catch (IOException | RuntimeException e) {
            // Not JSON, or cut short: what was read stands (whole stays false).
        }
        if (f.eventTime != null && f.eventTime > System.currentTimeMillis() + maxFutureMs) {
            f.eventTime = null;
        }
        return f;
    }

    @Override
    public Row map(Row row) {
        if (crc == null) {
            crc = new CRC32();
        }
        byte[] value = (byte[]) row.getField(4);
        // What was read of a broken record stands: the parser has the last word on it.
        Fields f = read(value, maxFutureMs);
        String customerId = f.customerId;
        Long eventTime = f.eventTime;
        Instant kafkaTs = (Instant) row.getField(2);
        byte[] record = record(
                (Integer) row.getField(0),
                (Long) row.getField(1),
                kafkaTs == null ? null : kafkaTs.toEpochMilli(),
                (byte[]) row.getField(3),
                value);
        return Row.of(KeyGroupBatcher.batchKey(customerId, batchKeys, crc), eventTime, record);
    }

    /** Bytes of a record's header before its key and value: partition, offset, timestamp, and the
     * two lengths. */
    static final int HEADER = 4 + 8 + 8 + 4 + 4;
    /** The timestamp field of a record without one. */
    static final long NO_TIMESTAMP = Long.MIN_VALUE;

    /**
     * A source record in the batches' binary layout (big-endian; Python's
     * {@code batching.decode_batch} reads it): partition int32, offset int64, Kafka timestamp in
     * epoch ms int64 ({@link #NO_TIMESTAMP} when there is none), key length int32, value length
     * int32 (-1 for null), then the key's and the value's bytes as they came from Kafka. Records
     * are self-delimiting: a batch is their concatenation.
     */
    static byte[] record(Integer partition, Long offset, Long timestamp, byte[] key, byte[] value) {
        int keyLength = key == null ? -1 : key.length;
        int valueLength = value == null ? -1 : value.length;
        ByteBuffer out = ByteBuffer.allocate(HEADER + Math.max(keyLength, 0) + Math.max(valueLength, 0));
        out.putInt(partition == null ? -1 : partition);
        out.putLong(offset == null ? -1 : offset);
        out.putLong(timestamp == null ? NO_TIMESTAMP : timestamp);
        out.putInt(keyLength);
        out.putInt(valueLength);
        if (key != null) {
            out.put(key);
        }
        if (value != null) {
            out.put(value);
        }
        return out.array();
    }

    static Long eventTime(JsonParser p, JsonToken v) throws IOException {
        if (v == JsonToken.VALUE_NUMBER_INT) {
            if (p.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
                return null;
            }
            long ms = p.getLongValue();
            return ms >= 0 && ms < 1_000_000_000_000_000L ? ms : null;
        }
        if (v == JsonToken.VALUE_STRING) {
            return isoTime(p.getText());
        }
        p.skipChildren();
        return null;
    }

    /** Epoch ms of ISO-8601 text with an offset (e.g. 2026-11-22T10:00:00.123+01:00), else null. */
    static Long isoTime(String text) {
        if (text.length() < 20 || text.charAt(10) != 'T') {
            return null;
        }
        try {
            return OffsetDateTime.parse(text).toInstant().toEpochMilli();
        } catch (DateTimeParseException | ArithmeticException e) {
            return null;
        }
    }
}
