package dev.segments.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Function;
import java.util.function.ToLongFunction;
import java.util.stream.Collectors;
import java.util.zip.CRC32;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.metrics.Counter;
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
 * segment function will see, and a batch can carry it. The Flink key of batch key {@code i} is
 * the row {@code (placed[i])} ({@link #placedKeys}): in the balanced layout, a value chosen so
 * that the batch keys fall evenly over the key groups, and so over the parallel tasks (with
 * {@code (i)} itself, 16 batch keys split 11/5 over 2 tasks).
 *
 * <p>Input rows, from {@link EventKeys}: (batch key INT, event time BIGINT or null, record BYTES),
 * keyed by {@link PlacedKey}; the record is in {@link EventKeys#record}'s binary layout.
 * Output rows: (placed[batch_key] INT, (batch_key INT, records BYTES, watermark BIGINT)): the shape
 * PyFlink's keyed functions take after {@code KeyByKeySelector}. {@code records} is the
 * concatenation of the batch's records (they are self-delimiting). {@code watermark} is one this
 * operator has forwarded or forwards right after the batch, and every held record up to it has
 * been sent (in this batch or before): so every event of the batch key up to it has arrived, and
 * the segment function may apply them at once instead of buffering them for a timer. The records
 * a watermark releases go out as one batch per batch key, however many there are, so that batch
 * carries the new watermark: {@code maxRecords} bounds the batches of records sent as they come,
 * not a release. (Split, its early parts would carry the previous watermark, and the segment
 * function would buffer their events for a timer.)
 *
 * <p>A record whose event time is ahead of the watermark is held and released just before the
 * watermark that passes it is forwarded; other records (late ones, and records the source could
 * give no event time, which the parser will reject) are sent at once. The records one watermark
 * releases go out in arrival order within each 64 ms of event time, not in event-time order: the
 * segment function takes all events of a customer in a call before it applies any, in event-time
 * order. Held records are
 * part of the checkpoint (keyed list state, written before the barrier); when more than
 * {@code maxHeld} wait (a stuck watermark), the oldest tenth is released early, and the segment
 * function buffers them itself. Python stays the authority on event time: the holding only saves
 * it a call, and a state write, per event.
 *
 * <p>Records ready to send wait at most {@code maxDelayMs} or {@code maxRecords}; nothing ready
 * is held across a watermark or a checkpoint barrier. Before a barrier and at end of input a
 * <em>sync marker</em> (a row with empty records) goes to every batch key of this subtask. The
 * segment function keeps the states it changed in memory and writes them to Flink state when a
 * marker arrives; the marker precedes the barrier on the same channel, so the snapshot holds
 * every change. (Unaligned checkpoints would break this: the job does not enable them.)
 *
 * <p>Catching up (a watermark more than {@code catchUpLagMs} behind the clock), watermarks are
 * applied at most every {@code catchUpReleaseMs}: one that comes sooner after the last applied
 * waits, and a later one replaces it, until a processing-time timer applies the latest. Each
 * applied watermark costs a Python call per batch key with records, an end marker and the timers
 * it fires; so a short watermark interval, which live is what keeps a change's wait short, does not
 * multiply the calls of a replay. The final watermark (end of input) is applied at once.
 *
 * <p>After each release (the batches a watermark, a full buffer or the delay sends, and the
 * timers a forwarded watermark fires downstream) an <em>end marker</em> (a row whose records are
 * null) goes to one batch key of this subtask: the segment function holds the membership changes
 * of its calls until then and writes them to Redis in one pipeline.
 */
public class KeyGroupBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 5L;
    // Held records in a checkpoint: their 8-byte event time, then the record (EventKeys.record).
    // Checkpoints of earlier versions hold the record as text (the batches' text format of those
    // versions): as an 8-byte time and UTF-8 under HELD_TEXT_STATE, or as a string
    // "time\u001ftext" under HELD_STRING_STATE. Both are read on restore.
    private static final String HELD_STATE = "held-records-bin";
    private static final String HELD_TEXT_STATE = "held-records-utf8";
    private static final String HELD_STRING_STATE = "held-records";
    // The number of batch keys the state was written with (operator state, one entry per subtask).
    // Customers are stored under their batch key, here and in the segment function's state:
    // restored with another number, they would be looked for under other keys and start afresh.
    private static final String BATCH_KEYS_STATE = "batch-keys";
    // The layout ("balanced:<batch keys>:<max parallelism>:<crc of the placement>", or
    // "identity:<batch keys>"), one entry per subtask. Versions before it wrote only the number,
    // under BATCH_KEYS_STATE, and used the identity layout; the balanced layout writes minus the
    // number there, so that those versions refuse its state instead of reading it under other keys.
    private static final String LAYOUT_STATE = "batch-key-layout";
    private static final byte[] EMPTY = new byte[0];

    private final int batchKeys;
    private final int[] placed; // the Flink key of each batch key
    private final String layout;
    private final int maxRecords;
    private final long maxDelayMs;
    private final int maxHeld;
    private final long catchUpLagMs;
    private final long catchUpReleaseMs;

    private transient Batch[] batches;
    private transient int buffered;
    private transient boolean timerArmed;
    private transient StreamRecord<Row> reuse;
    // The held records in buckets of 2^BUCKET_SHIFT ms of event time, each unordered (arrival
    // order). A release takes whole buckets and scans only the one the watermark falls in: live, a
    // watermark releases a small share of the bound's worth of records held, and scanning them all
    // (or a priority queue's sifting) cost most of this task's time (bench/HISTORY.md).
    private static final int BUCKET_SHIFT = 6;
    private transient TreeMap<Long, Held> held;
    private transient int heldCount;
    private transient long lastBucket; // the bucket of the last record held, and its Held
    private transient Held lastHeld;
    private transient long watermark;
    private transient long released; // every held record up to this watermark has been sent
    private transient int[] owned;
    private transient HashMap<Integer, Integer> batchKeyOf; // placed -> batch key
    private transient ListState<byte[]> heldState;
    private transient boolean restored;
    private transient long lastApplied; // processing time of the last watermark applied
    private transient Watermark pending; // a catching-up watermark; a timer is armed while set
    private transient Counter deferred; // metric watermarksDeferred: non-zero rate = catching up

    /** The held records of one bucket of event time. */
    private static final class Held {
        long[] times = new long[16];
        int[] keys = new int[16];
        byte[][] records = new byte[16][];
        int count;

        void add(long time, int key, byte[] record) {
            if (count == times.length) {
                times = Arrays.copyOf(times, 2 * count);
                keys = Arrays.copyOf(keys, 2 * count);
                records = Arrays.copyOf(records, 2 * count);
            }
            times[count] = time;
            keys[count] = key;
            records[count] = record;
            count++;
        }
    }

    /** One batch key's records since its last batch, concatenated. */
    private static final class Batch {
        byte[] bytes = new byte[4096];
        int size;

        void add(byte[] record) {
            if (size + record.length > bytes.length) {
                bytes = Arrays.copyOf(bytes, Math.max(2 * bytes.length, size + record.length));
            }
            System.arraycopy(record, 0, bytes, size, record.length);
            size += record.length;
        }
    }

    /** {@code catchUpLagMs}: a watermark further behind the clock is a replay or a backlog, not
     * live traffic (the segment function's write-behind passes its own bound, so the two agree);
     * {@code catchUpReleaseMs}: while catching up, the shortest time between two watermarks
     * applied (0: every watermark at once). */
    public KeyGroupBatcher(int batchKeys, int[] placed, String layout, int maxRecords, long maxDelayMs, int maxHeld,
            long catchUpLagMs, long catchUpReleaseMs) {
        if (placed.length != batchKeys) {
            throw new IllegalArgumentException("placed must hold one Flink key per batch key");
        }
        if (batchKeys < 1 || maxRecords < 1 || maxDelayMs < 1 || maxHeld < 1) {
            throw new IllegalArgumentException("batchKeys, maxRecords, maxDelayMs and maxHeld must be positive");
        }
        if (catchUpLagMs < 0 || catchUpReleaseMs < 0) {
            throw new IllegalArgumentException("catchUpLagMs and catchUpReleaseMs must not be negative");
        }
        this.catchUpLagMs = catchUpLagMs;
        this.batchKeys = batchKeys;
        this.placed = placed.clone();
        this.layout = layout;
        this.maxRecords = maxRecords;
        this.maxDelayMs = maxDelayMs;
        this.maxHeld = maxHeld;
        this.catchUpReleaseMs = catchUpReleaseMs;
    }

    /** The batch key of a customer id; must equal {@code flink_jobs.runtime.batching.batch_key}. */
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

    /**
     * The Flink key (the value in the key row) of each batch key. Identity: the batch key itself.
     * Balanced: batch key {@code i} goes to key group {@code i * maxParallelism / batchKeys}, as
     * the smallest value not taken whose row hashes there; key groups go to parallel tasks in
     * contiguous ranges, so every task gets {@code batchKeys / parallelism} batch keys, give or take
     * one. Deterministic (Flink's row hash and key-group assignment), and checked on restore by
     * {@link #layoutOf}: a Flink whose hash differed would find the state under other keys.
     */
    public static int[] placedKeys(int batchKeys, int maxParallelism, boolean balanced) {
        int[] placed = new int[batchKeys];
        if (!balanced) {
            for (int i = 0; i < batchKeys; i++) {
                placed[i] = i;
            }
            return placed;
        }
        // Batch key i's key group rises with i, so the batch keys waiting for group g are a run,
        // next[g] up to end[g] (both 0 where none is).
        int[] next = new int[maxParallelism];
        int[] end = new int[maxParallelism];
        for (int i = batchKeys - 1; i >= 0; i--) {
            int g = (int) ((long) i * maxParallelism / batchKeys);
            if (end[g] == 0) {
                end[g] = i + 1;
            }
            next[g] = i;
        }
        int left = batchKeys;
        for (int value = 0; left > 0; value++) {
            int g = KeyGroupRangeAssignment.assignToKeyGroup(keyRow(value), maxParallelism);
            if (next[g] < end[g]) {
                placed[next[g]++] = value;
                left--;
            }
        }
        return placed;
    }

    /** The layout string stored with the state (see LAYOUT_STATE). */
    public static String layoutOf(int[] placed, int maxParallelism, boolean balanced) {
        if (!balanced) {
            return "identity:" + placed.length;
        }
        CRC32 crc = new CRC32();
        ByteBuffer buffer = ByteBuffer.allocate(4 * placed.length);
        for (int value : placed) {
            buffer.putInt(value);
        }
        crc.update(buffer.array());
        return "balanced:" + placed.length + ":" + maxParallelism + ":" + Long.toHexString(crc.getValue());
    }

    /** Keys the rows of {@link EventKeys} (batch key first) by their batch key's Flink key. */
    public static final class PlacedKey implements KeySelector<Row, Row> {
        private static final long serialVersionUID = 1L;
        private final int[] placed;

        public PlacedKey(int[] placed) {
            this.placed = placed.clone();
        }

        @Override
        public Row getKey(Row value) {
            return keyRow(placed[(Integer) value.getField(0)]);
        }
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        heldState = bytesState(HELD_STATE);
        restored = context.isRestored();
        ListState<Integer> numbers = context.getOperatorStateStore().getUnionListState(
                new ListStateDescriptor<>(BATCH_KEYS_STATE, BasicTypeInfo.INT_TYPE_INFO));
        ListState<String> layouts = context.getOperatorStateStore().getUnionListState(
                new ListStateDescriptor<>(LAYOUT_STATE, BasicTypeInfo.STRING_TYPE_INFO));
        if (restored) {
            String stored = null;
            for (String entry : layouts.get()) {
                stored = entry;
            }
            if (stored == null) {
                // Versions before the layout state used the identity layout; those before the
                // number too, but their number is unknown ("?"): nothing to compare it with.
                stored = "identity:?";
                for (Integer number : numbers.get()) {
                    stored = "identity:" + number;
                }
            }
            boolean unknown = stored.equals("identity:?") && layout.startsWith("identity:");
            if (!unknown && !stored.equals(layout)) {
                throw new IllegalStateException(layoutMismatch(stored));
            }
        }
        layouts.update(List.of(layout));
        numbers.update(List.of(layout.startsWith("identity:") ? batchKeys : -batchKeys));
    }

    /** Why a restore with another layout stops, and how to restore instead. */
    private String layoutMismatch(String stored) {
        String[] was = stored.split(":");
        String[] is = layout.split(":");
        if ("?".equals(was[1])) {
            return "job.batch_key_layout is " + is[0] + ", but the state being restored was written by a version "
                    + "before 2026-11-25, which stored no layout and placed batch keys in the identity layout: "
                    + "customers would be looked for under other keys. Restore with --set job.batch_key_layout=identity "
                    + "--set job.batch_keys=128 (or the job.batch_keys it ran with, if not its default 128), or start "
                    + "without job.restore_from (the job's state starts empty).";
        }
        String hint = "Restore with " + ("identity".equals(was[0])
                ? "--set job.batch_key_layout=identity --set job.batch_keys=" + was[1]
                : "--set job.batch_key_layout=balanced --set job.batch_keys=" + was[1] + " --set job.max_parallelism=" + was[2])
                + ", or start without job.restore_from (the job's state starts empty).";
        String what;
        if (!was[1].equals(is[1])) {
            what = "job.batch_keys is " + is[1] + ", but the state being restored was written with job.batch_keys=" + was[1];
        } else if (!was[0].equals(is[0])) {
            what = "job.batch_key_layout is " + is[0] + ", but the state being restored was written with the "
                    + was[0] + " layout" + ("identity".equals(was[0]) ? " (versions before job.batch_key_layout)" : "");
        } else if (!was[2].equals(is[2])) {
            what = "job.max_parallelism is " + is[2] + ", but the state being restored was written with job.max_parallelism=" + was[2];
        } else {
            what = "this Flink places batch keys differently from the one that wrote the state being restored ("
                    + stored + " against " + layout + ")";
        }
        return what + ": customers are stored under their batch key's Flink key, so these settings are part of the "
                + "state layout. " + hint;
    }

    @Override
    public void open() throws Exception {
        super.open();
        batches = new Batch[batchKeys];
        reuse = new StreamRecord<>(null);
        held = new TreeMap<>();
        lastHeld = null;
        watermark = Long.MIN_VALUE;
        released = Long.MIN_VALUE;
        lastApplied = Long.MIN_VALUE;
        pending = null;
        deferred = getMetricGroup().counter("watermarksDeferred");
        int maxParallelism = getRuntimeContext().getTaskInfo().getMaxNumberOfParallelSubtasks();
        int parallelism = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
        int index = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        List<Integer> mine = new ArrayList<>();
        batchKeyOf = new HashMap<>();
        for (int key = 0; key < batchKeys; key++) {
            batchKeyOf.put(placed[key], key);
            if (KeyGroupRangeAssignment.assignKeyToParallelOperator(keyRow(placed[key]), maxParallelism, parallelism) == index) {
                mine.add(key);
            }
        }
        owned = mine.stream().mapToInt(Integer::intValue).toArray();
        if (restored) {
            restoreHeld(HELD_STATE, heldState, KeyGroupBatcher::storedTime,
                    entry -> Arrays.copyOfRange(entry, 8, entry.length));
            restoreHeld(HELD_TEXT_STATE, bytesState(HELD_TEXT_STATE), KeyGroupBatcher::storedTime,
                    entry -> fromText(new String(entry, 8, entry.length - 8, StandardCharsets.UTF_8)));
            ListState<String> strings = getKeyedStateStore().getListState(
                    new ListStateDescriptor<>(HELD_STRING_STATE, BasicTypeInfo.STRING_TYPE_INFO));
            restoreHeld(HELD_STRING_STATE, strings,
                    entry -> Long.parseLong(entry.substring(0, entry.indexOf('\u001f'))),
                    entry -> fromText(entry.substring(entry.indexOf('\u001f') + 1)));
        }
    }

    private ListState<byte[]> bytesState(String name) {
        return getKeyedStateStore().getListState(
                new ListStateDescriptor<>(name, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    /** A held record as a checkpoint stores it: its 8-byte event time, then the record. */
    static byte[] stored(long time, byte[] record) {
        return ByteBuffer.allocate(8 + record.length).putLong(time).put(record).array();
    }

    /** The event time of a {@link #stored} entry (also of the text entries of earlier versions). */
    static long storedTime(byte[] entry) {
        return ByteBuffer.wrap(entry, 0, 8).getLong();
    }

    /** Reads the held records of every batch key in {@code name}, each entry's event time and
     * record (in {@link EventKeys#record}'s layout) as the two functions give them, and clears
     * them there (until the next snapshot writes them under HELD_STATE). */
    private <T> void restoreHeld(String name, ListState<T> state, ToLongFunction<T> time, Function<T, byte[]> record)
            throws Exception {
        List<Row> keys = getKeyedStateBackend().<VoidNamespace>getKeys(name, VoidNamespace.INSTANCE)
                .map(k -> (Row) k).collect(Collectors.toList());
        for (Row k : keys) {
            setCurrentKey(k);
            Iterable<T> entries = state.get();
            if (entries != null) {
                for (T entry : entries) {
                    hold(time.applyAsLong(entry), batchKeyOf.get((Integer) k.getField(0)), record.apply(entry));
                }
            }
            state.clear();
        }
    }

    /**
     * A record in the text format of earlier versions ("partition\u001foffset\u001ftimestamp
     * \u001fkey\u001fvalue", key and value tagged: {@code t} text, {@code b} base64, {@code -}
     * null) in {@link EventKeys#record}'s layout.
     */
    public static byte[] fromText(String text) {
        String[] f = text.split("\u001f", 5);
        if (f.length != 5) {
            throw new IllegalArgumentException("not a held record of an earlier version: " + text);
        }
        return EventKeys.record(
                Integer.valueOf(f[0]),
                Long.valueOf(f[1]),
                f[2].isEmpty() ? null : Long.valueOf(f[2]),
                fromTagged(f[3]),
                fromTagged(f[4]));
    }

    private static byte[] fromTagged(String tagged) {
        if (tagged.startsWith("t")) {
            return tagged.substring(1).getBytes(StandardCharsets.UTF_8);
        }
        if (tagged.startsWith("b")) {
            return Base64.getDecoder().decode(tagged.substring(1));
        }
        return null;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        int key = (Integer) row.getField(0);
        Long eventTime = (Long) row.getField(1);
        byte[] record = (byte[]) row.getField(2);
        if (eventTime != null && eventTime > watermark) {
            hold(eventTime, key, record);
            if (heldCount > maxHeld) {
                releaseOldest();
            }
        } else {
            ready(key, record);
        }
    }

    private void hold(long time, int key, byte[] record) {
        long bucket = time >> BUCKET_SHIFT;
        if (lastHeld == null || bucket != lastBucket) {
            lastHeld = held.computeIfAbsent(bucket, b -> new Held());
            lastBucket = bucket;
        }
        lastHeld.add(time, key, record);
        heldCount++;
    }

    /** The watermark is stuck: sends the oldest tenth of the held records (at least one). */
    private void releaseOldest() {
        int target = heldCount - (maxHeld - maxHeld / 10); // how many to send
        int before = 0;
        for (Held h : held.values()) {
            if (before + h.count >= target) {
                long[] times = Arrays.copyOf(h.times, h.count);
                Arrays.sort(times);
                release(times[target - before - 1]);
                break;
            }
            before += h.count;
        }
        flush();
        endMarker();
    }

    /** Adds a record to its batch key's batch (sent by the next flush). */
    private void add(int key, byte[] record) {
        Batch batch = batches[key];
        if (batch == null) {
            batch = batches[key] = new Batch();
        }
        batch.add(record);
        buffered++;
    }

    /** A record to send as it comes: in a batch within {@code maxRecords} and {@code maxDelayMs}. */
    private void ready(int key, byte[] record) {
        add(key, record);
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

    /** Moves the held records up to {@code upTo} to their batches (bucket by bucket, each in
     * arrival order); the caller flushes. */
    private void release(long upTo) {
        while (!held.isEmpty()) {
            Map.Entry<Long, Held> first = held.firstEntry();
            if (first.getKey() << BUCKET_SHIFT > upTo) {
                return;
            }
            Held h = first.getValue();
            int kept = 0;
            for (int i = 0; i < h.count; i++) {
                if (h.times[i] <= upTo) {
                    add(h.keys[i], h.records[i]);
                } else {
                    h.times[kept] = h.times[i];
                    h.keys[kept] = h.keys[i];
                    h.records[kept] = h.records[i];
                    kept++;
                }
            }
            heldCount -= h.count - kept;
            if (kept > 0) {
                // The watermark falls in this bucket: every later bucket is ahead of it.
                Arrays.fill(h.records, kept, h.count, null);
                h.count = kept;
                return;
            }
            held.pollFirstEntry();
            if (h == lastHeld) {
                lastHeld = null;
            }
        }
    }

    /** Sends every buffered batch; false if there was none. */
    private boolean flush() {
        if (buffered == 0) {
            return false;
        }
        Long mark = released;
        for (int key = 0; key < batchKeys; key++) {
            Batch batch = batches[key];
            if (batch != null && batch.size > 0) {
                output.collect(reuse.replace(Row.of(placed[key], Row.of(key, Arrays.copyOf(batch.bytes, batch.size), mark))));
                batch.size = 0;
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
            int k = owned[0];
            output.collect(reuse.replace(Row.of(placed[k], Row.of(k, null, released))));
        }
    }

    private void syncMarkers() {
        Long mark = released;
        for (int key : owned) {
            output.collect(reuse.replace(Row.of(placed[key], Row.of(key, EMPTY, mark))));
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        long now = getProcessingTimeService().getCurrentProcessingTime();
        long time = mark.getTimestamp();
        if (catchUpReleaseMs > 0 && time != Long.MAX_VALUE && now - time > catchUpLagMs
                && lastApplied != Long.MIN_VALUE && now - lastApplied < catchUpReleaseMs) {
            if (pending == null) {
                // Applies whatever is pending when it fires (nothing, if a watermark came after
                // the interval and was applied at once).
                getProcessingTimeService().registerTimer(lastApplied + catchUpReleaseMs, t -> {
                    Watermark latest = pending;
                    if (latest != null) {
                        pending = null;
                        apply(latest);
                    }
                });
            }
            pending = mark;
            deferred.inc();
            return;
        }
        pending = null;
        apply(mark);
    }

    /** Releases the held records up to {@code mark}, sends them, then forwards it. */
    private void apply(Watermark mark) throws Exception {
        lastApplied = getProcessingTimeService().getCurrentProcessingTime();
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
        for (Held h : held.values()) {
            for (int i = 0; i < h.count; i++) {
                List<byte[]> list = byKey.get(h.keys[i]);
                if (list == null) {
                    list = new ArrayList<>();
                    byKey.set(h.keys[i], list);
                }
                list.add(stored(h.times[i], h.records[i]));
            }
        }
        for (int key : owned) {
            setCurrentKey(keyRow(placed[key]));
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
