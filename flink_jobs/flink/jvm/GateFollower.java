package dev.segments.flink;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.PartitionInfo;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.TopicPartition;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The event gate of the catalogue the job has in use, followed live.
 *
 * <p>The segment function announces every catalogue it accepts (at start, after a restore, and
 * when one is published on the rules topic) on the rules status topic: key {@code gate/<run>},
 * value {@code {"gate": <EventGate spec>, ...}} ({@code runtime/batch_engine.py}). One follower
 * per TaskManager and channel reads that topic from its start in a daemon thread and keeps the
 * last spec of its run, compiled; the source's watermark function and {@link EventKeys} read it
 * with one volatile read per record ({@link LiveGate}). Until the first announcement arrives, and
 * if the topic cannot be read, they use the gate of the catalogue the job was built with. The
 * follower runs while an {@link EventKeys} of the channel is open in the TaskManager (the
 * operator chained to each events source).
 *
 * <p>An announcement reaches the sources a poll after the segment function accepted the
 * catalogue (well under a second on a healthy cluster): in between, records of a type just added
 * do not move the watermark yet (they are processed), and records of a type just removed still
 * can.
 *
 * <p>The channel is JSON text: {@code {"bootstrap": ..., "topic": ..., "key": ...,
 * "properties": {Kafka client properties}}}.
 */
final class GateFollower {

    private static final Logger LOG = LoggerFactory.getLogger(GateFollower.class);
    private static final Map<String, GateFollower> RUNNING = new HashMap<>();
    private static final Duration POLL = Duration.ofMillis(200);
    private static final long RETRY_MS = 5_000;

    private final String channelText;
    private final String bootstrap;
    private final String topic;
    private final String key;
    private final Map<String, String> properties = new HashMap<>();
    private final Thread thread;
    private int users; // EventKeys instances of this TaskManager that follow the channel
    private volatile boolean stopped;
    private volatile EventGate current; // null until the job announces a catalogue

    private GateFollower(String channelText) {
        this.channelText = channelText;
        try {
            JsonNode channel = new ObjectMapper().readTree(channelText);
            bootstrap = channel.get("bootstrap").asText();
            topic = channel.get("topic").asText();
            key = channel.get("key").asText();
            Iterator<Map.Entry<String, JsonNode>> it = channel.get("properties").fields();
            while (it.hasNext()) {
                Map.Entry<String, JsonNode> e = it.next();
                properties.put(e.getKey(), e.getValue().asText());
            }
        } catch (Exception e) {
            throw new IllegalArgumentException("not an event gate channel: " + e, e);
        }
        thread = new Thread(this::run, "segments-gate-follower " + topic + " " + key);
        thread.setDaemon(true);
    }

    /** The follower of {@code channel}, started if there is none; {@link #release} it when done. */
    static GateFollower acquire(String channel) {
        synchronized (RUNNING) {
            GateFollower f = RUNNING.get(channel);
            if (f == null) {
                f = new GateFollower(channel);
                RUNNING.put(channel, f);
                f.thread.start();
            }
            f.users++;
            return f;
        }
    }

    /** The running follower of {@code channel}, or null: looked up, not started. */
    static GateFollower running(String channel) {
        synchronized (RUNNING) {
            return RUNNING.get(channel);
        }
    }

    void release() {
        synchronized (RUNNING) {
            if (--users == 0) {
                RUNNING.remove(channelText);
                stopped = true;
                thread.interrupt();
            }
        }
    }

    /**
     * What a record is judged by: the gate the job announced last, else the one it was built
     * with. One per function instance; not thread-safe. The owner (an {@link EventKeys}, which
     * Flink closes when its task ends) starts and stops the follower; the watermark function,
     * which Flink never closes, only looks it up (at most once a second while there is none).
     */
    static final class LiveGate {
        private final EventGate start;
        private final String channel;
        private final boolean owner;
        private GateFollower follower;
        private long nextLookup;

        /** {@code channel}: empty when the catalogue cannot change live (job.hot_reload off). */
        LiveGate(EventGate start, String channel, boolean owner) {
            this.start = start;
            this.channel = channel;
            this.owner = owner;
            if (owner && !channel.isEmpty()) {
                follower = acquire(channel);
            }
        }

        EventGate at(long nowMs) {
            if (channel.isEmpty()) {
                return start;
            }
            if (!owner && (follower == null || follower.stopped) && nowMs >= nextLookup) {
                follower = running(channel);
                nextLookup = nowMs + 1_000;
            }
            EventGate g = follower == null ? null : follower.current;
            return g != null ? g : start;
        }

        void close() {
            if (owner && follower != null) {
                follower.release();
                follower = null;
            }
        }
    }

    private void run() {
        while (!stopped) {
            try (KafkaConsumer<String, String> consumer = consumer()) {
                List<TopicPartition> partitions = partitions(consumer);
                consumer.assign(partitions);
                consumer.seekToBeginning(partitions);
                LOG.info("following the event gate {} on {} ({} partitions)", key, topic, partitions.size());
                while (!stopped) {
                    for (ConsumerRecord<String, String> r : consumer.poll(POLL)) {
                        if (key.equals(r.key()) && r.value() != null) {
                            take(r.value());
                        }
                    }
                }
            } catch (RuntimeException e) {
                if (stopped) {
                    break;
                }
                LOG.warn("cannot follow the event gate on {} (retrying in {} s; the sources keep the gate they have): {}",
                        topic, RETRY_MS / 1000, e.toString());
                try {
                    Thread.sleep(RETRY_MS);
                } catch (InterruptedException ie) {
                    break;
                }
            }
        }
    }

    private KafkaConsumer<String, String> consumer() {
        Properties p = new Properties();
        p.putAll(properties);
        p.put("bootstrap.servers", bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("client.id", "segments-gate-follower");
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    private List<TopicPartition> partitions(KafkaConsumer<String, String> consumer) {
        List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
        if (infos == null || infos.isEmpty()) {
            throw new IllegalStateException("topic " + topic + " not found");
        }
        List<TopicPartition> out = new ArrayList<>();
        for (PartitionInfo info : infos) {
            out.add(new TopicPartition(topic, info.partition()));
        }
        return out;
    }

    private void take(String value) {
        try {
            JsonNode announcement = new ObjectMapper().readTree(value);
            EventGate gate = EventGate.of(announcement.get("gate"));
            current = gate;
            JsonNode version = announcement.get("catalog_version");
            LOG.info("event gate {}: catalogue {} ({} event types)", key, version == null ? "?" : version.asText(),
                    gate.types.size());
        } catch (RuntimeException | java.io.IOException e) {
            LOG.warn("event gate {}: an announcement that cannot be read is ignored: {}", key, e.toString());
        }
    }
}
