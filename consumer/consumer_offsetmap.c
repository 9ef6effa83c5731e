/*
 * DESIGN: the completed-offset map, carried in a commit's metadata.
 *
 * Why. The committed offset is a watermark: the first record not done. In `key` and `none`
 * ordering many records above it are done already when a drain times out, a final commit
 * fails or the process is killed; a new owner of the partition would call the function for
 * them again. So every commit carries, in its metadata string, the offsets done above the
 * committed one (as Confluent's Parallel Consumer does), and a new owner skips those. Whatever
 * the map says done is skipped for good, so the decoder trusts nothing it cannot fully check:
 * a blob that does not parse exactly is ignored as a whole (the records are then redone, which
 * at-least-once allows), never read in part.
 *
 * Why text. The metadata is a Kafka string; librdkafka 2.0.2 may cut it at a NUL byte and
 * tools print it. So a blob is printable ASCII (0x21..0x7e, no space, no NUL), NUL-terminated
 * by the encoder, its length without the NUL, at most KT_OFFSETMAP_MAX_BYTES and whatever the
 * caller gives (the broker refuses a commit whose metadata is over offset.metadata.max.bytes,
 * 4096 by default: the commit itself would fail).
 *
 * Format (version 1):
 *
 *     kt1:<commit>:<n>:<kind><body>:<check>
 *
 *   commit  the committed offset the map belongs to, decimal; a map read with another commit
 *           offset (offsets reset by a tool, metadata copied) is refused.
 *   n       how many offsets the map lists, decimal, 1..KT_OFFSETMAP_MAX_OFFSETS.
 *   kind    'r' (runs) or 'b' (bitset); the encoder writes both and keeps the one listing more
 *           offsets, the shorter if both list all.
 *   check   FNV-1a 32 of every byte before it (up to and including the ':'), 6 base64url
 *           digits, most significant first. It catches a cut or altered blob that would still
 *           parse. (No library we link exposes a CRC; FNV is five lines.)
 *
 *   Numbers in a body are base64url VLQs (as in source maps, unsigned): each digit carries 5
 *   bits, least significant group first, and the value 32 set while more digits follow; so
 *   0..31 take one character, 32..1023 two. A VLQ must be minimal (no trailing zero group).
 *
 *   'r' body: pairs <gap><len-1>. The first gap is the count of offsets between the commit
 *           offset and the first run (first run start = commit + 1 + gap), each later gap is
 *           the count of offsets between two runs minus one (runs never touch); a run lists len
 *           consecutive offsets. Good for dense runs and for huge gaps.
 *   'b' body: <gap> as above, then the offsets from the first listed one on as a bitset, six
 *           offsets per base64url digit, most significant bit first. The first bit is set, the
 *           last digit is not zero and padding bits are zero. Good for scattered completions
 *           (one byte per six offsets of window).
 *
 * Covered. When everything does not fit, the encoder lists the lowest offsets (a prefix of the
 * done list, possibly ending inside a run) and reports through coveredp the highest offset it
 * listed. The map is exact up to it; above it nothing is listed, so a new owner redoes those
 * records (duplicates, never a loss). The commit itself never depends on the map: the caller
 * commits the watermark whatever fits, an empty blob (nothing listed) included.
 *
 * Bounds. n <= KT_OFFSETMAP_MAX_OFFSETS and length <= KT_OFFSETMAP_MAX_BYTES on both sides:
 * the encoder never writes what the decoder would refuse. The decoder validates in one pass
 * and allocates exactly the runs found (at most one per two body bytes, or per two bits), and
 * offsets are checked against INT64_MAX before any addition.
 */
#include "consumer.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION   "kt1:"
#define CHECK_LEN 6 /* base64url digits of the 32-bit checksum */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** One run of consecutive done offsets, first..last inclusive. */
struct run {
        int64_t first, last;
};

struct kt_offsetmap {
        size_t cnt;       /**< offsets listed */
        size_t run_cnt;   /**< entries of runs[] */
        struct run *runs; /**< increasing, never touching */
};

static int b64val(unsigned char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '-')
                return 62;
        if (c == '_')
                return 63;
        return -1;
}

static uint32_t fnv1a(const char *s, size_t len) {
        uint32_t h = 2166136261u;

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)s[i]) * 16777619u;
        return h;
}

static size_t vlq_len(uint64_t v) {
        size_t n = 1;

        while (v >>= 5)
                n++;
        return n;
}

static size_t vlq_put(char *p, uint64_t v) {
        size_t n = 0;

        do {
                unsigned d = (unsigned)(v & 31);

                v >>= 5;
                p[n++] = b64[d | (v ? 32u : 0u)];
        } while (v);
        return n;
}

static size_t dec_len(uint64_t v) {
        size_t n = 1;

        while (v /= 10)
                n++;
        return n;
}

/* ---------------------------------------------------------------- encoding */

/**
 * The 'r' body for the longest prefix of done[0..cnt) that fits in \p room characters,
 * written to \p out if non-NULL. @returns the offsets listed; *lenp the body length.
 */
static size_t runs_put(int64_t commit, const int64_t *done, size_t cnt, size_t room, char *out,
                       size_t *lenp) {
        uint64_t pos = (uint64_t)commit + 1;
        size_t i = 0, len = 0, k = 0;

        while (i < cnt) {
                size_t j = i + 1, sl, rl;
                uint64_t sv, run;

                while (j < cnt && done[j] == done[j - 1] + 1)
                        j++;
                run = j - i;
                sv = (uint64_t)done[i] - pos - (i ? 1 : 0);
                sl = vlq_len(sv);
                if (len + sl >= room) /* not even a one-digit run length after it */
                        break;
                rl = vlq_len(run - 1);
                if (len + sl + rl > room) {
                        /* Cut the run to the longest one whose length fits. */
                        rl = room - len - sl;
                        run = (uint64_t)1 << (5 * rl);
                }
                if (out) {
                        vlq_put(out + len, sv);
                        vlq_put(out + len + sl, run - 1);
                }
                len += sl + rl;
                k += (size_t)run;
                if (run < j - i)
                        break;
                pos = (uint64_t)done[j - 1] + 1;
                i = j;
        }
        *lenp = len;
        return k;
}

/** As runs_put() for the 'b' body. */
static size_t bits_put(int64_t commit, const int64_t *done, size_t cnt, size_t room, char *out,
                       size_t *lenp) {
        uint64_t skip = (uint64_t)(done[0] - commit - 1), maxspan;
        size_t sl = vlq_len(skip), k, nch;

        *lenp = 0;
        if (sl >= room)
                return 0;
        maxspan = 6 * (uint64_t)(room - sl);
        for (k = 0; k < cnt && (uint64_t)(done[k] - done[0]) < maxspan; k++)
                ;
        nch = (size_t)(((uint64_t)(done[k - 1] - done[0]) + 1 + 5) / 6);
        if (out) {
                unsigned char *bits = (unsigned char *)out + vlq_put(out, skip);

                memset(bits, 0, nch);
                for (size_t i = 0; i < k; i++) {
                        uint64_t b = (uint64_t)(done[i] - done[0]);

                        bits[b / 6] = (unsigned char)(bits[b / 6] | (32u >> (b % 6)));
                }
                for (size_t i = 0; i < nch; i++)
                        bits[i] = (unsigned char)b64[bits[i]];
        }
        *lenp = sl + nch;
        return k;
}

kt_err_t kt_consumer_offsetmap_encode(int64_t commit_offset, const int64_t *done, size_t done_cnt,
                                      char *buf, size_t size, size_t *lenp, int64_t *coveredp) {
        size_t cnt, budget, head, room, k_r, len_r, k_b, len_b, k, len;
        uint32_t h;
        char kind;
        int n;

        if (lenp)
                *lenp = 0;
        if (coveredp)
                *coveredp = commit_offset;
        if (!buf || !size)
                return KT_ERR_INVALID;
        buf[0] = '\0';
        if (commit_offset < 0 || (done_cnt && !done))
                return KT_ERR_INVALID;
        for (size_t i = 0; i < done_cnt; i++)
                if (done[i] <= (i ? done[i - 1] : commit_offset))
                        return KT_ERR_INVALID;

        cnt = done_cnt < KT_OFFSETMAP_MAX_OFFSETS ? done_cnt : KT_OFFSETMAP_MAX_OFFSETS;
        if (!cnt)
                return KT_OK;
        budget = size - 1 < KT_OFFSETMAP_MAX_BYTES ? size - 1 : KT_OFFSETMAP_MAX_BYTES;
        /* "kt1:" commit ':' n ':' kind ... ':' check; n is at most cnt, so no longer. */
        head = strlen(VERSION) + dec_len((uint64_t)commit_offset) + 1 + dec_len(cnt) + 1 + 1 + 1 +
               CHECK_LEN;
        if (budget <= head)
                return KT_OK;
        room = budget - head;

        k_r = runs_put(commit_offset, done, cnt, room, NULL, &len_r);
        k_b = bits_put(commit_offset, done, cnt, room, NULL, &len_b);
        if (!k_r && !k_b)
                return KT_OK;
        kind = k_b > k_r || (k_b == k_r && len_b < len_r) ? 'b' : 'r';
        k = kind == 'b' ? k_b : k_r;

        n = snprintf(buf, size, VERSION "%" PRId64 ":%zu:%c", commit_offset, k, kind);
        if (n < 0 || (size_t)n + (kind == 'b' ? len_b : len_r) + 1 + CHECK_LEN >= size) {
                buf[0] = '\0'; /* cannot happen: head was counted with cnt >= k */
                return KT_ERR_INVALID;
        }
        len = (size_t)n;
        if (kind == 'b')
                bits_put(commit_offset, done, cnt, room, buf + len, &len_b);
        else
                runs_put(commit_offset, done, cnt, room, buf + len, &len_r);
        len += kind == 'b' ? len_b : len_r;
        buf[len++] = ':';
        h = fnv1a(buf, len);
        for (int i = CHECK_LEN - 1; i >= 0; i--) {
                buf[len + (size_t)i] = b64[h & 63];
                h >>= 6;
        }
        len += CHECK_LEN;
        buf[len] = '\0';

        if (lenp)
                *lenp = len;
        if (coveredp)
                *coveredp = done[k - 1]; /* exactly done[0..k) is listed, a cut run included */
        return KT_OK;
}

/* ---------------------------------------------------------------- decoding */

static kt_err_t fail(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kt_err_t fail(char *errstr, size_t errstr_size, const char *fmt, ...) {
        va_list ap;

        if (!errstr || !errstr_size)
                return KT_ERR_INVALID;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
        return KT_ERR_INVALID;
}

/** A decimal 0..INT64_MAX at s[*pp..end), no sign, no leading zero. */
static int dec_get(const char *s, size_t *pp, size_t end, int64_t *vp) {
        size_t p = *pp;
        uint64_t v = 0;

        if (p >= end || s[p] < '0' || s[p] > '9')
                return -1;
        if (s[p] == '0' && p + 1 < end && s[p + 1] >= '0' && s[p + 1] <= '9')
                return -1;
        for (; p < end && s[p] >= '0' && s[p] <= '9'; p++) {
                unsigned d = (unsigned)(s[p] - '0');

                if (v > ((uint64_t)INT64_MAX - d) / 10)
                        return -1;
                v = v * 10 + d;
        }
        *pp = p;
        *vp = (int64_t)v;
        return 0;
}

/** Parse state of one body. */
struct body {
        const char *s;
        size_t p, end;
        char *errstr;
        size_t errstr_size;
};

static kt_err_t vlq_get(struct body *b, uint64_t *vp) {
        uint64_t v = 0;
        unsigned shift = 0;

        for (;;) {
                int c;
                uint64_t d;

                if (b->p >= b->end)
                        return fail(b->errstr, b->errstr_size, "cut inside a number at byte %zu",
                                    b->p);
                c = b64val((unsigned char)b->s[b->p]);
                if (c < 0)
                        return fail(b->errstr, b->errstr_size, "bad character '%c' at byte %zu",
                                    b->s[b->p], b->p);
                b->p++;
                d = (uint64_t)(c & 31);
                if (shift >= 64 || ((d << shift) >> shift) != d)
                        return fail(b->errstr, b->errstr_size, "number overflows at byte %zu",
                                    b->p - 1);
                if (shift && !(c & 32) && !d)
                        return fail(b->errstr, b->errstr_size,
                                    "number not in its shortest form at byte %zu", b->p - 1);
                v |= d << shift;
                shift += 5;
                if (!(c & 32))
                        break;
        }
        *vp = v;
        return KT_OK;
}

/** Append first..last to \p runs (if non-NULL) and count it, within the caps. */
static kt_err_t run_add(struct body *b, struct run *runs, size_t *run_cntp, size_t *cntp,
                        uint64_t first, uint64_t last) {
        if (last - first >= (uint64_t)KT_OFFSETMAP_MAX_OFFSETS - *cntp)
                return fail(b->errstr, b->errstr_size, "lists more than %d offsets",
                            KT_OFFSETMAP_MAX_OFFSETS);
        if (runs) {
                runs[*run_cntp].first = (int64_t)first;
                runs[*run_cntp].last = (int64_t)last;
        }
        (*run_cntp)++;
        *cntp += (size_t)(last - first + 1);
        return KT_OK;
}

/** Walk an 'r' body: checks it, counts runs and offsets, fills \p runs if non-NULL. */
static kt_err_t runs_get(struct body *b, int64_t commit, struct run *runs, size_t *run_cntp,
                         size_t *cntp) {
        uint64_t pos = (uint64_t)commit + 1;
        kt_err_t err;

        *run_cntp = *cntp = 0;
        while (b->p < b->end) {
                uint64_t sv, rv, first;

                if ((err = vlq_get(b, &sv)))
                        return err;
                if (b->p >= b->end)
                        return fail(b->errstr, b->errstr_size, "cut: a gap without a run");
                if ((err = vlq_get(b, &rv)))
                        return err;
                if (*run_cntp && sv == UINT64_MAX)
                        return fail(b->errstr, b->errstr_size, "gap overflows");
                sv += *run_cntp ? 1 : 0;
                if (pos > (uint64_t)INT64_MAX || sv > (uint64_t)INT64_MAX - pos ||
                    rv > (uint64_t)INT64_MAX - (pos + sv))
                        return fail(b->errstr, b->errstr_size, "offsets above INT64_MAX");
                first = pos + sv;
                if ((err = run_add(b, runs, run_cntp, cntp, first, first + rv)))
                        return err;
                pos = first + rv + 1;
        }
        return KT_OK;
}

/** As runs_get() for a 'b' body. */
static kt_err_t bits_get(struct body *b, int64_t commit, struct run *runs, size_t *run_cntp,
                         size_t *cntp) {
        uint64_t sv, base, i, nbits, first = 0;
        int in_run = 0;
        kt_err_t err;

        *run_cntp = *cntp = 0;
        if ((err = vlq_get(b, &sv)))
                return err;
        if (b->p >= b->end)
                return fail(b->errstr, b->errstr_size, "cut: a bitset without bits");
        if (sv > (uint64_t)INT64_MAX - ((uint64_t)commit + 1))
                return fail(b->errstr, b->errstr_size, "offsets above INT64_MAX");
        base = (uint64_t)commit + 1 + sv;
        nbits = 6 * (uint64_t)(b->end - b->p);
        for (i = 0; i < nbits; i++) {
                int c = b64val((unsigned char)b->s[b->p + i / 6]);
                int set;

                if (c < 0)
                        return fail(b->errstr, b->errstr_size, "bad character '%c' at byte %zu",
                                    b->s[b->p + i / 6], (size_t)(b->p + i / 6));
                if (i % 6 == 0 && i + 6 == nbits && !c)
                        return fail(b->errstr, b->errstr_size, "bitset ends in an empty digit");
                set = (c >> (5 - i % 6)) & 1;
                if (!i && !set)
                        return fail(b->errstr, b->errstr_size,
                                    "bitset does not start with a done offset");
                if (set && i > (uint64_t)INT64_MAX - base)
                        return fail(b->errstr, b->errstr_size, "offsets above INT64_MAX");
                if (set && !in_run) {
                        first = base + i;
                        in_run = 1;
                } else if (!set && in_run) {
                        if ((err = run_add(b, runs, run_cntp, cntp, first, base + i - 1)))
                                return err;
                        in_run = 0;
                }
        }
        if (in_run && (err = run_add(b, runs, run_cntp, cntp, first, base + nbits - 1)))
                return err;
        b->p = b->end;
        return KT_OK;
}

/** Up to 32 bytes of untrusted \p s for a message, others than 0x21..0x7e shown as '?'. */
static const char *shown(const char *s, size_t len, char buf[33]) {
        size_t i;

        for (i = 0; i < len && i < 32; i++)
                buf[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
        buf[i] = '\0';
        return buf;
}

kt_err_t kt_consumer_offsetmap_decode(const char *blob, size_t len, int64_t commit_offset,
                                      kt_offsetmap_t **mapp, char *errstr, size_t errstr_size) {
        struct body b = {blob, 0, 0, errstr, errstr_size};
        kt_offsetmap_t *om = NULL;
        int64_t commit, n;
        size_t run_cnt, cnt, end;
        uint32_t check = 0;
        char kind, show[33];
        kt_err_t err;

        *mapp = NULL;
        if (errstr && errstr_size)
                errstr[0] = '\0';
        if (blob && len && blob[len - 1] == '\0')
                len--; /* the terminator counted in the length */
        if (!blob || !len)
                return KT_OK;
        if (len > KT_OFFSETMAP_MAX_BYTES)
                return fail(errstr, errstr_size, "%zu bytes, over %d", len, KT_OFFSETMAP_MAX_BYTES);
        for (size_t i = 0; i < len; i++)
                if (blob[i] <= 0x20 || blob[i] >= 0x7f)
                        return fail(errstr, errstr_size, "byte %zu (0x%02x) is not printable ASCII",
                                    i, (unsigned)(unsigned char)blob[i]);
        if (len < strlen(VERSION) || memcmp(blob, VERSION, strlen(VERSION))) {
                const char *colon = memchr(blob, ':', len);

                return fail(errstr, errstr_size, "not a version 1 offset map: '%s'",
                            shown(blob, colon ? (size_t)(colon - blob) + 1 : len, show));
        }
        if (len < strlen(VERSION) + 1 + CHECK_LEN || blob[len - CHECK_LEN - 1] != ':')
                return fail(errstr, errstr_size, "no checksum (cut?)");
        for (size_t i = len - CHECK_LEN; i < len; i++) {
                int c = b64val((unsigned char)blob[i]);

                if (c < 0 || (i == len - CHECK_LEN && c > 3))
                        return fail(errstr, errstr_size, "bad checksum '%s'",
                                    shown(blob + len - CHECK_LEN, CHECK_LEN, show));
                check = check << 6 | (uint32_t)c;
        }
        if (check != fnv1a(blob, len - CHECK_LEN))
                return fail(errstr, errstr_size, "checksum mismatch (cut or altered)");
        end = len - CHECK_LEN - 1;

        b.p = strlen(VERSION);
        if (dec_get(blob, &b.p, end, &commit) || b.p >= end || blob[b.p] != ':')
                return fail(errstr, errstr_size, "bad commit offset");
        if (commit != commit_offset)
                return fail(errstr, errstr_size,
                            "map is for offset %" PRId64 ", not the committed %" PRId64, commit,
                            commit_offset);
        b.p++;
        if (dec_get(blob, &b.p, end, &n) || b.p >= end || blob[b.p] != ':')
                return fail(errstr, errstr_size, "bad offset count");
        if (n < 1 || n > KT_OFFSETMAP_MAX_OFFSETS)
                return fail(errstr, errstr_size, "offset count %" PRId64 " is outside 1..%d", n,
                            KT_OFFSETMAP_MAX_OFFSETS);
        b.p++;
        if (b.p >= end)
                return fail(errstr, errstr_size, "no body");
        kind = blob[b.p++];
        if (kind != 'r' && kind != 'b')
                return fail(errstr, errstr_size, "unknown kind '%c'", kind);
        b.end = end;

        /* Check it all first, then allocate what was found and fill it. */
        {
                size_t start = b.p;

                err = kind == 'r' ? runs_get(&b, commit, NULL, &run_cnt, &cnt)
                                  : bits_get(&b, commit, NULL, &run_cnt, &cnt);
                if (err)
                        return err;
                if (!run_cnt)
                        return fail(errstr, errstr_size, "no body");
                if (cnt != (size_t)n)
                        return fail(errstr, errstr_size, "lists %zu offsets, says %" PRId64, cnt,
                                    n);
                om = calloc(1, sizeof(*om));
                if (!om || !(om->runs = calloc(run_cnt, sizeof(*om->runs)))) {
                        free(om);
                        return KT_ERR_NOMEM;
                }
                b.p = start;
                err = kind == 'r' ? runs_get(&b, commit, om->runs, &om->run_cnt, &om->cnt)
                                  : bits_get(&b, commit, om->runs, &om->run_cnt, &om->cnt);
                if (err) { /* cannot happen: the same walk succeeded */
                        kt_consumer_offsetmap_destroy(om);
                        return err;
                }
        }
        *mapp = om;
        return KT_OK;
}

/** @returns the index of the first run whose last is >= \p offset (run_cnt if none). */
static size_t run_find(const kt_offsetmap_t *om, int64_t offset) {
        size_t lo = 0, hi = om->run_cnt;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (om->runs[mid].last < offset)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

int kt_consumer_offsetmap_done(const kt_offsetmap_t *om, int64_t offset) {
        size_t i;

        if (!om)
                return 0;
        i = run_find(om, offset);
        return i < om->run_cnt && om->runs[i].first <= offset;
}

int64_t kt_consumer_offsetmap_next(const kt_offsetmap_t *om, int64_t offset) {
        size_t i;

        if (!om)
                return -1;
        i = run_find(om, offset);
        if (i == om->run_cnt)
                return -1;
        return om->runs[i].first > offset ? om->runs[i].first : offset;
}

int64_t kt_consumer_offsetmap_last(const kt_offsetmap_t *om) {
        return om && om->run_cnt ? om->runs[om->run_cnt - 1].last : -1;
}

size_t kt_consumer_offsetmap_cnt(const kt_offsetmap_t *om) {
        return om ? om->cnt : 0;
}

void kt_consumer_offsetmap_destroy(kt_offsetmap_t *om) {
        if (!om)
                return;
        free(om->runs);
        free(om);
}
