/*
 * DESIGN: which record goes next.
 *
 * Ordering is expressed with lanes: records that must reach the function one after another
 * share a lane (a partition's only lane in `partition` ordering, a key hash's lane in `key`
 * ordering); in `none` ordering every record is alone. Only a lane's head may be started; when
 * it is resolved (succeeded, skipped, or handed to the dead-letter producer) the next record of
 * the lane becomes startable. A record waiting to retry stays its lane's head, so the records
 * behind it wait, and only them. A batch (core_record.c) may carry a head and the records
 * behind it in one call: resolving the head then makes the next one startable only if it is
 * still QUEUED, not while it is IN_FLIGHT in that batch.
 *
 * Startable records wait in one FIFO across all partitions (fair by arrival); the loop pops
 * from it while call slots are free, so dispatch.max_in_flight is the one global bound. Retries
 * wait in a binary heap ordered by due time and go to the front of the FIFO when due. A
 * record PRODUCING whose reply or dead letter Kafka refused waits in the same heap, but when
 * due goes to a FIFO of its own (kt_sched_next_write()): writing it again needs Kafka only,
 * neither a call slot nor the runtime, so it goes on while the runtime is down and a drain
 * waiting for it ends when Kafka takes it.
 * Everything here is O(1) or O(log n) per record, except dropping a revoked partition.
 *
 * The reply bound: with dispatch.reply_topic every call may bring back a reply (up to 1 MiB)
 * that is held until Kafka acknowledges it. A partition whose held replies plus the replies
 * expected from its calls in flight reach dispatch.partition_buffer_bytes starts no new call:
 * kt_sched_next() parks such a record on its partition and the partition on a list, and the
 * list is looked at again (O(parked partitions)) when the loop asks for the next record or
 * whether one is ready.
 * The expected size is learnt per partition: the largest recent reply, decaying by 1/8 per
 * call, KT_MAX_RESPONSE_BYTES before the first (so the first call of a partition runs alone).
 * Without the expectation, max_in_flight calls could start at once and bring back
 * max_in_flight replies. One call per partition may always run, so a partition whose single
 * reply is over the bound still makes progress. Reading stops at partition_buffer_bytes too
 * (p->bytes counts the replies held), so a partition holds about twice the bound: its records,
 * and its replies, plus one record and one reply past it. The expectation can be low: calls
 * already in flight when replies suddenly grow overshoot it once (at most one 1 MiB reply
 * each), then the estimate has grown.
 */
#include "dispatch.h"

#include "../consumer/consumer_lifecycle.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct kt_sched {
        const kt_config_t *conf;
        kt_record_t *ready_head, *ready_tail;
        kt_record_t *held_head, *held_tail;   /**< lane heads of batches waiting to fill up */
        kt_record_t *write_head, *write_tail; /**< PRODUCING, due to be written again */
        kt_partition_t *parked;               /**< partitions with parked records */
        kt_record_t **heap;
        size_t heap_cnt, heap_size;
};

void kt_sched_conf_set(kt_sched_t *ks, const kt_config_t *conf) {
        ks->conf = conf;
}

kt_sched_t *kt_sched_new(const kt_config_t *conf) {
        kt_sched_t *ks = calloc(1, sizeof(*ks));

        if (ks)
                ks->conf = conf;
        return ks;
}

void kt_sched_destroy(kt_sched_t *ks) {
        if (!ks)
                return;
        free(ks->heap);
        free(ks);
}

/* ---------------------------------------------------------------- ready FIFO */

static void fifo_push(kt_record_t **head, kt_record_t **tail, kt_record_t *rec) {
        rec->ready_next = NULL;
        if (*tail)
                (*tail)->ready_next = rec;
        else
                *head = rec;
        *tail = rec;
}

/** Take \p p's records out of the FIFO \p head .. \p tail. */
static void fifo_drop(kt_record_t **head, kt_record_t **tail, const kt_partition_t *p) {
        kt_record_t **pp = head, *last = NULL;

        while (*pp) {
                kt_record_t *rec = *pp;
                if (rec->part == p) {
                        *pp = rec->ready_next;
                        rec->ready_next = NULL;
                } else {
                        last = rec;
                        pp = &rec->ready_next;
                }
        }
        *tail = last;
}

static void ready_push(kt_sched_t *ks, kt_record_t *rec) {
        fifo_push(&ks->ready_head, &ks->ready_tail, rec);
}

static void ready_push_front(kt_sched_t *ks, kt_record_t *rec) {
        rec->ready_next = ks->ready_head;
        ks->ready_head = rec;
        if (!ks->ready_tail)
                ks->ready_tail = rec;
}

/* ---------------------------------------------------------------- reply bound */

void kt_sched_reply_observe(kt_partition_t *p, size_t len) {
        if (!p->reply_seen || len >= p->reply_est)
                p->reply_est = len;
        else
                p->reply_est -= (p->reply_est - len) / 8;
        p->reply_seen = 1;
}

/** @returns non-zero if \p p may not start another call now. */
static int over_bound(const kt_sched_t *ks, const kt_partition_t *p) {
        size_t expect;

        if (!ks->conf->reply_topic || p->in_flight <= 0)
                return 0;
        expect = p->reply_seen ? p->reply_est : KT_MAX_RESPONSE_BYTES;
        return p->reply_bytes + (size_t)p->in_flight * expect >=
               (size_t)ks->conf->partition_buffer_bytes;
}

static void park(kt_sched_t *ks, kt_record_t *rec) {
        kt_partition_t *p = rec->part;

        rec->ready_next = NULL;
        if (p->parked_tail)
                p->parked_tail->ready_next = rec;
        else
                p->parked_head = rec;
        p->parked_tail = rec;
        if (!p->parked) {
                p->parked = 1;
                p->parked_next = ks->parked;
                ks->parked = p;
        }
}

/** Parked records of partitions back under their bound go to the front: they are older. */
static void unpark(kt_sched_t *ks) {
        for (kt_partition_t **pp = &ks->parked; *pp;) {
                kt_partition_t *p = *pp;
                if (over_bound(ks, p)) {
                        pp = &p->parked_next;
                        continue;
                }
                p->parked_tail->ready_next = ks->ready_head;
                ks->ready_head = p->parked_head;
                if (!ks->ready_tail)
                        ks->ready_tail = p->parked_tail;
                p->parked_head = p->parked_tail = NULL;
                p->parked = 0;
                *pp = p->parked_next;
                p->parked_next = NULL;
        }
}

kt_record_t *kt_sched_next(kt_sched_t *ks) {
        kt_record_t *rec;

        unpark(ks);
        while ((rec = ks->ready_head)) {
                ks->ready_head = rec->ready_next;
                if (!ks->ready_head)
                        ks->ready_tail = NULL;
                rec->ready_next = NULL;
                /* Producing again a refused reply or dead letter starts no call. */
                if (rec->state == KT_REC_PRODUCING || !over_bound(ks, rec->part))
                        return rec;
                park(ks, rec);
        }
        return NULL;
}

int kt_sched_has_ready(const kt_sched_t *ks) {
        if (ks->ready_head)
                return 1;
        for (const kt_partition_t *p = ks->parked; p; p = p->parked_next)
                if (!over_bound(ks, p))
                        return 1;
        return 0;
}

/* ---------------------------------------------------------------- lanes */

/** FNV-1a: cheap and good enough to spread keys over lanes. */
static uint32_t key_hash(const unsigned char *key, size_t len) {
        uint32_t h = 2166136261u;

        for (size_t i = 0; i < len; i++) {
                h ^= key[i];
                h *= 16777619u;
        }
        return h;
}

static kt_lane_t *lane_of(const kt_sched_t *ks, kt_record_t *rec) {
        kt_partition_t *p = rec->part;
        switch (ks->conf->ordering) {
        case KT_ORDER_PARTITION:
                return &p->lanes[0];
        case KT_ORDER_KEY:
                if (!rec->key)
                        return &p->lanes[0]; /* records without a key: in order among themselves */
                return &p->lanes[1 + key_hash(rec->key, rec->key_len) % KT_KEY_LANES];
        case KT_ORDER_NONE:
                break;
        }
        return NULL;
}

void kt_sched_record_add(kt_sched_t *ks, kt_record_t *rec) {
        kt_lane_t *lane = lane_of(ks, rec);

        rec->lane = lane;
        rec->lane_next = NULL;
        if (!lane) {
                ready_push(ks, rec);
                return;
        }
        if (lane->tail) {
                lane->tail->lane_next = rec; /* waits for the records before it */
                lane->tail = rec;
                return;
        }
        lane->head = lane->tail = rec;
        ready_push(ks, rec);
}

void kt_sched_resolved(kt_sched_t *ks, kt_record_t *rec) {
        kt_lane_t *lane = rec->lane;

        if (!lane)
                return;
        /* Only a lane's head is ever started, so only a head is ever resolved. */
        lane->head = rec->lane_next;
        if (!lane->head)
                lane->tail = NULL;
        rec->lane = NULL;
        rec->lane_next = NULL;
        /* Not if it is already running: a batch may carry a lane's next records with it. */
        if (lane->head && lane->head->state == KT_REC_QUEUED)
                ready_push(ks, lane->head);
}

void kt_sched_requeue(kt_sched_t *ks, kt_record_t *rec) {
        ready_push_front(ks, rec);
}

void kt_sched_hold(kt_sched_t *ks, kt_record_t *rec) {
        fifo_push(&ks->held_head, &ks->held_tail, rec);
}

void kt_sched_unhold(kt_sched_t *ks) {
        if (!ks->held_head)
                return;
        ks->held_tail->ready_next = ks->ready_head;
        if (!ks->ready_head)
                ks->ready_tail = ks->held_tail;
        ks->ready_head = ks->held_head;
        ks->held_head = ks->held_tail = NULL;
}

/* ---------------------------------------------------------------- retry heap */

static void heap_set(kt_sched_t *ks, size_t i, kt_record_t *rec) {
        ks->heap[i] = rec;
        rec->heap_idx = i;
}

static void heap_up(kt_sched_t *ks, size_t i) {
        kt_record_t *rec = ks->heap[i];

        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (ks->heap[parent]->retry_at_ms <= rec->retry_at_ms)
                        break;
                heap_set(ks, i, ks->heap[parent]);
                i = parent;
        }
        heap_set(ks, i, rec);
}

static void heap_down(kt_sched_t *ks, size_t i) {
        kt_record_t *rec = ks->heap[i];

        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= ks->heap_cnt)
                        break;
                if (c + 1 < ks->heap_cnt && ks->heap[c + 1]->retry_at_ms < ks->heap[c]->retry_at_ms)
                        c++;
                if (rec->retry_at_ms <= ks->heap[c]->retry_at_ms)
                        break;
                heap_set(ks, i, ks->heap[c]);
                i = c;
        }
        heap_set(ks, i, rec);
}

static void heap_remove(kt_sched_t *ks, size_t i) {
        kt_record_t *rec = ks->heap[i];

        rec->heap_idx = SIZE_MAX;
        if (--ks->heap_cnt == i)
                return;
        heap_set(ks, i, ks->heap[ks->heap_cnt]);
        heap_down(ks, i);
        heap_up(ks, ks->heap[i]->heap_idx);
}

kt_err_t kt_sched_retry_at(kt_sched_t *ks, kt_record_t *rec, int64_t at_ms) {
        rec->retry_at_ms = at_ms;
        if (ks->heap_cnt == ks->heap_size) {
                size_t n = ks->heap_size ? ks->heap_size * 2 : 64;
                kt_record_t **h = realloc(ks->heap, n * sizeof(*h));
                if (!h)
                        return KT_ERR_NOMEM;
                ks->heap = h;
                ks->heap_size = n;
        }
        heap_set(ks, ks->heap_cnt++, rec);
        heap_up(ks, rec->heap_idx);
        return KT_OK;
}

int64_t kt_sched_due(kt_sched_t *ks, int64_t now_ms) {
        while (ks->heap_cnt && ks->heap[0]->retry_at_ms <= now_ms) {
                kt_record_t *rec = ks->heap[0];
                heap_remove(ks, 0);
                if (rec->state == KT_REC_PRODUCING)
                        fifo_push(&ks->write_head, &ks->write_tail, rec);
                else
                        ready_push_front(ks, rec); /* before new records: they are older */
        }
        return ks->heap_cnt ? ks->heap[0]->retry_at_ms : INT64_MAX;
}

kt_record_t *kt_sched_next_write(kt_sched_t *ks) {
        kt_record_t *rec = ks->write_head;

        if (rec) {
                ks->write_head = rec->ready_next;
                if (!ks->write_head)
                        ks->write_tail = NULL;
                rec->ready_next = NULL;
        }
        return rec;
}

/* ---------------------------------------------------------------- revocation */

void kt_sched_partition_drop(kt_sched_t *ks, kt_partition_t *p) {

        for (kt_partition_t **qq = &ks->parked; *qq; qq = &(*qq)->parked_next)
                if (*qq == p) {
                        *qq = p->parked_next;
                        break;
                }
        for (kt_record_t *rec = p->parked_head, *next; rec; rec = next) {
                next = rec->ready_next;
                rec->ready_next = NULL;
        }
        p->parked_head = p->parked_tail = NULL;
        p->parked_next = NULL;
        p->parked = 0;

        fifo_drop(&ks->ready_head, &ks->ready_tail, p);
        fifo_drop(&ks->held_head, &ks->held_tail, p);
        fifo_drop(&ks->write_head, &ks->write_tail, p);
        {
                size_t n = 0;
                for (size_t i = 0; i < ks->heap_cnt; i++) {
                        if (ks->heap[i]->part == p)
                                ks->heap[i]->heap_idx = SIZE_MAX;
                        else
                                heap_set(ks, n++, ks->heap[i]);
                }
                ks->heap_cnt = n;
                for (size_t i = n / 2; i-- > 0;)
                        heap_down(ks, i);
        }
        for (int i = 0; i < p->lane_cnt; i++)
                p->lanes[i].head = p->lanes[i].tail = NULL;
}
