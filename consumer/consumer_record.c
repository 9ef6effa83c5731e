/*
 * A record's state (kt_record_state_t) and the one function that moves it. The life the loop
 * drives is described, with this table, in the DESIGN block of core/core_record.c.
 *
 * DESIGN: kt_consumer_record_state_set() is the only writer of rec->state. Every counter
 * that is a function of the state is kept there, from each transition's from -> to:
 * p->in_flight counts the partition's IN_FLIGHT records, p->producing its PRODUCING ones.
 * So a record cannot leave a state without being uncounted, or be counted twice.
 * - Who moves what: a record is born QUEUED (buffer_record() in consumer_group.c: zeroed,
 *   KT_REC_QUEUED is 0) and becomes DONE only in kt_consumer_record_done(); every other
 *   transition, back to QUEUED included, is the loop's (core/core_record.c). Records are
 *   freed only by the consumer (done and popped, or dropped with their partition), never
 *   moved after.
 * - A transition not in the table is a bug: it is logged as an error once, its counters are
 *   still moved by from -> to (so they stay the count of records in each state), and under
 *   the sanitizers (tests) it aborts.
 * - Byte counts are not a function of the state and are kept where they happen, each with
 *   one adding and one removing site: the record's key and value in p->bytes
 *   (buffer_record() / kt_consumer_record_done()), a batch's encoded body (batch_start() /
 *   batch_end() in core_record.c), a reply held until Kafka acks it, in p->bytes and
 *   p->reply_bytes (reply_hold() / reply_release() there). A DONE record holds no reply.
 */
#include "consumer_lifecycle.h"

#include <assert.h>
#include <stdlib.h>

#define FAC "KAFKA"

_Static_assert(KT_REC_QUEUED == 0, "a zeroed record is QUEUED");

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ILLEGAL_ABORTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ILLEGAL_ABORTS 1
#endif
#endif

#define REC_STATES (KT_REC_DONE + 1)

/** legal[from][to]. Staying in RETRY_WAIT (a retry could not start) and in PRODUCING (a
 *  write refused: written again, or its dead letter instead) are transitions too. */
static const unsigned char legal[REC_STATES][REC_STATES] = {
    /*                      QUEUED IN_FLIGHT RETRY_WAIT PRODUCING DONE */
    [KT_REC_QUEUED] = {0, 1, 1, 0, 1},     /* started; could not start; done before */
    [KT_REC_IN_FLIGHT] = {1, 0, 1, 1, 1},  /* runtime down, lane broken in a batch or
                                              released; retry; reply or dead letter; done */
    [KT_REC_RETRY_WAIT] = {0, 1, 1, 0, 0}, /* started again; could not start */
    [KT_REC_PRODUCING] = {1, 0, 0, 1, 1},  /* released; written again; acked or skipped */
    [KT_REC_DONE] = {0, 0, 0, 0, 0},       /* finished: popped and freed, never moved */
};

static const char *const names[REC_STATES] = {"queued", "in flight", "retry wait", "producing",
                                              "done"};

int kt_consumer_record_state_legal(kt_record_state_t from, kt_record_state_t to) {
        if ((unsigned)from >= REC_STATES || (unsigned)to >= REC_STATES)
                return 0;
        return legal[from][to];
}

/** Add \p d to the counters that count records in \p st. */
static void count(kt_partition_t *p, kt_record_state_t st, int d) {
        switch (st) {
        case KT_REC_IN_FLIGHT:
                p->in_flight += d;
                break;
        case KT_REC_PRODUCING:
                p->producing += d;
                break;
        case KT_REC_QUEUED:
        case KT_REC_RETRY_WAIT:
        case KT_REC_DONE:
                break;
        }
}

void kt_consumer_record_state_set(kt_record_t *rec, kt_record_state_t to) {
        static int logged;
        kt_record_state_t from = rec->state;
        kt_partition_t *p = rec->part;

        if (!kt_consumer_record_state_legal(from, to) || (to == KT_REC_DONE && rec->reply_len)) {
                if (!logged) {
                        logged = 1;
                        KT_ERR(FAC,
                               "%s [%d] @%lld: record moved from %s to %s%s: a bug, counts "
                               "kept (logged once)",
                               p->topic, p->partition, (long long)rec->offset,
                               (unsigned)from < REC_STATES ? names[from] : "?",
                               (unsigned)to < REC_STATES ? names[to] : "?",
                               rec->reply_len ? " holding a reply" : "");
                }
#ifdef ILLEGAL_ABORTS
                assert(!"illegal record state transition");
                abort();
#endif
        }
        if (from == to)
                return;
        count(p, from, -1);
        count(p, to, +1);
        rec->state = to;
}
