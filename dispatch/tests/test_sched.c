/* The scheduler's reply bound: replies held and expected keep a partition's calls back; a
 * lane's next record is not started again while a batch carries it; a refused reply due to be
 * written again comes out of its own queue, not the calls'. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"
#include "../../consumer/consumer_lifecycle.h"

#include <stdint.h>
#include <stdlib.h>

#define RECS 8

/** Buffer \p n records of \p p, offsets 0 .. n - 1, as the consumer does. */
static void add_records(kt_sched_t *ks, kt_partition_t *p, kt_record_t *recs, int n) {
        for (int i = 0; i < n; i++) {
                recs[i].part = p;
                recs[i].offset = i;
                recs[i].heap_idx = SIZE_MAX;
                kt_sched_record_add(ks, &recs[i]);
        }
}

/** Pop everything startable, "starting" each (in_flight++) as the loop would. */
static int start_all(kt_sched_t *ks, kt_partition_t *p) {
        kt_record_t *rec;
        int n = 0;

        while ((rec = kt_sched_next(ks))) {
                rec->state = KT_REC_IN_FLIGHT;
                p->in_flight++;
                n++;
        }
        return n;
}

static void test_reply_bound(void) {
        static kt_config_t conf;
        static kt_partition_t p;
        static kt_record_t recs[RECS];
        kt_sched_t *ks;
        int n;

        conf.ordering = KT_ORDER_NONE;
        conf.partition_buffer_bytes = 512 * 1024;
        conf.reply_topic = "replies";
        ks = kt_sched_new(&conf);
        KT_CHECK(ks != NULL, "kt_sched_new");
        if (!ks)
                return;
        add_records(ks, &p, recs, RECS);
        /* No reply seen yet: each may be 1 MiB, so one call at a time. */
        n = start_all(ks, &p);
        KT_CHECK(n == 1, "before any reply: %d started", n);
        KT_CHECK(!kt_sched_has_ready(ks), "parked records are not ready");

        /* It answered 200 KiB, held until acked: one more call fits (200 held + 200
         * expected), two do not (200 + 2 * 200 >= 512). The first starts anyway: none is in
         * flight. */
        p.in_flight--;
        p.reply_bytes += 200 * 1024;
        kt_sched_reply_observe(&p, 200 * 1024);
        KT_CHECK(kt_sched_has_ready(ks), "room again: ready");
        n = start_all(ks, &p);
        KT_CHECK(n == 2, "200 KiB held, 200 KiB expected: %d started", n);
        KT_CHECK(p.in_flight == 2, "in flight %d", p.in_flight);

        /* Acked: three calls in flight fit (600 KiB expected reaches the bound only then). */
        p.reply_bytes = 0;
        n = start_all(ks, &p);
        KT_CHECK(n == 1, "nothing held: %d more started", n);
        KT_CHECK(p.in_flight == 3, "in flight %d", p.in_flight);

        /* A partition with nothing in flight may always start one, whatever it holds. */
        p.in_flight = 0;
        p.reply_bytes = 4 * 1024 * 1024;
        n = start_all(ks, &p);
        KT_CHECK(n == 1, "over the bound, none in flight: %d started", n);

        /* Without a reply topic there is no bound. */
        conf.reply_topic = NULL;
        n = start_all(ks, &p);
        KT_CHECK(n == RECS - 5, "no reply topic: %d started", n);

        /* Dropping a partition forgets what it parked. */
        conf.reply_topic = "replies";
        p.in_flight = 1;
        kt_sched_record_add(ks, &recs[0]);
        KT_CHECK(kt_sched_next(ks) == NULL, "parked");
        kt_sched_partition_drop(ks, &p);
        p.reply_bytes = 0;
        p.in_flight = 0;
        KT_CHECK(!kt_sched_has_ready(ks) && kt_sched_next(ks) == NULL, "dropped");
        kt_sched_destroy(ks);
}

static void test_reply_estimate(void) {
        kt_partition_t p = {0};

        kt_sched_reply_observe(&p, 1000);
        KT_CHECK(p.reply_seen && p.reply_est == 1000, "first: %zu", p.reply_est);
        kt_sched_reply_observe(&p, 5000);
        KT_CHECK(p.reply_est == 5000, "larger: %zu", p.reply_est);
        kt_sched_reply_observe(&p, 0);
        KT_CHECK(p.reply_est == 5000 - 625, "decays by 1/8: %zu", p.reply_est);
        for (int i = 0; i < 200; i++)
                kt_sched_reply_observe(&p, 100);
        KT_CHECK(p.reply_est >= 100 && p.reply_est < 110, "converges: %zu", p.reply_est);
}

/* A batch carries a lane's head and the records behind it: resolving the head must not make
 * the next one startable while it is still in flight in that batch. */
static void test_resolved_in_flight_successor(void) {
        static kt_config_t conf;
        static kt_partition_t p;
        static kt_lane_t lane;
        static kt_record_t recs[3];
        kt_sched_t *ks;
        kt_record_t *rec;

        conf.ordering = KT_ORDER_PARTITION;
        p.lanes = &lane;
        p.lane_cnt = 1;
        ks = kt_sched_new(&conf);
        KT_CHECK(ks != NULL, "kt_sched_new");
        if (!ks)
                return;
        add_records(ks, &p, recs, 3);
        rec = kt_sched_next(ks);
        KT_CHECK(rec == &recs[0] && !kt_sched_next(ks), "only the head is startable");
        /* The batch: recs[0] and recs[1]. */
        recs[0].state = recs[1].state = KT_REC_IN_FLIGHT;
        kt_sched_resolved(ks, &recs[0]);
        KT_CHECK(!kt_sched_next(ks), "its successor is in the batch: not startable again");
        kt_sched_resolved(ks, &recs[1]);
        rec = kt_sched_next(ks);
        KT_CHECK(rec == &recs[2], "the record after the batch is startable: %p", (void *)rec);
        kt_sched_destroy(ks);
}

/* A reply Kafka refused is written again from its own queue: it needs no call slot and no
 * runtime, so the loop takes it while it starts no call (the runtime down). */
static void test_write_again_queue(void) {
        static kt_config_t conf;
        static kt_partition_t p;
        static kt_record_t recs[3];
        kt_sched_t *ks;
        kt_record_t *rec;

        conf.ordering = KT_ORDER_NONE;
        ks = kt_sched_new(&conf);
        KT_CHECK(ks != NULL, "kt_sched_new");
        if (!ks)
                return;
        add_records(ks, &p, recs, 3);
        for (int i = 0; i < 3; i++)
                KT_CHECK(kt_sched_next(ks) == &recs[i], "record %d startable", i);
        /* [0]: answered, its reply refused; [1]: its call failed; both due at 100. */
        recs[0].state = KT_REC_PRODUCING;
        recs[1].state = KT_REC_RETRY_WAIT;
        KT_CHECK(kt_sched_retry_at(ks, &recs[0], 100) == KT_OK, "retry_at");
        KT_CHECK(kt_sched_retry_at(ks, &recs[1], 100) == KT_OK, "retry_at");
        KT_CHECK(kt_sched_due(ks, 99) == 100, "nothing due before 100");
        KT_CHECK(!kt_sched_next_write(ks), "no write due before 100");
        KT_CHECK(kt_sched_due(ks, 100) == INT64_MAX, "both due at 100");
        rec = kt_sched_next_write(ks);
        KT_CHECK(rec == &recs[0], "the reply is written again: %p", (void *)rec);
        KT_CHECK(!kt_sched_next_write(ks), "only it");
        rec = kt_sched_next(ks);
        KT_CHECK(rec == &recs[1], "the failed call is started again: %p", (void *)rec);
        KT_CHECK(!kt_sched_next(ks), "the reply is not a call");

        /* A revoked partition's write due leaves with it. */
        KT_CHECK(kt_sched_retry_at(ks, &recs[0], 200) == KT_OK, "retry_at");
        kt_sched_due(ks, 200);
        kt_sched_partition_drop(ks, &p);
        KT_CHECK(!kt_sched_next_write(ks), "dropped with its partition");
        kt_sched_destroy(ks);
}

int main(void) {
        test_reply_bound();
        test_reply_estimate();
        test_resolved_in_flight_successor();
        test_write_again_queue();
        return kt_test_done("test_sched");
}
