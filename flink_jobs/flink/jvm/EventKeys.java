package dev.segments.flink;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.zip.CRC32;

import org.apache.flink.api.common.functions.RichMapFunction;
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
 * time is the one {@link EventGate} finds, null when the gate does not pass the record (the
 * catalogue's parser would reject it, or its time is too far ahead): the record is then not held
 * for the watermark and reaches the parser, which has the last word, at once.
 */
public class EventKeys extends RichMapFunction<Row, Row> {

    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();

    private final int batchKeys;
    private final String gateSpec;
    private final String gateChannel;
    private transient CRC32 crc;
    private transient GateFollower.LiveGate gate;

    /** {@code gateSpec}: the catalogue as {@link EventGate} reads it ({@code serde.gate_spec});
     * {@code gateChannel}: where the job announces the next ({@link GateFollower}; empty: never). */
    public EventKeys(int batchKeys, String gateSpec, String gateChannel) {
        this.batchKeys = batchKeys;
        this.gateSpec = gateSpec;
        this.gateChannel = gateChannel;
        EventGate.of(gateSpec); // a bad spec fails where the job is built, not in a task
    }

    @Override
    public void close() throws Exception {
        if (gate != null) {
            gate.close(); // the last one in the TaskManager stops the gate's follower
            gate = null;
        }
        super.close();
    }

    /** The top-level customer id of a raw event (the last one, if a string), or null; what was
     * read of a broken record stands. */
    static String customerId(byte[] value) {
        String customerId = null;
        if (value == null) {
            return null;
        }
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() == JsonToken.START_OBJECT) {
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.currentName();
                    JsonToken v = p.nextToken();
                    if ("customer_id".equals(name)) {
                        customerId = v == JsonToken.VALUE_STRING ? p.getText() : null;
                    } else {
                        p.skipChildren();
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            // Not JSON, or cut short.
        }
        return customerId;
    }

    @Override
    public Row map(Row row) {
        if (crc == null) {
            crc = new CRC32();
            gate = new GateFollower.LiveGate(EventGate.of(gateSpec), gateChannel, true);
        }
        byte[] value = (byte[]) row.getField(4);
        String customerId;
        Long eventTime;
        long now = System.currentTimeMillis();
        EventGate.Verdict v = gate.at(now).check(value, now);
        if (v != null) {
            customerId = v.customerId;
            eventTime = v.eventTime;
        } else {
            // Bound for the dead-letter topic: not held for the watermark, keyed by what can be
            // read of it (the parser has the last word).
            customerId = customerId(value);
            eventTime = null;
        }
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
}
