/**
 * @file consumer_lifecycle.h
 * @brief The record and the partition as the lifecycle module sees them: their fields, the
 *        lanes and the offset tracker. Everything else sees only kt_record_t and
 *        kt_partition_t declared (consumer.h) and the functions the module exports.
 *
 * DESIGN: the lifecycle module is the set of files that include this header, and only they
 * may: the owner of records and partitions (consumer/: consumer_group.c buffers, assigns,
 * drains, releases and commits; consumer_record.c holds the record state table and its one
 * writer; consumer_tracker.c the offset order), the loop's driver of a record's life
 * (core/core_record.c: start, finish, retry, give up, produce, release) and the scheduler
 * (dispatch/dispatch_sched.c: lanes, the ready queue, the retry heap, the reply bound), plus
 * their unit tests. `make lint-opaque` (run by `make format-check`) fails if another file
 * includes it. What the rest needs of a record is handed over as plain data it borrows:
 * kt_dispatch_req_t for a call, kt_produce_msg_t for a reply or dead letter, and what the
 * loop and the metrics need of the partitions through kt_consumer_blocked() and
 * kt_consumer_lag_write().
 *
 * @locality every field is read and written on the loop thread only.
 */
#ifndef KT_CONSUMER_LIFECYCLE_H
#define KT_CONSUMER_LIFECYCLE_H

#include "consumer.h"

/**
 * A lane: records that must reach the function one after the other (a partition in
 * `partition` ordering, a key hash in `key` ordering). Only a lane's head may be started;
 * the next one becomes startable when the head is resolved. Owned by the scheduler.
 */
typedef struct kt_lane {
        struct kt_record *head, *tail;
} kt_lane_t;

/** Lanes per partition in `key` ordering (plus one for records without a key). Different
 *  keys that hash alike share a lane: still in order, only less parallel. */
#define KT_KEY_LANES 256

/** One buffered record. Plain data owned by its partition's tracker. */
struct kt_record {
        struct kt_record *next;
        struct kt_partition *part;
        /* The record itself, copied out of librdkafka's message, which is freed at once: a
         * message kept alive keeps its whole fetch response (a producer batch, up to 1 MB)
         * and a ~300-byte op allocated. key and value live in the record's own allocation;
         * NULL is a null key / a null value (tombstone). */
        const void *key;
        size_t key_len;
        const void *value;
        size_t len;
        int64_t timestamp_ms;        /**< -1 if none */
        int timestamp_type;          /**< rd_kafka_timestamp_type_t */
        rd_kafka_headers_t *headers; /**< owned (detached from the message), NULL if none */
        int64_t offset;
        kt_record_state_t state; /**< written only by kt_consumer_record_state_set() */
        int attempts;            /**< calls made so far */
        int64_t retry_at_ms;     /**< kt_now_ms() time of the next attempt in RETRY_WAIT */
        void *call;              /**< dispatch handle while IN_FLIGHT */
        void *produce;           /**< producer ticket while PRODUCING */
        int replying;            /**< PRODUCING a reply (else a dead letter) */
        char *reply;             /**< the function's answer to produce to dispatch.reply_topic */
        size_t reply_len;
        char *reply_type;         /**< its Content-Type, NULL if none */
        int produce_attempts;     /**< times Kafka refused its reply or dead letter so far */
        int reply_refused;        /**< rd_kafka_resp_err_t: Kafka refused its reply for good */
        long last_status;         /**< last HTTP status, 0 if none */
        int64_t failing_since_ms; /**< kt_now_ms() of its first failure, 0 if none yet */
        char *last_error;         /**< last transfer error, NULL if none */
        int value_kind;           /**< dispatch's content-type detection (KT_VALUE_*), kept
                                       between attempts; 0 until the first */
        int64_t added_ms;         /**< kt_now_ms() when buffered (dispatch.batch.max_wait_ms) */
        void *batch;        /**< the loop's batch call it is part of while IN_FLIGHT, or NULL */
        int headers_err;    /**< rd_kafka_resp_err_t: its headers could not be read
                                 (librdkafka: over 100,000, or malformed); 0 if none */
        int notes_reported; /**< what building its request found (headers dropped, trace
                                 context invalid) is counted and logged: once a record,
                                 also when an attempt is not counted (runtime down) */
        /* scheduler bookkeeping */
        kt_lane_t *lane;              /**< NULL in `none` ordering */
        struct kt_record *lane_next;  /**< next record of its lane */
        struct kt_record *ready_next; /**< next in the ready queue */
        size_t heap_idx;              /**< index in the retry heap, SIZE_MAX if not in it */
};

/**
 * Offset tracker of one partition: its records in offset order. The head is the oldest record
 * not yet done; a record leaves only from the head and only when done, so the committable
 * offset is always the one after the last record popped, whatever order calls finish in and
 * whatever gaps (compaction, transaction markers) the offsets have.
 */
typedef struct kt_tracker {
        kt_record_t *head, *tail;
        size_t cnt;
        int64_t commit_offset; /**< offset to commit (last popped + 1), -1 if none yet */
} kt_tracker_t;

/** @brief Initialize an empty tracker. */
void kt_tracker_init(kt_tracker_t *kt);

/** @brief Append \p rec (offsets must increase). */
void kt_tracker_push(kt_tracker_t *kt, kt_record_t *rec);

/**
 * @brief Pop the head if it is done, advancing commit_offset.
 * @returns the popped record (the caller frees it), or NULL if the head is not done.
 */
kt_record_t *kt_tracker_pop_done(kt_tracker_t *kt);

/** @brief Pop the head whatever its state (dropping a revoked partition). */
kt_record_t *kt_tracker_pop(kt_tracker_t *kt);

/** An assigned partition. */
struct kt_partition {
        struct kt_partition *next; /**< next assigned partition */
        const char *topic;         /**< points into the config */
        size_t topic_idx;          /**< index in kt_config_t.topics */
        int32_t partition;
        rd_kafka_topic_t *rkt;
        kt_tracker_t q;
        int in_flight;    /**< records of this partition in IN_FLIGHT (kept by the state setter) */
        int producing;    /**< records of this partition in PRODUCING (kept by the state setter) */
        size_t bytes;     /**< value + key bytes buffered */
        kt_lane_t *lanes; /**< per ordering mode: 1 (partition), KT_KEY_LANES + 1 (key), none */
        int lane_cnt;
        rd_kafka_queue_t *rkq;      /**< its own queue (not forwarded to the consumer's) */
        kt_partition_state_t state; /**< see kt_partition_state_t; written only by consumer/ */
        int paused;                 /**< paused by us (runtime down, draining) */
        int full;          /**< buffer over its record or byte bound: its queue is not read */
        int more;          /**< its queue may hold records: in the read list (read_next) */
        int64_t stored;    /**< offset to commit (all before it done), -1 if none */
        int64_t committed; /**< the offset last committed successfully, -1 if none */
        int dirty;         /**< a record finished since the last commit started */
        struct kt_offsetmap *done_map; /**< offsets a previous owner finished above the
                                            committed offset (commit metadata), or NULL */
        int64_t done_floor;   /**< records below it were finished by us before the partition
                                   was lost and came back (not committed yet), -1 if none */
        int64_t lag;          /**< consumer lag from librdkafka's statistics, -1 if unknown */
        int64_t went_back_to; /**< the last backwards offset warned about, -1 if none */
        int64_t next_offset;  /**< the offset after the last record read, -1 if none yet */
        size_t burst_cnt;     /**< records read from its queue since it was last seen empty */
        size_t burst_bytes;   /**< and their value + key bytes */
        /* reply bound (the loop and dispatch_sched.c) */
        size_t reply_bytes;               /**< of bytes: replies held until Kafka acks them */
        size_t reply_est;                 /**< expected size of a reply, once reply_seen */
        int reply_seen;                   /**< a call of it answered (with a reply topic) */
        struct kt_record *parked_head;    /**< startable records held back by the bound */
        struct kt_record *parked_tail;    /**< (linked through ready_next) */
        struct kt_partition *parked_next; /**< next partition with parked records */
        int parked;                       /**< it is in the scheduler's parked list */
        /* the read path (consumer_group.c, kt_consumer_poll: wake-ups name partitions) */
        struct kt_partition *read_next; /**< next in the consumer's list of partitions to read */
};

/** @returns the first assigned partition (follow ->next). */
kt_partition_t *kt_consumer_partitions(kt_consumer_t *kc);

#endif /* KT_CONSUMER_LIFECYCLE_H */
