package dev.segments.flink;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.zip.CRC32;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.types.Row;

/**
 * Packs source records into one record per batch key, so the Python segment function is called
 * once per batch instead of once per event (each Python call costs far more than the work per
 * event it would do).
 *
 * <p>Input rows: (customer_id STRING or null, partition INT, offset BIGINT, timestamp BIGINT,
 * key BYTES, value BYTES). Output rows: (batch_key INT, (batch_key INT, records STRING)): the
 * shape PyFlink's keyed functions take after {@code KeyByKeySelector}. The batch key is
 * {@code crc32(utf8(customer_id)) mod batchKeys}; Python computes the same function.
 *
 * <p>Records are written as text: records separated by U+001E, fields by U+001F: partition,
 * offset, timestamp, key, value. Key and value start with a tag: {@code t} text follows,
 * {@code b} base64 of bytes that are not valid UTF-8 or contain a separator, {@code -} null.
 *
 * <p>Nothing is held across an event-time or checkpoint boundary, so the operator needs no
 * state and loses nothing: every buffered record is emitted before a watermark is forwarded (the
 * segment function must see an event before the watermark that covers it), before a checkpoint
 * barrier ({@link #prepareSnapshotPreBarrier}, also on stop-with-savepoint), at end of input, and
 * when the buffer reaches {@code maxRecords} or has waited {@code maxDelayMs}.
 *
 * <p>Before a checkpoint barrier and at end of input it also sends a <em>sync marker</em> to
 * every batch key: a row with an empty record string. The segment function keeps the states it
 * changed in memory and writes them to Flink state when a marker arrives; since every channel's
 * markers precede its barrier, and aligned checkpoints process nothing after a channel's barrier
 * until all barriers are in, the snapshot holds every change. (Unaligned checkpoints would break
 * this: the job does not enable them.)
 */
public class KeyGroupBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 1L;
    private static final char RECORD_SEP = '\u001e';
    private static final char FIELD_SEP = '\u001f';

    private final int batchKeys;
    private final int maxRecords;
    private final long maxDelayMs;

    private transient StringBuilder[] buffers;
    private transient int buffered;
    private transient boolean timerArmed;
    private transient CRC32 crc;
    private transient CharsetDecoder decoder;
    private transient StreamRecord<Row> reuse;

    public KeyGroupBatcher(int batchKeys, int maxRecords, long maxDelayMs) {
        if (batchKeys < 1 || maxRecords < 1 || maxDelayMs < 1) {
            throw new IllegalArgumentException("batchKeys, maxRecords and maxDelayMs must be positive");
        }
        this.batchKeys = batchKeys;
        this.maxRecords = maxRecords;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffers = new StringBuilder[batchKeys];
        crc = new CRC32();
        decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        reuse = new StreamRecord<>(null);
    }

    /** The batch key of a customer id; must equal {@code flink_jobs.batching.batch_key}. */
    public static int batchKey(String customerId, int batchKeys, CRC32 crc) {
        if (customerId == null) {
            return 0;
        }
        crc.reset();
        crc.update(customerId.getBytes(StandardCharsets.UTF_8));
        return (int) (crc.getValue() % batchKeys);
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        int key = batchKey((String) row.getField(0), batchKeys, crc);
        StringBuilder sb = buffers[key];
        if (sb == null) {
            sb = new StringBuilder(4096);
            buffers[key] = sb;
        } else {
            sb.append(RECORD_SEP);
        }
        sb.append(row.getField(1)).append(FIELD_SEP);
        sb.append(row.getField(2)).append(FIELD_SEP);
        Object ts = row.getField(3);
        sb.append(ts == null ? "" : ts.toString()).append(FIELD_SEP);
        appendBytes(sb, (byte[]) row.getField(4));
        sb.append(FIELD_SEP);
        appendBytes(sb, (byte[]) row.getField(5));
        buffered++;
        if (buffered >= maxRecords) {
            flush();
        } else if (!timerArmed) {
            timerArmed = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxDelayMs, t -> {
                timerArmed = false;
                flush();
            });
        }
    }

    private void appendBytes(StringBuilder sb, byte[] bytes) {
        if (bytes == null) {
            sb.append('-');
            return;
        }
        try {
            CharBuffer chars = decoder.reset().decode(ByteBuffer.wrap(bytes));
            for (int i = 0; i < chars.length(); i++) {
                char c = chars.charAt(i);
                if (c == RECORD_SEP || c == FIELD_SEP) {
                    throw new CharacterCodingException();
                }
            }
            sb.append('t').append(chars);
        } catch (CharacterCodingException e) {
            sb.append('b').append(Base64.getEncoder().encodeToString(bytes));
        }
    }

    private void flush() {
        if (buffered == 0) {
            return;
        }
        for (int key = 0; key < batchKeys; key++) {
            StringBuilder sb = buffers[key];
            if (sb != null) {
                Integer k = key;
                output.collect(reuse.replace(Row.of(k, Row.of(k, sb.toString()))));
                buffers[key] = null;
            }
        }
        buffered = 0;
    }

    private void syncMarkers() {
        for (int key = 0; key < batchKeys; key++) {
            Integer k = key;
            output.collect(reuse.replace(Row.of(k, Row.of(k, ""))));
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void processWatermarkStatus(WatermarkStatus status) throws Exception {
        flush();
        super.processWatermarkStatus(status);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        syncMarkers();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() throws Exception {
        flush();
        syncMarkers();
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }
}
