package dev.segments.flink;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.PriorityQueue;
import java.util.function.BiFunction;
import java.util.stream.Collectors;
import java.util.zip.CRC32;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.types.Row;

/**
 * Holds source records until the watermark passes their event time, and packs them into one
 * record per batch key, so the Python segment function is called once per batch instead of once
 * per event, and sees each event once, when it can be applied.
 *
 * <p>Keyed by batch key ({@code crc32(utf8(customer_id)) mod batchKeys}, Python computes the same
 * function), right before the segment function, whose input this operator's output is
 * (reinterpreted as keyed by the same key, no shuffle): so the watermark it sees is the one the
 * segment function will see, and a batch can carry it.
 *
 * <p>Input rows, from {@link EventKeys}: (batch key INT, event time BIGINT or null, partition INT,
 * offset BIGINT, timestamp BIGINT, key BYTES, value BYTES), keyed by {@code KeyByKeySelector}.
 * Output rows: (batch_key INT, (batch_key INT, records STRING, watermark BIGINT)): the shape
 * PyFlink's keyed functions take after {@code KeyByKeySelector}. {@code watermark} is one this
 * operator has forwarded or forwards right after the batch, and every held record up to it has
 * been sent (in this batch or before): so every event of the batch key up to it has arrived, and
 * the segment function may apply them at once instead of buffering them for a timer. (A batch
 * sent while a watermark releases held records, because it is full, carries the previous
 * watermark: records the new one passes may still wait in the queue.)
 *
 * <p>Records are written as text: records separated by U+001E, fields by U+001F: partition,
 * offset, timestamp, key, value. Key and value start with a tag: {@code t} text follows,
 * {@code b} base64 of bytes that are not valid UTF-8 or contain a separator, {@code -} null.
 *
 * <p>A record whose event time is ahead of the watermark is held (in event-time order) and
 * released just before the watermark that passes it is forwarded; other records (late ones,
 * and records the source could give no event time, which the parser will reject) are sent at
 * once. Held records are part of the checkpoint (keyed list state, written before the barrier);
 * when more than {@code maxHeld} wait (a stuck watermark), the oldest are released early, and
 * the segment function buffers them itself. Python stays the authority on event time: the
 * holding only saves it a call, and a state write, per event.
 *
 * <p>Records ready to send wait at most {@code maxDelayMs} or {@code maxRecords}; nothing ready
 * is held across a watermark or a checkpoint barrier. Before a barrier and at end of input a
 * <em>sync marker</em> (a row with an empty record string) goes to every batch key of this
 * subtask. The segment function keeps the states it changed in memory and writes them to Flink
 * state when a marker arrives; the marker precedes the barrier on the same channel, so the
 * snapshot holds every change. (Unaligned checkpoints would break this: the job does not enable
 * them.)
 *
 * <p>After each release (the batches a watermark, a full buffer or the delay sends, and the
 * timers a forwarded watermark fires downstream) an <em>end marker</em> (a row whose record
 * string is null) goes to one batch key of this subtask: the segment function holds the
 * membership changes of its calls until then and writes them to Redis in one pipeline.
 */
public class KeyGroupBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 2L;
    private static final char RECORD_SEP = '\u001e';
    private static final char FIELD_SEP = '\u001f';
    // Held records: their 8-byte event time, then the record as UTF-8. Checkpoints of earlier
    // versions hold strings ("time\u001frecord") under LEGACY_HELD_STATE, read on restore: Flink
    // writes strings to a checkpoint one character at a time, most of the JVM's checkpoint CPU.
    private static final String HELD_STATE = "held-records-utf8";
    private static final String LEGACY_HELD_STATE = "held-records";

    private static final class Held {
        final long time;
        final long seq;
        final int key;
        final String record;

        Held(long time, long seq, int key, String record) {
            this.time = time;
            this.seq = seq;
            this.key = key;
            this.record = record;
        }
    }

    private final int batchKeys;
    private final int maxRecords;
    private final long maxDelayMs;
    private final int maxHeld;

    private transient StringBuilder[] buffers;
    private transient int buffered;
    private transient boolean timerArmed;
    private transient CharsetDecoder decoder;
    private transient StreamRecord<Row> reuse;
    private transient PriorityQueue<Held> held;
    private transient long seq;
    private transient long watermark;
    private transient long released; // every held record up to this watermark has been sent
    private transient int[] owned;
    private transient ListState<byte[]> heldState;
    private transient boolean restored;

    public KeyGroupBatcher(int batchKeys, int maxRecords, long maxDelayMs, int maxHeld) {
        if (batchKeys < 1 || maxRecords < 1 || maxDelayMs < 1 || maxHeld < 1) {
            throw new IllegalArgumentException("batchKeys, maxRecords, maxDelayMs and maxHeld must be positive");
        }
        this.batchKeys = batchKeys;
        this.maxRecords = maxRecords;
        this.maxDelayMs = maxDelayMs;
        this.maxHeld = maxHeld;
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

    static Row keyRow(int key) {
        Row row = new Row(1);
        row.setField(0, key);
        return row;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        heldState = getKeyedStateStore().getListState(
                new ListStateDescriptor<>(HELD_STATE, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO));
        restored = context.isRestored();
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffers = new StringBuilder[batchKeys];
        decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        reuse = new StreamRecord<>(null);
        held = new PriorityQueue<>((a, b) -> a.time != b.time ? Long.compare(a.time, b.time) : Long.compare(a.seq, b.seq));
        watermark = Long.MIN_VALUE;
        released = Long.MIN_VALUE;
        int maxParallelism = getRuntimeContext().getTaskInfo().getMaxNumberOfParallelSubtasks();
        int parallelism = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
        int index = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        List<Integer> mine = new ArrayList<>();
        for (int key = 0; key < batchKeys; key++) {
            if (KeyGroupRangeAssignment.assignKeyToParallelOperator(keyRow(key), maxParallelism, parallelism) == index) {
                mine.add(key);
            }
        }
        owned = mine.stream().mapToInt(Integer::intValue).toArray();
        if (restored) {
            restoreHeld(HELD_STATE, heldState, (entry, key) -> new Held(
                    ByteBuffer.wrap(entry, 0, 8).getLong(), seq++, key,
                    new String(entry, 8, entry.length - 8, StandardCharsets.UTF_8)));
            ListState<String> legacy = getKeyedStateStore().getListState(
                    new ListStateDescriptor<>(LEGACY_HELD_STATE, BasicTypeInfo.STRING_TYPE_INFO));
            restoreHeld(LEGACY_HELD_STATE, legacy, (entry, key) -> {
                int cut = entry.indexOf(FIELD_SEP);
                return new Held(Long.parseLong(entry.substring(0, cut)), seq++, key, entry.substring(cut + 1));
            });
        }
    }

    /** Reads the held records of every batch key in {@code name} into the queue, and clears them
     * there (until the next snapshot writes the queue under HELD_STATE). */
    private <T> void restoreHeld(String name, ListState<T> state, BiFunction<T, Integer, Held> decode)
            throws Exception {
        List<Row> keys = getKeyedStateBackend().<VoidNamespace>getKeys(name, VoidNamespace.INSTANCE)
                .map(k -> (Row) k).collect(Collectors.toList());
        for (Row k : keys) {
            setCurrentKey(k);
            Iterable<T> stored = state.get();
            if (stored != null) {
                for (T entry : stored) {
                    held.add(decode.apply(entry, (Integer) k.getField(0)));
                }
            }
            state.clear();
        }
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        int key = (Integer) row.getField(0);
        StringBuilder sb = new StringBuilder(256);
        sb.append(row.getField(2)).append(FIELD_SEP);
        sb.append(row.getField(3)).append(FIELD_SEP);
        Object ts = row.getField(4);
        sb.append(ts == null ? "" : ts.toString()).append(FIELD_SEP);
        appendBytes(sb, (byte[]) row.getField(5));
        sb.append(FIELD_SEP);
        appendBytes(sb, (byte[]) row.getField(6));
        Long eventTime = (Long) row.getField(1);
        if (eventTime != null && eventTime > watermark) {
            held.add(new Held(eventTime, seq++, key, sb.toString()));
            if (held.size() > maxHeld) {
                Held oldest = held.poll();
                ready(oldest.key, oldest.record);
            }
        } else {
            ready(key, sb);
        }
    }

    private void ready(int key, CharSequence record) {
        StringBuilder sb = buffers[key];
        if (sb == null) {
            sb = new StringBuilder(4096);
            buffers[key] = sb;
        } else {
            sb.append(RECORD_SEP);
        }
        sb.append(record);
        buffered++;
        if (buffered >= maxRecords) {
            flush();
            endMarker();
        } else if (!timerArmed) {
            timerArmed = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxDelayMs, t -> {
                timerArmed = false;
                if (flush()) {
                    endMarker();
                }
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

    private void release(long upTo) {
        while (!held.isEmpty() && held.peek().time <= upTo) {
            Held h = held.poll();
            ready(h.key, h.record);
        }
    }

    /** Sends every buffered batch; false if there was none. */
    private boolean flush() {
        if (buffered == 0) {
            return false;
        }
        Long mark = released;
        for (int key = 0; key < batchKeys; key++) {
            StringBuilder sb = buffers[key];
            if (sb != null) {
                Integer k = key;
                output.collect(reuse.replace(Row.of(k, Row.of(k, sb.toString(), mark))));
                buffers[key] = null;
            }
        }
        buffered = 0;
        return true;
    }

    /**
     * Tells this subtask's segment function that a release is complete: the batches just sent,
     * and the timers the watermark just forwarded fires. It writes the membership changes of
     * all of them at once, instead of one Redis round trip per batch key.
     */
    private void endMarker() {
        if (owned.length > 0) {
            Integer k = owned[0];
            output.collect(reuse.replace(Row.of(k, Row.of(k, null, released))));
        }
    }

    private void syncMarkers() {
        Long mark = released;
        for (int key : owned) {
            Integer k = key;
            output.collect(reuse.replace(Row.of(k, Row.of(k, "", mark))));
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        watermark = Math.max(watermark, mark.getTimestamp());
        release(watermark);
        released = watermark;
        flush();
        super.processWatermark(mark);
        endMarker();
    }

    @Override
    public void processWatermarkStatus(WatermarkStatus status) throws Exception {
        if (flush()) {
            endMarker();
        }
        super.processWatermarkStatus(status);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        syncMarkers();
        // The held records, per batch key, into keyed state (an empty list clears a key).
        List<List<byte[]>> byKey = new ArrayList<>(batchKeys);
        for (int key = 0; key < batchKeys; key++) {
            byKey.add(null);
        }
        for (Held h : held) {
            List<byte[]> list = byKey.get(h.key);
            if (list == null) {
                list = new ArrayList<>();
                byKey.set(h.key, list);
            }
            byte[] record = h.record.getBytes(StandardCharsets.UTF_8);
            list.add(ByteBuffer.allocate(8 + record.length).putLong(h.time).put(record).array());
        }
        for (int key : owned) {
            setCurrentKey(keyRow(key));
            List<byte[]> list = byKey.get(key);
            if (list == null) {
                heldState.clear();
            } else {
                heldState.update(list);
            }
        }
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() throws Exception {
        release(Long.MAX_VALUE);
        flush();
        syncMarkers();
    }

    @Override
    public void finish() throws Exception {
        release(Long.MAX_VALUE);
        flush();
        super.finish();
    }
}
