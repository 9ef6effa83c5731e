/* Completed-offset map: round trips, prefixes that fit, every malformed blob refused, and a
 * decoded map never says done what the encoder was not given. Prints the blob sizes of
 * typical shapes and what encoding each costs. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "../../core/tests/kt_test.h"
#include "../consumer.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define SIZE 4000 /* what the consumer passes: under offset.metadata.max.bytes (4096) */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/** xorshift64*: fixed seed, the same run every time. */
static uint64_t rnd(void) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 2685821657736338717ull;
}

static uint64_t rnd_below(uint64_t n) {
        return rnd() % n;
}

/** The blob is a C string of printable ASCII, no space, within size - 1. */
static int blob_sane(const char *buf, size_t len, size_t size) {
        if (len >= size || strlen(buf) != len)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (buf[i] <= 0x20 || buf[i] >= 0x7f)
                        return 0;
        return 1;
}

static int in(const int64_t *x, size_t cnt, int64_t o) {
        size_t lo = 0, hi = cnt;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (x[mid] < o)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < cnt && x[lo] == o;
}

/**
 * \p om lists exactly x[0..k) (k = how many of x are <= covered): every one of them, and as
 * many offsets as that in all (so nothing outside x). Neighbours of each are probed too.
 * @returns non-zero if so.
 */
static int map_is_prefix(const kt_offsetmap_t *om, const int64_t *x, size_t cnt, int64_t covered) {
        size_t k = 0;

        while (k < cnt && x[k] <= covered)
                k++;
        if (kt_consumer_offsetmap_cnt(om) != k)
                return 0;
        if (kt_consumer_offsetmap_last(om) != (k ? x[k - 1] : -1))
                return 0;
        {
                /* walking it with next() gives x[0..k) */
                int64_t o = kt_consumer_offsetmap_next(om, INT64_MIN);

                for (size_t i = 0; i < k; i++) {
                        if (o != x[i])
                                return 0;
                        o = x[i] == INT64_MAX ? -1 : kt_consumer_offsetmap_next(om, x[i] + 1);
                }
                if (o != -1)
                        return 0;
        }
        for (size_t i = 0; i < cnt; i++) {
                if (kt_consumer_offsetmap_done(om, x[i]) != (i < k))
                        return 0;
                if (x[i] > 0 && !in(x, cnt, x[i] - 1) && kt_consumer_offsetmap_done(om, x[i] - 1))
                        return 0;
                if (x[i] < INT64_MAX && !in(x, cnt, x[i] + 1) &&
                    kt_consumer_offsetmap_done(om, x[i] + 1))
                        return 0;
        }
        return 1;
}

/** Encode, check the blob, decode, check the map. @returns the blob length. */
static char rt_buf[KT_OFFSETMAP_MAX_BYTES + 2]; /* the last blob round_trip() made */

static size_t round_trip(const char *name, int64_t commit, const int64_t *x, size_t cnt,
                         size_t size, int64_t *coveredp) {
        kt_offsetmap_t *om = (kt_offsetmap_t *)&rng; /* must be overwritten */
        char why[256];
        size_t len = 12345;
        int64_t covered = -2;
        kt_err_t err;

        err = kt_consumer_offsetmap_encode(commit, x, cnt, rt_buf, size, &len, &covered);
        KT_CHECK(err == KT_OK, "%s: encode: %s", name, kt_err2str(err));
        KT_CHECK(blob_sane(rt_buf, len, size), "%s: blob of %zu bytes for size %zu: '%.60s'", name,
                 len, size, rt_buf);
        KT_CHECK(covered == commit || in(x, cnt, covered), "%s: covered %" PRId64, name, covered);
        KT_CHECK((len == 0) == (covered == commit), "%s: len %zu, covered %" PRId64, name, len,
                 covered);
        err = kt_consumer_offsetmap_decode(rt_buf, len, commit, &om, why, sizeof(why));
        KT_CHECK(err == KT_OK, "%s: decode '%.60s': %s", name, rt_buf, why);
        KT_CHECK(len || !om, "%s: an empty blob is no map", name);
        KT_CHECK(map_is_prefix(om, x, cnt, covered), "%s: map is not x up to %" PRId64, name,
                 covered);
        kt_consumer_offsetmap_destroy(om);
        if (coveredp)
                *coveredp = covered;
        return len;
}

static int64_t big[200000];

static void test_round_trips(void) {
        static const int64_t one[] = {11}, two[] = {12, 14}, dense[] = {5, 6, 7, 8, 9, 10, 11},
                             sparse[] = {3, 100, 10000, 1000000, 100000000},
                             mixed[] = {101, 102, 103, 110, 112, 113, 114, 115, 200},
                             near_max[] = {1, INT64_MAX / 2, INT64_MAX - 2, INT64_MAX - 1,
                                           INT64_MAX},
                             top[] = {INT64_MAX - 1, INT64_MAX}, top1[] = {INT64_MAX};
        static const struct {
                const char *name;
                int64_t commit;
                const int64_t *x;
                size_t cnt;
        } cases[] = {
            {"empty", 10, NULL, 0},
            {"one", 10, one, 1},
            {"two", 10, two, 2},
            {"dense", 4, dense, 7},
            {"dense, gap at the start", 0, dense, 7},
            {"sparse", 2, sparse, 5},
            {"sparse, far from commit", 0, sparse, 5},
            {"mixed", 100, mixed, 9},
            {"huge gaps near INT64_MAX", 0, near_max, 5},
            {"at INT64_MAX", INT64_MAX - 2, top, 2},
            {"only INT64_MAX", INT64_MAX - 1, top1, 1},
            {"only INT64_MAX, commit 0", 0, top1, 1},
        };
        int64_t covered;

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                round_trip(cases[i].name, cases[i].commit, cases[i].x, cases[i].cnt, SIZE,
                           &covered);
                KT_CHECK(covered == (cases[i].cnt ? cases[i].x[cases[i].cnt - 1] : cases[i].commit),
                         "%s: everything fits, covered %" PRId64, cases[i].name, covered);
        }

        /* 100,000 consecutive offsets: one run, a few bytes. */
        for (size_t i = 0; i < 100000; i++)
                big[i] = 1000 + (int64_t)i;
        KT_CHECK(round_trip("100000 consecutive", 999, big, 100000, SIZE, &covered) < 40,
                 "one run is short");
        KT_CHECK(covered == big[99999], "covered %" PRId64, covered);

        /* 100,000 scattered offsets (every other one, then random): a prefix fits in 4000. */
        for (size_t i = 0; i < 100000; i++)
                big[i] = 1000 + 2 * (int64_t)i;
        round_trip("100000 alternating", 999, big, 100000, SIZE, &covered);
        KT_CHECK(covered > big[0] && covered < big[99999], "prefix: covered %" PRId64, covered);
        /* bitset: 6 offsets a digit, ~3970 digits of ~23970 offsets, ~11900 of them listed */
        KT_CHECK(covered > 1000 + 23000 && covered < 1000 + 24000, "bitset prefix: %" PRId64,
                 covered);
        {
                int64_t o = 999;

                for (size_t i = 0; i < 100000; i++) {
                        o += 1 + (int64_t)rnd_below(3);
                        big[i] = o;
                }
        }
        round_trip("100000 random", 999, big, 100000, SIZE, &covered);
        KT_CHECK(covered > big[0] && covered < big[99999], "prefix: covered %" PRId64, covered);

        /* A long run cut inside: the prefix ends in the middle of it. */
        {
                static int64_t x[40000];

                x[0] = 1;
                for (size_t i = 1; i < 40000; i++)
                        x[i] = 3 + (int64_t)i;
                /* "kt1:0:40000:r" 13 + ":" + 6 = 20, body "A" "A" "B" + run of 39999 (4 digits) */
                round_trip("cut run", 0, x, 40000, 20 + 5 + 1, &covered);
                KT_CHECK(covered == x[1024], "a run cut at 1024 (two digits): %" PRId64, covered);
        }

        /* Just room for one offset (size - 1 bytes), then too small to list anything: an empty
         * blob, covered = commit. */
        KT_CHECK(round_trip("room for one", 10, one, 1, 20, &covered) == 19 && covered == 11,
                 "one fits: covered %" PRId64, covered);
        round_trip("no room", 10, one, 1, 19, &covered);
        KT_CHECK(covered == 10, "nothing listed: covered %" PRId64, covered);
        round_trip("size 1", 10, one, 1, 1, &covered);
        KT_CHECK(covered == 10, "nothing listed: covered %" PRId64, covered);
        /* Over KT_OFFSETMAP_MAX_BYTES: capped even if the caller allows more. */
        for (size_t i = 0; i < 200000; i++)
                big[i] = 1 + 2 * (int64_t)i;
        KT_CHECK(round_trip("over max bytes", 0, big, 200000, sizeof(rt_buf), NULL) ==
                     KT_OFFSETMAP_MAX_BYTES,
                 "capped at KT_OFFSETMAP_MAX_BYTES");
}

/** The checksum the encoder writes, recomputed here from the DESIGN block (FNV-1a 32). */
static void seal(const char *in_, char *out, size_t size) {
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        uint32_t h = 2166136261u;
        size_t len;

        snprintf(out, size, "%s:", in_);
        len = strlen(out);
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)out[i]) * 16777619u;
        for (int i = 5; i >= 0; i--) {
                out[len + (size_t)i] = b64[h & 63];
                h >>= 6;
        }
        out[len + 6] = '\0';
}

#define NUL_BLOB                                                                                   \
        "kt1:1\0"                                                                                  \
        ":1:rAA"
#define I64MAX_1 "9223372036854775806" /* INT64_MAX - 1 */

static void test_malformed(void) {
        static const struct {
                const char *blob;
                size_t len;      /* 0: strlen */
                int64_t commit;  /* the committed offset it is read with */
                int seal;        /* append ":" and the right checksum */
                const char *why; /* NULL: accepted, listing cnt offsets */
                size_t cnt;
        } cases[] = {
            /* good ones, so that the bad ones below are one change away from good */
            {"kt1:100:3:rAC", 0, 100, 1, NULL, 3},
            {"kt1:100:1:bAg", 0, 100, 1, NULL, 1},
            {"kt1:100:2:bAw", 0, 100, 1, NULL, 2},
            {"kt1:100:1000000:rA_xwe", 0, 100, 1, NULL, 1000000},
            {"kt1:" I64MAX_1 ":1:rAA", 0, INT64_MAX - 1, 1, NULL, 1},
            {"kt1:" I64MAX_1 ":1:bAg", 0, INT64_MAX - 1, 1, NULL, 1},
            {"kt1:0:1:r-___________HA", 0, 0, 1, NULL, 1}, /* gap 2^63-2: INT64_MAX */
            {"kt1:0:1:r____________HA", 0, 0, 1, "offsets above INT64_MAX", 0}, /* 2^63 */
            /* not ours, not this version */
            {"hello", 0, 100, 0, "not a version 1 offset map: 'hello'", 0},
            {"kt2:100:3:rAC", 0, 100, 1, "not a version 1 offset map: 'kt2:'", 0},
            {"KT1:100:3:rAC", 0, 100, 1, "not a version 1", 0},
            {"kt", 0, 100, 0, "not a version 1", 0},
            /* bytes */
            {NUL_BLOB, sizeof(NUL_BLOB) - 1, 1, 0, "byte 5 (0x00) is not printable", 0},
            {"kt1:100:3:r AC", 0, 100, 1, "byte 11 (0x20) is not printable", 0},
            {"kt1:100:3:r\tAC", 0, 100, 1, "(0x09) is not printable", 0},
            {"kt1:100:3:r\x80"
             "AC",
             0, 100, 1, "(0x80) is not printable", 0},
            {"kt1:100:3:rA=C", 0, 100, 1, "bad character '=' at byte 12", 0},
            {"kt1:100:3:rA:C", 0, 100, 1, "bad character ':'", 0},
            /* checksum: missing, cut, altered */
            {"kt1:100:3:rAC", 0, 100, 0, "no checksum", 0},
            {"kt1:", 0, 100, 0, "no checksum", 0},
            {"kt1:100:3:rAC:AAAAA", 0, 100, 0, "no checksum", 0},
            {"kt1:100:3:rAC:______", 0, 100, 0, "bad checksum '______'", 0},
            {"kt1:100:3:rAC:AAA=AA", 0, 100, 0, "bad checksum", 0},
            {"kt1:100:3:rAC:AAAAAA", 0, 100, 0, "checksum mismatch", 0},
            /* header fields */
            {"kt1:101:3:rAC", 0, 100, 1, "map is for offset 101, not the committed 100", 0},
            {"kt1:100:3:rAC", 0, 99, 1, "map is for offset 100, not the committed 99", 0},
            {"kt1:0100:3:rAC", 0, 100, 1, "bad commit offset", 0},
            {"kt1:-1:3:rAC", 0, -1, 1, "bad commit offset", 0},
            {"kt1::3:rAC", 0, 100, 1, "bad commit offset", 0},
            {"kt1:9223372036854775808:1:rAA", 0, 100, 1, "bad commit offset", 0},
            {"kt1:100", 0, 100, 1, "bad commit offset", 0},
            {"kt1:100:03:rAC", 0, 100, 1, "bad offset count", 0},
            {"kt1:100:3rAC", 0, 100, 1, "bad offset count", 0},
            {"kt1:100:x:rAC", 0, 100, 1, "bad offset count", 0},
            {"kt1:100:0:rAC", 0, 100, 1, "offset count 0 is outside 1..1000000", 0},
            {"kt1:100:1000001:rAC", 0, 100, 1, "offset count 1000001 is outside", 0},
            {"kt1:100:2:rAC", 0, 100, 1, "lists 3 offsets, says 2", 0},
            {"kt1:100:4:rAC", 0, 100, 1, "lists 3 offsets, says 4", 0},
            {"kt1:100:3:xAC", 0, 100, 1, "unknown kind 'x'", 0},
            {"kt1:100:3:", 0, 100, 1, "no body", 0},
            {"kt1:100:3:r", 0, 100, 1, "no body", 0},
            /* runs */
            {"kt1:100:3:rA", 0, 100, 1, "cut: a gap without a run", 0},
            {"kt1:100:3:rACB", 0, 100, 1, "cut: a gap without a run", 0},
            {"kt1:100:3:rAg", 0, 100, 1, "cut inside a number at byte 13", 0},
            {"kt1:100:3:rgAC", 0, 100, 1, "number not in its shortest form at byte 12", 0},
            {"kt1:100:3:rAC__", 0, 100, 1, "cut inside a number", 0},
            {"kt1:100:1:r_____________BA", 0, 100, 1, "number overflows", 0},
            {"kt1:100:1:rggggggggggggQA", 0, 100, 1, "number overflows", 0}, /* 2^64 */
            {"kt1:100:2:rAA____________PA", 0, 100, 1, "gap overflows", 0},
            {"kt1:0:1:rggggggggggggIA", 0, 0, 1, "offsets above INT64_MAX", 0}, /* gap 2^63 */
            {"kt1:" I64MAX_1 ":2:rAB", 0, INT64_MAX - 1, 1, "offsets above INT64_MAX", 0},
            {"kt1:" I64MAX_1 ":2:rAAAA", 0, INT64_MAX - 1, 1, "offsets above INT64_MAX", 0},
            {"kt1:1:2:r____________HA", 0, 1, 1, "offsets above INT64_MAX", 0},
            {"kt1:100:1000001:rAgywe", 0, 100, 1, "offset count 1000001 is outside", 0},
            {"kt1:100:1000000:rAgywe", 0, 100, 1, "lists more than 1000000 offsets", 0},
            {"kt1:100:1000000:rA_xweAA", 0, 100, 1, "lists more than 1000000 offsets", 0},
            {"kt1:100:1:rA____________P", 0, 100, 1, "offsets above INT64_MAX", 0},
            /* bitsets */
            {"kt1:100:1:bA", 0, 100, 1, "cut: a bitset without bits", 0},
            {"kt1:100:1:bAQ", 0, 100, 1, "bitset does not start with a done offset", 0},
            {"kt1:100:1:bAgA", 0, 100, 1, "bitset ends in an empty digit", 0},
            {"kt1:100:1:bAg=", 0, 100, 1, "bad character '='", 0},
            {"kt1:100:1:bg", 0, 100, 1, "cut inside a number", 0},
            {"kt1:" I64MAX_1 ":2:bAw", 0, INT64_MAX - 1, 1, "offsets above INT64_MAX", 0},
            {"kt1:" I64MAX_1 ":1:bBg", 0, INT64_MAX - 1, 1, "offsets above INT64_MAX", 0},
            {"kt1:0:1:bggggggggggggIg", 0, 0, 1, "offsets above INT64_MAX", 0},
        };
        char blob[256], why[256];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_offsetmap_t *om = (kt_offsetmap_t *)&rng;
                size_t len;
                kt_err_t err;

                if (cases[i].seal) {
                        seal(cases[i].blob, blob, sizeof(blob));
                        len = strlen(blob);
                } else {
                        len = cases[i].len ? cases[i].len : strlen(cases[i].blob);
                        memcpy(blob, cases[i].blob, len);
                }
                why[0] = '\0';
                err =
                    kt_consumer_offsetmap_decode(blob, len, cases[i].commit, &om, why, sizeof(why));
                if (!cases[i].why) {
                        KT_CHECK(err == KT_OK && om, "case %zu (%s): %s", i, cases[i].blob, why);
                        KT_CHECK(kt_consumer_offsetmap_cnt(om) == cases[i].cnt,
                                 "case %zu: %zu offsets, want %zu", i,
                                 kt_consumer_offsetmap_cnt(om), cases[i].cnt);
                } else {
                        KT_CHECK(err == KT_ERR_INVALID, "case %zu (%s): accepted", i,
                                 cases[i].blob);
                        KT_CHECK(!om, "case %zu: a map on error", i);
                        KT_CHECK(strstr(why, cases[i].why) != NULL, "case %zu: want '%s' in '%s'",
                                 i, cases[i].why, why);
                }
                kt_consumer_offsetmap_destroy(err == KT_OK ? om : NULL);
        }

        /* What the good ones list. */
        {
                kt_offsetmap_t *om;

                seal("kt1:100:9:rBAAEAC", blob, sizeof(blob)); /* 102, 104..108, 110..112 */
                KT_CHECK(kt_consumer_offsetmap_decode(blob, strlen(blob), 100, &om, why,
                                                      sizeof(why)) == KT_OK,
                         "%s", why);
                for (int64_t o = 95; o < 120; o++)
                        KT_CHECK(kt_consumer_offsetmap_done(om, o) ==
                                     (o == 102 || (o >= 104 && o <= 108) || (o >= 110 && o <= 112)),
                                 "offset %" PRId64, o);
                KT_CHECK(kt_consumer_offsetmap_last(om) == 112, "last");
                {
                        static const int64_t from[] = {0, 102, 103, 104, 106, 109, 112, 113},
                                             want[] = {102, 102, 104, 104, 106, 110, 112, -1};

                        for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++)
                                KT_CHECK(kt_consumer_offsetmap_next(om, from[i]) == want[i],
                                         "next(%" PRId64 ") = %" PRId64 ", want %" PRId64, from[i],
                                         kt_consumer_offsetmap_next(om, from[i]), want[i]);
                }
                kt_consumer_offsetmap_destroy(om);

                seal("kt1:100:4:bBmQ", blob, sizeof(blob)); /* 102: 100110 010000 */
                KT_CHECK(kt_consumer_offsetmap_decode(blob, strlen(blob), 100, &om, why,
                                                      sizeof(why)) == KT_OK,
                         "%s", why);
                for (int64_t o = 95; o < 120; o++)
                        KT_CHECK(kt_consumer_offsetmap_done(om, o) ==
                                     (o == 102 || o == 105 || o == 106 || o == 109),
                                 "bitset offset %" PRId64, o);
                kt_consumer_offsetmap_destroy(om);

                /* A terminator counted in the length is tolerated. */
                seal("kt1:100:3:rAC", blob, sizeof(blob));
                KT_CHECK(kt_consumer_offsetmap_decode(blob, strlen(blob) + 1, 100, &om, why,
                                                      sizeof(why)) == KT_OK &&
                             kt_consumer_offsetmap_cnt(om) == 3,
                         "trailing NUL: %s", why);
                kt_consumer_offsetmap_destroy(om);
        }

        /* No map: not an error, and a NULL map has nothing done. */
        {
                kt_offsetmap_t *om = (kt_offsetmap_t *)&rng;

                KT_CHECK(kt_consumer_offsetmap_decode(NULL, 0, 5, &om, why, sizeof(why)) == KT_OK &&
                             !om,
                         "NULL blob");
                om = (kt_offsetmap_t *)&rng;
                KT_CHECK(kt_consumer_offsetmap_decode("", 0, 5, &om, why, sizeof(why)) == KT_OK &&
                             !om,
                         "empty blob");
                om = (kt_offsetmap_t *)&rng;
                KT_CHECK(kt_consumer_offsetmap_decode("", 1, 5, &om, NULL, 0) == KT_OK && !om,
                         "a lone NUL");
                KT_CHECK(!kt_consumer_offsetmap_done(NULL, 6) && !kt_consumer_offsetmap_cnt(NULL) &&
                             kt_consumer_offsetmap_last(NULL) == -1 &&
                             kt_consumer_offsetmap_next(NULL, 0) == -1,
                         "NULL map");
                kt_consumer_offsetmap_destroy(NULL);
        }

        /* Too long, even if it were well formed; no errstr at all is fine. */
        {
                static char huge[KT_OFFSETMAP_MAX_BYTES + 1];
                kt_offsetmap_t *om;

                memset(huge, 'A', sizeof(huge));
                memcpy(huge, "kt1:", 4);
                KT_CHECK(kt_consumer_offsetmap_decode(huge, sizeof(huge), 0, &om, why,
                                                      sizeof(why)) == KT_ERR_INVALID &&
                             !om && strstr(why, "65537 bytes, over 65536"),
                         "%s", why);
                KT_CHECK(kt_consumer_offsetmap_decode(huge, sizeof(huge), 0, &om, NULL, 0) ==
                             KT_ERR_INVALID,
                         "no errstr");
        }
}

static void test_encode_args(void) {
        static const int64_t ok[] = {11, 12}, same[] = {11, 11}, down[] = {12, 11},
                             low[] = {10, 12};
        char buf[64];
        size_t len = 7;
        int64_t covered = 7;

        KT_CHECK(kt_consumer_offsetmap_encode(10, ok, 2, NULL, 64, &len, &covered) ==
                         KT_ERR_INVALID &&
                     len == 0 && covered == 10,
                 "NULL buf");
        KT_CHECK(kt_consumer_offsetmap_encode(10, ok, 2, buf, 0, NULL, NULL) == KT_ERR_INVALID,
                 "size 0");
        KT_CHECK(kt_consumer_offsetmap_encode(-1, ok, 2, buf, 64, NULL, NULL) == KT_ERR_INVALID &&
                     !buf[0],
                 "negative commit");
        KT_CHECK(kt_consumer_offsetmap_encode(10, NULL, 2, buf, 64, NULL, NULL) == KT_ERR_INVALID,
                 "NULL done");
        KT_CHECK(kt_consumer_offsetmap_encode(10, same, 2, buf, 64, NULL, NULL) == KT_ERR_INVALID,
                 "repeated");
        KT_CHECK(kt_consumer_offsetmap_encode(10, down, 2, buf, 64, NULL, NULL) == KT_ERR_INVALID,
                 "decreasing");
        KT_CHECK(kt_consumer_offsetmap_encode(10, low, 2, buf, 64, &len, NULL) == KT_ERR_INVALID &&
                     !buf[0] && len == 0,
                 "the commit offset itself is not done");
        KT_CHECK(kt_consumer_offsetmap_encode(10, ok, 2, buf, 64, &len, &covered) == KT_OK &&
                     covered == 12 && len == strlen(buf),
                 "good");
        KT_CHECK(!strncmp(buf, "kt1:10:2:", 9), "header '%s'", buf);
}

/**
 * Random sets, random room: the map is exactly the prefix up to covered; then the blob is
 * altered (one byte, a cut, a byte inserted) and whatever still decodes lists only offsets of x.
 */
static void test_random(void) {
        static const size_t sizes[] = {1, 16, 24, 28, 32, 40, 64, 100, 300, SIZE};
        static int64_t x[2000];
        static char buf[SIZE + 2], alt[SIZE + 2];
        int bad_prefix = 0, trusted_alien = 0, accepted_alt = 0;

        for (int iter = 0; iter < 4000; iter++) {
                int64_t commit = rnd_below(4) == 0 ? INT64_MAX - 3000 - (int64_t)rnd_below(100)
                                                   : (int64_t)rnd_below(1u << 20),
                        o = commit, covered;
                size_t cnt = (size_t)rnd_below(sizeof(x) / sizeof(x[0])), size, len, k;
                unsigned dense = (unsigned)rnd_below(4);
                kt_offsetmap_t *om;
                char why[256];

                if (rnd_below(8) == 0)
                        cnt = (size_t)rnd_below(4);
                for (size_t i = 0; i < cnt; i++) {
                        /* dense: mostly +1; scattered: +1..+8; sometimes a big jump */
                        uint64_t step = dense == 0 ? 1 + (rnd_below(10) == 0)
                                        : dense == 3 && rnd_below(50) == 0
                                            ? 1 + rnd_below(1u << 30)
                                            : 1 + rnd_below(dense * 4);

                        if ((uint64_t)(INT64_MAX - o) < step) {
                                cnt = i;
                                break;
                        }
                        o += (int64_t)step;
                        x[i] = o;
                }
                size = sizes[rnd_below(sizeof(sizes) / sizeof(sizes[0]))];
                if (kt_consumer_offsetmap_encode(commit, x, cnt, buf, size, &len, &covered) !=
                        KT_OK ||
                    !blob_sane(buf, len, size)) {
                        bad_prefix++;
                        continue;
                }
                om = NULL;
                if (kt_consumer_offsetmap_decode(buf, len, commit, &om, why, sizeof(why)) !=
                        KT_OK ||
                    (len && !om) || !map_is_prefix(om, x, cnt, covered))
                        bad_prefix++;
                kt_consumer_offsetmap_destroy(om);
                if (!len)
                        continue;

                /* Alter it. */
                memcpy(alt, buf, len + 1);
                k = len;
                switch (rnd_below(3)) {
                case 0:
                        alt[rnd_below(len)] = (char)(0x21 + rnd_below(0x5e));
                        break;
                case 1:
                        k = (size_t)rnd_below(len);
                        break;
                default: {
                        size_t at = (size_t)rnd_below(len + 1);

                        memmove(alt + at + 1, alt + at, len - at);
                        alt[at] = (char)(0x21 + rnd_below(0x5e));
                        k = len + 1;
                }
                }
                om = NULL;
                if (kt_consumer_offsetmap_decode(alt, k, commit, &om, why, sizeof(why)) == KT_OK &&
                    om) {
                        size_t listed = 0;

                        accepted_alt++;
                        for (size_t i = 0; i < cnt; i++)
                                listed += (size_t)kt_consumer_offsetmap_done(om, x[i]);
                        /* every offset it lists is one of x: as many of x listed as in all */
                        if (listed != kt_consumer_offsetmap_cnt(om))
                                trusted_alien++;
                }
                kt_consumer_offsetmap_destroy(om);
        }
        KT_CHECK(bad_prefix == 0, "%d random round trips are not the prefix up to covered",
                 bad_prefix);
        KT_CHECK(trusted_alien == 0, "%d altered blobs listed offsets never done", trusted_alien);
        /* a substituted byte equal to the original leaves the blob intact: a few are accepted */
        KT_CHECK(accepted_alt < 100, "%d altered blobs accepted", accepted_alt);
}

/** Blob sizes of typical shapes (the cost of the map in every commit). */
/** Microseconds one encode of \p x takes, the mean of a few hundred (printed, not checked:
 *  under the sanitizers, so an upper bound of the release build's cost per commit). */
static double encode_us(int64_t commit, const int64_t *x, size_t cnt) {
        static char buf[SIZE];
        struct timespec t0, t1;
        const int reps = 300;
        size_t len;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < reps; i++)
                if (kt_consumer_offsetmap_encode(commit, x, cnt, buf, sizeof(buf), &len, NULL))
                        return -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
               reps;
}

static void report_sizes(void) {
        static int64_t x[5000];
        static const struct {
                const char *shape;
                size_t window, done;
        } shapes[] = {
            {"none ordering, 64 in flight: 50 done of 64", 64, 50},
            {"10 done of 64", 64, 10},
            {"all but the head: 63 of 64", 64, 63},
            {"256 in flight: 200 done of 256", 256, 200},
            {"1000 done of a 5000 window", 5000, 1000},
            {"2500 done of a 5000 window", 5000, 2500},
            {"4900 done of a 5000 window", 5000, 4900},
        };
        const int64_t commit = 123456789; /* a 9-digit offset, as on a busy partition */

        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
                static unsigned char pick[5000];
                size_t cnt = 0, len;
                int64_t covered;

                /* choose `done` of window - 1 slots above the (not done) head, evenly random */
                memset(pick, 0, sizeof(pick));
                for (size_t n = 0; n < shapes[s].done;) {
                        size_t i = 1 + (size_t)rnd_below(shapes[s].window - 1);

                        if (!pick[i]) {
                                pick[i] = 1;
                                n++;
                        }
                }
                for (size_t i = 1; i < shapes[s].window; i++)
                        if (pick[i])
                                x[cnt++] = commit + (int64_t)i;
                len = round_trip(shapes[s].shape, commit, x, cnt, SIZE, &covered);
                printf("offsetmap: %-45s %4zu bytes (%s%s), %6.2f us to encode\n", shapes[s].shape,
                       len, strstr(rt_buf, ":b") ? "bitset" : "runs",
                       covered == x[cnt - 1] ? "" : ", cut", encode_us(commit, x, cnt));
        }
}

int main(void) {
        test_round_trips();
        test_malformed();
        test_encode_args();
        test_random();
        report_sizes();
        return kt_test_done("test_offsetmap");
}
