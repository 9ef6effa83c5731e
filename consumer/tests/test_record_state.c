/* Record states: the transition table, and the counters the one setter keeps from it. */
#include "../../core/tests/kt_test.h"
#include "../consumer_lifecycle.h"

#include <stdlib.h>

#define Q KT_REC_QUEUED
#define F KT_REC_IN_FLIGHT
#define R KT_REC_RETRY_WAIT
#define P KT_REC_PRODUCING
#define D KT_REC_DONE

/* Every transition the loop and the consumer make (core/core_record.c's DESIGN block). */
static const struct {
        kt_record_state_t from, to;
} legal[] = {
    {Q, F}, {Q, R}, {Q, D},         /* started; could not start; done before */
    {F, D}, {F, P}, {F, R}, {F, Q}, /* done; reply / dead letter; retry; back */
    {R, F}, {R, R},                 /* started again; could not start again */
    {P, P}, {P, D}, {P, Q},         /* written again; acked; released */
};

static int is_legal(kt_record_state_t from, kt_record_state_t to) {
        for (size_t i = 0; i < sizeof(legal) / sizeof(legal[0]); i++)
                if (legal[i].from == from && legal[i].to == to)
                        return 1;
        return 0;
}

/* Lives a record goes through, each ending where the counters must be back at 0. */
static const struct {
        const char *name;
        kt_record_state_t path[8];
        size_t len;
} lives[] = {
    {"call done", {F, D}, 2},
    {"retried, then done", {F, R, F, R, R, F, D}, 7},
    {"reply written after a refusal", {F, P, P, D}, 4},
    {"runtime down, then dead letter", {F, Q, F, P, D}, 5},
    {"released while producing", {F, P, Q}, 3},
    {"released in flight", {R, F, Q}, 3},
    {"done by the previous owner", {D}, 1},
};

int main(void) {
        /* The table: exactly the transitions above, nothing else, nothing out of range. */
        for (int from = 0; from <= KT_REC_DONE; from++)
                for (int to = 0; to <= KT_REC_DONE; to++)
                        KT_CHECK(kt_consumer_record_state_legal((kt_record_state_t)from,
                                                                (kt_record_state_t)to) ==
                                     is_legal((kt_record_state_t)from, (kt_record_state_t)to),
                                 "%d -> %d", from, to);
        KT_CHECK(!kt_consumer_record_state_legal(KT_REC_QUEUED, (kt_record_state_t)(D + 1)),
                 "out of range");

        /* The counters follow the state: in flight and producing, back to 0 at the end. */
        for (size_t i = 0; i < sizeof(lives) / sizeof(lives[0]); i++) {
                kt_partition_t p;
                kt_record_t rec;

                memset(&p, 0, sizeof(p));
                memset(&rec, 0, sizeof(rec));
                p.topic = "t";
                rec.part = &p;
                KT_CHECK(rec.state == KT_REC_QUEUED, "%s: born queued", lives[i].name);
                for (size_t j = 0; j < lives[i].len; j++) {
                        kt_record_state_t to = lives[i].path[j];
                        kt_consumer_record_state_set(&rec, to);
                        KT_CHECK(rec.state == to, "%s: step %zu: state %d", lives[i].name, j,
                                 (int)rec.state);
                        KT_CHECK(p.in_flight == (to == KT_REC_IN_FLIGHT), "%s: step %zu: %d",
                                 lives[i].name, j, p.in_flight);
                        KT_CHECK(p.producing == (to == KT_REC_PRODUCING), "%s: step %zu: %d",
                                 lives[i].name, j, p.producing);
                }
                KT_CHECK(p.in_flight == 0 && p.producing == 0, "%s: %d in flight, %d producing",
                         lives[i].name, p.in_flight, p.producing);
        }

        /* Many records of one partition: each counted once. */
        {
                kt_partition_t p;
                kt_record_t recs[5];

                memset(&p, 0, sizeof(p));
                memset(recs, 0, sizeof(recs));
                for (int i = 0; i < 5; i++) {
                        recs[i].part = &p;
                        kt_consumer_record_state_set(&recs[i], KT_REC_IN_FLIGHT);
                }
                kt_consumer_record_state_set(&recs[0], KT_REC_PRODUCING);
                kt_consumer_record_state_set(&recs[1], KT_REC_RETRY_WAIT);
                kt_consumer_record_state_set(&recs[2], KT_REC_DONE);
                KT_CHECK(p.in_flight == 2 && p.producing == 1, "%d in flight, %d producing",
                         p.in_flight, p.producing);
        }
        return kt_test_done("record_state");
}
