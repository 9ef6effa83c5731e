/* kt_log_limits_pass(): the first line of an error code passes at once, repeats within the
 * period are counted and left out, the first one after it passes with that count; codes are
 * kept apart (16 of them, later ones share a slot), and a zeroed table is ready to use. */
#define _POSIX_C_SOURCE 200809L
#include "../core.h"
#include "kt_test.h"

#include <string.h>

static int pass(kt_log_limits_t *t, int code, int64_t now, unsigned long *held) {
        *held = 12345; /* must be set when it passes */
        return kt_log_limits_pass(t, code, now, 10000, held);
}

int main(void) {
        kt_log_limits_t t;
        unsigned long held;

        memset(&t, 0, sizeof(t));
        /* The first line, even at time 0. */
        KT_CHECK(pass(&t, -187, 0, &held) == 1 && held == 0, "first line: held %lu", held);
        /* 500 repeats within the period: none passes. */
        for (int i = 1; i <= 500; i++)
                KT_CHECK(pass(&t, -187, i * 19, &held) == 0, "repeat %d at %d ms passed", i,
                         i * 19);
        /* Another code is not held back by the first. */
        KT_CHECK(pass(&t, -195, 100, &held) == 1 && held == 0, "second code: held %lu", held);
        KT_CHECK(pass(&t, -195, 9999, &held) == 0, "second code repeat passed");
        /* One ms short of the period: still held; at the period: passes with the count. */
        KT_CHECK(pass(&t, -187, 9999, &held) == 0, "at 9999 ms: passed");
        KT_CHECK(pass(&t, -187, 10000, &held) == 1 && held == 501,
                 "after the period: held %lu, want 501", held);
        /* The count starts again; a quiet code passes at once with nothing held. */
        KT_CHECK(pass(&t, -187, 15000, &held) == 0, "within the new period");
        KT_CHECK(pass(&t, -187, 60000, &held) == 1 && held == 1, "quiet then: held %lu, want 1",
                 held);
        KT_CHECK(pass(&t, -195, 60000, &held) == 1 && held == 1, "second code: held %lu, want 1",
                 held);

        /* 16 codes apart, the 17th and later share one slot. */
        memset(&t, 0, sizeof(t));
        for (int c = 0; c < KT_LOG_LIMIT_CODES + 4; c++)
                KT_CHECK(pass(&t, c, 0, &held) == (c <= KT_LOG_LIMIT_CODES),
                         "code %d: first line %s", c,
                         c <= KT_LOG_LIMIT_CODES ? "held" : "passed (shares the slot)");
        KT_CHECK(t.used == KT_LOG_LIMIT_CODES, "used %d", t.used);
        KT_CHECK(pass(&t, KT_LOG_LIMIT_CODES + 9, 10000, &held) == 1 && held == 3,
                 "shared slot: held %lu, want 3", held);
        for (int c = 0; c < KT_LOG_LIMIT_CODES; c++)
                KT_CHECK(pass(&t, c, 5000, &held) == 0, "code %d: repeat passed", c);
        return kt_test_done("test_log_limits");
}
