/* Offset tracker: the committable offset never passes a record that is not done. */
#include "../../core/tests/kt_test.h"
#include "../consumer_lifecycle.h"

#include <stdlib.h>

static kt_record_t recs[8];

static void push_all(kt_tracker_t *kt, const int64_t *offsets, size_t cnt) {
        kt_tracker_init(kt);
        for (size_t i = 0; i < cnt; i++) {
                memset(&recs[i], 0, sizeof(recs[i]));
                recs[i].offset = offsets[i];
                recs[i].state = KT_REC_QUEUED;
                kt_tracker_push(kt, &recs[i]);
        }
}

/** Mark \p idx done, pop what can be popped. @returns the number popped. */
static int done(kt_tracker_t *kt, size_t idx) {
        int n = 0;
        recs[idx].state = KT_REC_DONE;
        while (kt_tracker_pop_done(kt))
                n++;
        return n;
}

int main(void) {
        kt_tracker_t kt;
        /* Gaps in offsets, as compaction and transaction markers leave them. */
        static const int64_t offs[] = {10, 11, 15, 20, 21};

        /* In order. */
        push_all(&kt, offs, 5);
        KT_CHECK(kt.commit_offset == -1, "empty tracker has no commit offset");
        KT_CHECK(done(&kt, 0) == 1 && kt.commit_offset == 11, "commit %lld",
                 (long long)kt.commit_offset);
        KT_CHECK(done(&kt, 1) == 1 && kt.commit_offset == 12, "commit %lld",
                 (long long)kt.commit_offset);

        /* Out of order: later ones finish first, the watermark waits for the earliest. */
        push_all(&kt, offs, 5);
        KT_CHECK(done(&kt, 2) == 0 && kt.commit_offset == -1, "must not pass offset 10");
        KT_CHECK(done(&kt, 4) == 0 && kt.commit_offset == -1, "must not pass offset 10");
        KT_CHECK(done(&kt, 0) == 1 && kt.commit_offset == 11, "commit %lld",
                 (long long)kt.commit_offset);
        KT_CHECK(kt.cnt == 4, "cnt %zu", kt.cnt);
        KT_CHECK(done(&kt, 1) == 2 && kt.commit_offset == 16, "gap 11->15 crossed: %lld",
                 (long long)kt.commit_offset);
        KT_CHECK(done(&kt, 3) == 2 && kt.commit_offset == 22, "commit %lld",
                 (long long)kt.commit_offset);
        KT_CHECK(kt.cnt == 0 && !kt.head && !kt.tail, "tracker empty");

        /* A record retried in the middle holds the watermark while later ones succeed. */
        push_all(&kt, offs, 5);
        done(&kt, 0);
        recs[1].state = KT_REC_RETRY_WAIT;
        done(&kt, 2);
        done(&kt, 3);
        KT_CHECK(kt.commit_offset == 11, "retrying offset 11 must hold the watermark: %lld",
                 (long long)kt.commit_offset);
        recs[1].state = KT_REC_IN_FLIGHT;
        KT_CHECK(!kt_tracker_pop_done(&kt), "in-flight head is not popped");
        KT_CHECK(done(&kt, 1) == 3 && kt.commit_offset == 21, "commit %lld",
                 (long long)kt.commit_offset);

        /* Revocation: everything pops unconditionally, commit offset unchanged. */
        push_all(&kt, offs, 5);
        done(&kt, 0);
        recs[1].state = KT_REC_IN_FLIGHT;
        {
                int n = 0;
                while (kt_tracker_pop(&kt))
                        n++;
                KT_CHECK(n == 4, "popped %d", n);
        }
        KT_CHECK(kt.commit_offset == 11, "drop must not advance the commit offset: %lld",
                 (long long)kt.commit_offset);
        KT_CHECK(!kt_tracker_pop(&kt) && !kt_tracker_pop_done(&kt), "empty pops are NULL");

        return kt_test_done("test_tracker");
}
