/*
 * The event contract: what a record becomes as HTTP request headers.
 *
 * Kubeless' headers are kept (event-id, event-time, event-type, event-namespace, event-topic,
 * Content-Type) and what users asked for is added: partition, offset, timestamp type, key and
 * every record header. Nothing from a record reaches a header line unless it is safe there:
 * names must be HTTP tokens, values printable; a key or header value that is not is sent
 * base64-encoded under a marked name, a name that is not a token or an oversized value is
 * dropped and counted. So no record can inject a header or split the request.
 *
 * Bounds: a record's headers are looked at up to KT_MAX_RECORD_HEADERS, and put in only while
 * the request's header block stays under KT_MAX_REQUEST_HEADER_BYTES (libcurl 7.88 refuses a
 * request over ~1 MiB); the rest is dropped and counted, so a record with huge headers is still
 * delivered. Names are checked with their real length (see name_whole()).
 *
 * One pass first (scan_headers) finds what shapes the request: the record's content-type, and
 * its W3C trace context, validated and then sent as the call's own traceparent/tracestate.
 * Content-type detection of the value runs once per record (the result is kept in the record
 * through req->value_kind) and is a scan that allocates nothing.
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/** One header line: name, ": ", a base64 value of the largest allowed size, NUL. */
#define LINE_MAX_BYTES (64 + KT_MAX_HEADER_NAME_BYTES + (KT_MAX_HEADER_VALUE_BYTES / 3 + 1) * 4 + 8)
/** The longest traceparent propagated (kt_dispatch_traceparent_valid()). */
#define TRACEPARENT_MAX_BYTES 256
/** One pass of trace context lines at their longest (ce- names), each with its CRLF. */
#define TRACE_LINES_BYTES                                                                          \
        (sizeof("ce-traceparent: ") - 1 + TRACEPARENT_MAX_BYTES + 2 + sizeof("ce-tracestate: ") -  \
         1 + KT_MAX_TRACESTATE_BYTES + 2)
/** Header bytes kept for the lines put after the record headers: the trace context (twice with
 *  CloudEvents: the W3C headers and ce-traceparent/ce-tracestate), then "Expect:". */
#define TAIL_RESERVE_BYTES (2 * TRACE_LINES_BYTES + sizeof("Expect:") - 1 + 2)

static int is_ws(unsigned char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_digit(unsigned char c) {
        return c >= '0' && c <= '9';
}

static int is_hex(unsigned char c) {
        return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ---------------------------------------------------------------- JSON detection */

/** Scan a JSON string starting at s[*ip] == '"'; @returns 0 if it is not one. */
static int json_string(const unsigned char *s, size_t n, size_t *ip) {
        size_t i = *ip + 1;

        while (i < n) {
                unsigned char c = s[i++];
                if (c == '"') {
                        *ip = i;
                        return 1;
                }
                if (c < 0x20)
                        return 0;
                if (c != '\\')
                        continue;
                if (i >= n)
                        return 0;
                c = s[i++];
                if (c == 'u') {
                        if (n - i < 4 || !is_hex(s[i]) || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) ||
                            !is_hex(s[i + 3]))
                                return 0;
                        i += 4;
                } else if (!strchr("\"\\/bfnrt", c) || !c)
                        return 0;
        }
        return 0;
}

/** Scan a JSON number at s[*ip]; @returns 0 if there is none. */
static int json_number(const unsigned char *s, size_t n, size_t *ip) {
        size_t i = *ip;

        if (i < n && s[i] == '-')
                i++;
        if (i < n && s[i] == '0')
                i++;
        else if (i < n && s[i] >= '1' && s[i] <= '9')
                while (i < n && is_digit(s[i]))
                        i++;
        else
                return 0;
        if (i < n && s[i] == '.') {
                if (++i >= n || !is_digit(s[i]))
                        return 0;
                while (i < n && is_digit(s[i]))
                        i++;
        }
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                if (++i < n && (s[i] == '+' || s[i] == '-'))
                        i++;
                if (i >= n || !is_digit(s[i]))
                        return 0;
                while (i < n && is_digit(s[i]))
                        i++;
        }
        *ip = i;
        return 1;
}

/*
 * A validating scan (RFC 8259 grammar; strings are not checked for UTF-8, as cJSON did not):
 * one pass, no allocation, a bit per open container. Replaces a cJSON parse that built a tree
 * of the whole value for every call (36 ms and ~45 MB for a 1 MiB array).
 */
int kt_dispatch_value_is_json(const void *value, size_t len) {
        const unsigned char *s = value;
        unsigned char stack[(KT_JSON_MAX_DEPTH + 7) / 8]; /* bit set: an object, else array */
        size_t i = 0, j = len;
        int depth = 0, want_value = 1;

        if (!s)
                return 0;
        while (i < len && is_ws(s[i]))
                i++;
        while (j > i && is_ws(s[j - 1]))
                j--;
        if (i == j || !((s[i] == '{' && s[j - 1] == '}') || (s[i] == '[' && s[j - 1] == ']')))
                return 0;
        if (len > KT_MAX_JSON_SCAN_BYTES)
                return 1; /* too big to scan per record: trust the brackets at both ends */
#define TOP_IS_OBJECT() (stack[(depth - 1) / 8] >> ((depth - 1) % 8) & 1)
        for (;;) {
                while (i < j && is_ws(s[i]))
                        i++;
                if (!want_value && depth == 0)
                        return i == j; /* only white space may follow the outermost value */
                if (i >= j)
                        return 0;
                if (want_value) {
                        unsigned char c = s[i];
                        if (c == '{' || c == '[') {
                                if (depth == KT_JSON_MAX_DEPTH)
                                        return 0;
                                if (c == '{')
                                        stack[depth / 8] |= (unsigned char)(1U << depth % 8);
                                else
                                        stack[depth / 8] &= (unsigned char)~(1U << depth % 8);
                                depth++;
                                i++;
                                while (i < j && is_ws(s[i]))
                                        i++;
                                if (i < j && s[i] == (c == '{' ? '}' : ']')) {
                                        depth--; /* empty: a value is complete */
                                        i++;
                                        want_value = 0;
                                } else if (c == '{') {
                                        /* a member: "key" : value */
                                        if (i >= j || s[i] != '"' || !json_string(s, j, &i))
                                                return 0;
                                        while (i < j && is_ws(s[i]))
                                                i++;
                                        if (i >= j || s[i++] != ':')
                                                return 0;
                                }
                                continue;
                        }
                        if (c == '"') {
                                if (!json_string(s, j, &i))
                                        return 0;
                        } else if (c == '-' || is_digit(c)) {
                                if (!json_number(s, j, &i))
                                        return 0;
                        } else if (j - i >= 4 && !memcmp(s + i, "true", 4))
                                i += 4;
                        else if (j - i >= 5 && !memcmp(s + i, "false", 5))
                                i += 5;
                        else if (j - i >= 4 && !memcmp(s + i, "null", 4))
                                i += 4;
                        else
                                return 0;
                        want_value = 0;
                        continue;
                }
                /* After a value, inside a container. */
                if (s[i] == ',') {
                        i++;
                        if (TOP_IS_OBJECT()) {
                                while (i < j && is_ws(s[i]))
                                        i++;
                                if (i >= j || s[i] != '"' || !json_string(s, j, &i))
                                        return 0;
                                while (i < j && is_ws(s[i]))
                                        i++;
                                if (i >= j || s[i++] != ':')
                                        return 0;
                        }
                        want_value = 1;
                } else if (s[i] == (TOP_IS_OBJECT() ? '}' : ']')) {
                        i++;
                        depth--;
                } else
                        return 0;
        }
#undef TOP_IS_OBJECT
}

int kt_dispatch_utf8_valid(const unsigned char *s, size_t len) {
        size_t i = 0;

        while (i < len) {
                unsigned char c = s[i];
                size_t n;
                uint32_t cp;

                if (c < 0x80) {
                        i++;
                        continue;
                } else if ((c & 0xe0) == 0xc0) {
                        n = 1;
                        cp = c & 0x1f;
                } else if ((c & 0xf0) == 0xe0) {
                        n = 2;
                        cp = c & 0x0f;
                } else if ((c & 0xf8) == 0xf0) {
                        n = 3;
                        cp = c & 0x07;
                } else
                        return 0;
                if (len - i <= n) /* truncated sequence */
                        return 0;
                for (size_t k = 1; k <= n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return 0;
                        cp = (cp << 6) | (s[i + k] & 0x3f);
                }
                /* Overlong forms, surrogates, beyond U+10FFFF. */
                if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
                    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                        return 0;
                i += n + 1;
        }
        return 1;
}

/** A header value we may send as it is: valid UTF-8 without control characters (tab allowed),
 *  and no leading/trailing white space that HTTP would strip. */
static int value_printable(const unsigned char *v, size_t len) {
        for (size_t i = 0; i < len; i++) {
                if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
                        return 0;
                /* C1 controls U+0080..U+009F (NEL among them) are encoded as C2 80..C2 9F. */
                if (v[i] == 0xc2 && i + 1 < len && v[i + 1] >= 0x80 && v[i + 1] <= 0x9f)
                        return 0;
        }
        if (len && (v[0] == ' ' || v[0] == '\t' || v[len - 1] == ' ' || v[len - 1] == '\t'))
                return 0;
        return kt_dispatch_utf8_valid(v, len);
}

/** RFC 9110 token characters. */
static int is_tchar(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int name_is_token(const char *name, size_t len) {
        if (len == 0 || len > KT_MAX_HEADER_NAME_BYTES)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (!is_tchar((unsigned char)name[i]))
                        return 0;
        return 1;
}

/*
 * librdkafka keeps a header's real name size, but rd_kafka_header_get_all() hands the name out
 * as a C string: a name with a NUL inside ("Content-Type\0junk") reads as its part before the
 * NUL. rd_kafka_header_add() (rdkafka_header.c, 0.11.4 up to 2.x) stores name, NUL, value,
 * NUL in one allocation, so for a non-NULL value the name's real length is value - name - 1;
 * a self-test checks that layout once. For a NULL value (or another layout) the public
 * rd_kafka_header_get()/_get_last(), which match only names of exactly strlen(name) bytes,
 * must find the header; they walk the list, so a record of more headers than are looked at
 * has its NULL-valued ones dropped rather than checked.
 */
static int hdr_layout_ok(void) {
        static int checked, ok;

        if (!checked) {
                rd_kafka_headers_t *hs = rd_kafka_headers_new(1);
                const char *n;
                const void *v;
                size_t l;

                checked = 1;
                if (hs) {
                        rd_kafka_header_add(hs, "ab\0cd", 5, "v", 1);
                        ok = !rd_kafka_header_get_all(hs, 0, &n, &v, &l) &&
                             (const char *)v == n + 6 && l == 1;
                        rd_kafka_headers_destroy(hs);
                }
        }
        return ok;
}

/** @returns non-zero if \p name (value \p v) of a header of \p hs has no NUL inside. */
static int name_whole(const rd_kafka_headers_t *hs, const char *name, size_t nlen, const void *v) {
        const void *fv;
        size_t fl;

        if (v && hdr_layout_ok())
                return (const char *)v == name + nlen + 1;
        if (!v) {
                /* Cannot tell two NULL values apart: a whole one of that name will do. The
                 * lookup walks the whole list, so only in a record of at most
                 * KT_MAX_RECORD_HEADERS headers (1024 lookups of 100,000 took 0.33 s). */
                if (rd_kafka_header_cnt(hs) > KT_MAX_RECORD_HEADERS)
                        return 0;
                return !rd_kafka_header_get_last(hs, name, &fv, &fl);
        }
        for (size_t k = 0; !rd_kafka_header_get(hs, k, name, &fv, &fl); k++)
                if (fv == v)
                        return 1;
        return 0;
}

/* ---------------------------------------------------------------- W3C trace context */

static int is_lchex(unsigned char c) {
        return is_digit(c) || (c >= 'a' && c <= 'f');
}

int kt_dispatch_traceparent_valid(const char *v, size_t len) {
        int tid_zero = 1, pid_zero = 1;

        /* 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags> */
        if (!v || len < 55 || len > TRACEPARENT_MAX_BYTES)
                return 0;
        for (size_t i = 0; i < 55; i++) {
                unsigned char c = (unsigned char)v[i];
                if (i == 2 || i == 35 || i == 52) {
                        if (c != '-')
                                return 0;
                } else if (!is_lchex(c))
                        return 0;
                else if (i > 2 && i < 35 && c != '0')
                        tid_zero = 0;
                else if (i > 35 && i < 52 && c != '0')
                        pid_zero = 0;
        }
        if ((v[0] == 'f' && v[1] == 'f') || tid_zero || pid_zero)
                return 0;
        if (v[0] == '0' && v[1] == '0')
                return len == 55;
        /* A later version: what follows is its own, after a '-'; printable, no spaces. */
        if (len > 55 && v[55] != '-')
                return 0;
        for (size_t i = 55; i < len; i++)
                if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] > 0x7e)
                        return 0;
        return 1;
}

static int ts_key_char(unsigned char c) {
        return (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-' || c == '*' ||
               c == '/';
}

int kt_dispatch_tracestate_valid(const char *v, size_t len) {
        size_t key_off[KT_MAX_TRACESTATE_MEMBERS], key_len[KT_MAX_TRACESTATE_MEMBERS];
        size_t i = 0;
        int members = 0;

        if (!v || len > KT_MAX_TRACESTATE_BYTES)
                return 0;
        for (;;) {
                while (i < len && (v[i] == ' ' || v[i] == '\t'))
                        i++;
                if (i < len && v[i] != ',') { /* a member (empty ones are allowed) */
                        size_t ks = i, at = 0, vs, ve;
                        unsigned char c0 = (unsigned char)v[i];
                        if (!((c0 >= 'a' && c0 <= 'z') || is_digit(c0)))
                                return 0;
                        for (; i < len && v[i] != '='; i++) {
                                if (v[i] == '@' && !at)
                                        at = i;
                                else if (!ts_key_char((unsigned char)v[i]))
                                        return 0;
                        }
                        if (i >= len)
                                return 0;
                        if (at) { /* tenant@system */
                                if (at - ks > 241 || i - at - 1 < 1 || i - at - 1 > 14 ||
                                    !(v[at + 1] >= 'a' && v[at + 1] <= 'z'))
                                        return 0;
                        } else if (i - ks > 256 || is_digit(c0))
                                return 0; /* a simple key starts with a letter */
                        vs = ++i;
                        for (; i < len && v[i] != ','; i++)
                                if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e ||
                                    v[i] == '=')
                                        if (v[i] != '\t')
                                                return 0;
                        ve = i;
                        while (ve > vs && (v[ve - 1] == ' ' || v[ve - 1] == '\t'))
                                ve--;
                        if (ve == vs || ve - vs > 256)
                                return 0;
                        for (size_t k = vs; k < ve; k++)
                                if (v[k] == '\t')
                                        return 0; /* only OWS after the value may be a tab */
                        if (members == KT_MAX_TRACESTATE_MEMBERS)
                                return 0;
                        for (int m = 0; m < members; m++)
                                if (key_len[m] == (vs - 1 - ks) &&
                                    !memcmp(v + key_off[m], v + ks, key_len[m]))
                                        return 0; /* keys are unique */
                        key_off[members] = ks;
                        key_len[members] = vs - 1 - ks;
                        members++;
                }
                if (i >= len)
                        return 1;
                i++; /* ',' */
        }
}

/** Base64 (RFC 4648, padded) of \p len bytes into \p out, which must hold 4*ceil(len/3)+1. */
static void base64(const unsigned char *in, size_t len, char *out) {
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t o = 0, i;

        for (i = 0; i + 2 < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
                out[o++] = tbl[v >> 18 & 63];
                out[o++] = tbl[v >> 12 & 63];
                out[o++] = tbl[v >> 6 & 63];
                out[o++] = tbl[v & 63];
        }
        if (i < len) {
                uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
                out[o++] = tbl[v >> 18 & 63];
                out[o++] = tbl[v >> 12 & 63];
                out[o++] = i + 1 < len ? tbl[v >> 6 & 63] : '=';
                out[o++] = '=';
        }
        out[o] = '\0';
}

void kt_dispatch_rfc3339(int64_t ms, char *buf, size_t size) {
        static int64_t last_sec = INT64_MIN;
        static char last[32];
        static size_t last_len;
        int64_t sec = ms / 1000 - (ms % 1000 < 0);
        int msec = (int)(ms - sec * 1000);

        if (sec != last_sec) {
                time_t t = (time_t)sec;
                struct tm tm;
                gmtime_r(&t, &tm);
                last_len = strftime(last, sizeof(last), "%Y-%m-%dT%H:%M:%S", &tm);
                last_sec = sec;
        }
        if (size < last_len + 6)
                return;
        memcpy(buf, last, last_len);
        buf[last_len] = '.';
        buf[last_len + 1] = (char)('0' + msec / 100);
        buf[last_len + 2] = (char)('0' + msec / 10 % 10);
        buf[last_len + 3] = (char)('0' + msec % 10);
        buf[last_len + 4] = 'Z';
        buf[last_len + 5] = '\0';
}

size_t kt_dispatch_fmt_i64(char *buf, int64_t v) {
        char tmp[KT_FMT_I64_BYTES], *e = tmp + sizeof(tmp), *p = e;
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        size_t n;

        do
                *--p = (char)('0' + u % 10);
        while ((u /= 10));
        if (v < 0)
                *--p = '-';
        n = (size_t)(e - p);
        memcpy(buf, p, n);
        buf[n] = '\0';
        return n;
}

/* ---------------------------------------------------------------- line storage */

void kt_dispatch_hdrs_reset(kt_dispatch_hdrs_t *h) {
        h->list = NULL;
        h->cnt = 0;
        h->len = 0;
        if (h->size + h->cap * sizeof(*h->nodes) > KT_HDRS_KEEP_BYTES)
                kt_dispatch_hdrs_free(h); /* one big request must not pin its memory */
}

void kt_dispatch_hdrs_free(kt_dispatch_hdrs_t *h) {
        free(h->nodes);
        free(h->buf);
        memset(h, 0, sizeof(*h));
}

/** Append \p n bytes to the line being built. */
static kt_err_t put(kt_dispatch_hdrs_t *h, const char *s, size_t n) {
        if (h->len + n + 1 > h->size) {
                size_t size = h->size ? h->size : 1024;
                char *b;
                while (size < h->len + n + 1)
                        size *= 2;
                if (!(b = realloc(h->buf, size)))
                        return KT_ERR_NOMEM;
                h->buf = b;
                h->size = size;
        }
        memcpy(h->buf + h->len, s, n);
        h->len += n;
        return KT_OK;
}

static kt_err_t puts_(kt_dispatch_hdrs_t *h, const char *s) {
        return put(h, s, strlen(s));
}

static kt_err_t put_i64(kt_dispatch_hdrs_t *h, int64_t v) {
        char num[KT_FMT_I64_BYTES];
        return put(h, num, kt_dispatch_fmt_i64(num, v));
}

/** Start a line at the current end of the buffer. */
static kt_err_t line_begin(kt_dispatch_hdrs_t *h) {
        if (h->cnt == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 16;
                struct curl_slist *n = realloc(h->nodes, cap * sizeof(*n));
                if (!n)
                        return KT_ERR_NOMEM;
                h->nodes = n;
                h->cap = cap;
        }
        /* The buffer may still move: keep the offset, turned into a pointer at the end. */
        h->nodes[h->cnt].data = (char *)(uintptr_t)h->len;
        return KT_OK;
}

static kt_err_t line_end(kt_dispatch_hdrs_t *h) {
        kt_err_t err = put(h, "", 1); /* NUL (put reserves room for it) */
        if (!err)
                h->cnt++;
        return err;
}

/** Append one whole line. */
static kt_err_t add(kt_dispatch_hdrs_t *h, const char *line) {
        kt_err_t err;
        if ((err = line_begin(h)) || (err = puts_(h, line)) || (err = line_end(h)))
                return err;
        return KT_OK;
}

/** What the record headers say about the request, found in one pass. */
typedef struct scan {
        const char *ct; /**< the last content-type value (non-empty, printable), or NULL */
        size_t ct_len;
        const char *tp; /**< traceparent, valid, or NULL */
        size_t tp_len;
        char ts[KT_MAX_TRACESTATE_BYTES + 1]; /**< tracestate (several joined by ","), "" */
        size_t cnt; /**< headers looked at: at most KT_MAX_RECORD_HEADERS */
} scan_t;

/** @returns non-zero if \p v (a record's content-type) is JSON that a Kubeless runtime would
 *  not parse as such: application/json with parameters, other case or space, at most a
 *  charset of utf-8 (JSON is UTF-8, RFC 8259). */
static int json_ct_loose(const char *v, size_t len) {
        static const char mt[] = "application/json";
        size_t i = 0, n = sizeof(mt) - 1, e;

        if (len == n && !memcmp(v, mt, n))
                return 0; /* exact already */
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
                i++;
        if (len - i < n || strncasecmp(v + i, mt, n))
                return 0;
        i += n;
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
                i++;
        if (i == len)
                return 1;
        if (v[i++] != ';')
                return 0;
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
                i++;
        e = len;
        while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t' || v[e - 1] == ';'))
                e--;
        if (e - i == 13 && !strncasecmp(v + i, "charset=utf-8", 13))
                return 1;
        if (e - i == 15 && !strncasecmp(v + i, "charset=\"utf-8\"", 15))
                return 1;
        return 0;
}

/** One pass over the record headers (whole names only): content type, trace context. */
static void scan_headers(const kt_dispatch_req_t *req, scan_t *sc, kt_dispatch_notes_t *notes) {
        const char *name;
        const void *v;
        size_t len, ts_len = 0;
        int tp_cnt = 0, bad = 0;

        memset(sc, 0, offsetof(scan_t, ts) + 1);
        sc->cnt = 0;
        for (size_t i = 0; req->headers && i < KT_MAX_RECORD_HEADERS &&
                           !rd_kafka_header_get_all(req->headers, i, &name, &v, &len);
             i++) {
                size_t nlen = strlen(name);
                sc->cnt = i + 1;
                if (nlen != 11 && nlen != 10 && nlen != 12)
                        continue;
                if (!name_whole(req->headers, name, nlen, v))
                        continue;
                if (!strcasecmp(name, "content-type")) {
                        if (v && len > 0 && len < 256 && value_printable(v, len)) {
                                sc->ct = v;
                                sc->ct_len = len;
                        }
                } else if (!strcasecmp(name, "traceparent")) {
                        tp_cnt++;
                        sc->tp = v;
                        sc->tp_len = len;
                } else if (!strcasecmp(name, "tracestate")) {
                        if (!v || ts_len + (ts_len > 0) + len > KT_MAX_TRACESTATE_BYTES) {
                                bad = 1;
                                continue;
                        }
                        if (ts_len)
                                sc->ts[ts_len++] = ',';
                        memcpy(sc->ts + ts_len, v, len);
                        ts_len += len;
                        sc->ts[ts_len] = '\0';
                }
        }
        /* One traceparent, valid (several are not: which one would be ours?). */
        if (tp_cnt > 1 || (tp_cnt && !kt_dispatch_traceparent_valid(sc->tp, sc->tp_len))) {
                sc->tp = NULL;
                bad = 1;
        }
        if (!sc->tp) {
                if (ts_len && tp_cnt == 0)
                        bad = 1; /* tracestate without a traceparent means nothing */
                sc->ts[0] = '\0';
        } else if (ts_len && !kt_dispatch_tracestate_valid(sc->ts, ts_len)) {
                sc->ts[0] = '\0'; /* the traceparent alone still goes */
                bad = 1;
        }
        if (bad)
                notes->trace_invalid++;
}

static int value_kind(const kt_dispatch_req_t *req) {
        int kind = req->value_kind ? *req->value_kind : KT_VALUE_UNKNOWN;

        if (kind != KT_VALUE_UNKNOWN)
                return kind; /* detected at the first attempt */
        if (!req->value)
                kind = KT_VALUE_BINARY;
        else if (kt_dispatch_value_is_json(req->value, req->len))
                kind = KT_VALUE_JSON;
        else if (kt_dispatch_utf8_valid(req->value, req->len))
                kind = KT_VALUE_TEXT;
        else
                kind = KT_VALUE_BINARY;
        if (req->value_kind)
                *req->value_kind = kind;
        return kind;
}

/** The content type a runtime should parse the value as. */
static const char *content_type(const kt_dispatch_req_t *req, const scan_t *sc, char *buf,
                                size_t size) {
        if (sc->ct && sc->ct_len < size) {
                if (req->json_ct_exact && json_ct_loose(sc->ct, sc->ct_len))
                        return "application/json";
                memcpy(buf, sc->ct, sc->ct_len);
                buf[sc->ct_len] = '\0';
                return buf;
        }
        if (!req->value)
                return "application/octet-stream";
        switch (value_kind(req)) {
        case KT_VALUE_JSON:
                return "application/json";
        case KT_VALUE_TEXT:
                return "text/plain; charset=utf-8";
        default:
                return "application/octet-stream";
        }
}

static kt_err_t add_record_headers(const kt_dispatch_req_t *req, const scan_t *sc,
                                   kt_dispatch_hdrs_t *h, char *line, kt_dispatch_notes_t *notes) {
        const char *name;
        const void *v;
        size_t len;
        kt_err_t err;
        int n;
        char lower[KT_MAX_HEADER_NAME_BYTES + 1];

        if (!req->headers)
                return KT_OK;
        for (size_t i = 0;
             i < sc->cnt && !rd_kafka_header_get_all(req->headers, i, &name, &v, &len); i++) {
                size_t nlen = strlen(name);
                if (!name_is_token(name, nlen) || len > KT_MAX_HEADER_VALUE_BYTES ||
                    !name_whole(req->headers, name, nlen, v)) {
                        notes->dropped++;
                        continue;
                }
                /* HTTP names are case-insensitive: send them in one case, lower. */
                for (size_t k = 0; k <= nlen; k++)
                        lower[k] = (char)tolower((unsigned char)name[k]);
                if (!v || value_printable(v, len)) {
                        n = snprintf(line, LINE_MAX_BYTES, "event-header-%s: %.*s", lower, (int)len,
                                     v ? (const char *)v : "");
                        if (!len)
                                /* curl sends "name;" as a header with an empty value. */
                                n = snprintf(line, LINE_MAX_BYTES, "event-header-%s;", lower);
                } else {
                        n = snprintf(line, LINE_MAX_BYTES, "event-headerb64-%s: ", lower);
                        base64(v, len, line + n);
                        n += (int)((len + 2) / 3 * 4);
                }
                /* Bytes on the wire so far: the lines plus CRLF each (a NUL each here). */
                if (h->len + h->cnt + (size_t)n + 2 >
                    KT_MAX_REQUEST_HEADER_BYTES - TAIL_RESERVE_BYTES) {
                        notes->dropped++;
                        continue;
                }
                if ((err = add(h, line)))
                        return err;
        }
        {
                size_t cnt = rd_kafka_header_cnt(req->headers);
                if (cnt > sc->cnt)
                        notes->dropped += (int)(cnt - sc->cnt); /* past KT_MAX_RECORD_HEADERS */
        }
        return KT_OK;
}

/** One line "<name>topic/partition/offset" (event-id, ce-id). */
static kt_err_t line_record_id(kt_dispatch_hdrs_t *h, const char *name,
                               const kt_dispatch_req_t *req) {
        kt_err_t err;

        if ((err = line_begin(h)) || (err = puts_(h, name)) || (err = puts_(h, req->topic)) ||
            (err = puts_(h, "/")) || (err = put_i64(h, req->partition)) || (err = puts_(h, "/")) ||
            (err = put_i64(h, req->offset)))
                return err;
        return line_end(h);
}

kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, kt_dispatch_hdrs_t *h,
                                   kt_dispatch_notes_t *notes) {
        /* On the stack (about 12 KiB): no allocation per call for the line buffer. */
        char line[LINE_MAX_BYTES], tbuf[KT_RFC3339_BYTES], ctbuf[256];
        scan_t sc;
        const char *type;
        kt_err_t err = KT_ERR_NOMEM;

        scan_headers(req, &sc, notes);
        type = content_type(req, &sc, ctbuf, sizeof(ctbuf));
        kt_dispatch_hdrs_reset(h);

/* The hot, fixed lines are put piece by piece (no printf); each step stops at the first
 * error. */
#define TRY(call)                                                                                  \
        do {                                                                                       \
                if ((err = (call)))                                                                \
                        goto out;                                                                  \
        } while (0)
#define BEGIN()   TRY(line_begin(h))
#define PUTS(str) TRY(puts_(h, str))
#define PUTI(v)   TRY(put_i64(h, v))
#define END()     TRY(line_end(h))
#define LINE(str) TRY(add(h, str))

        kt_dispatch_rfc3339(req->timestamp_ms >= 0 ? req->timestamp_ms : kt_wallclock_ms(), tbuf,
                            sizeof(tbuf));
        LINE(KT_USER_AGENT_LINE);
        if (req->format == KT_EVENT_CLOUDEVENTS) {
                /* CloudEvents 1.0, HTTP binary content mode. */
                LINE("ce-specversion: 1.0");
                TRY(line_record_id(h, "ce-id: ", req));
                BEGIN();
                PUTS("ce-source: kafka://");
                PUTS(req->topic);
                END();
                LINE("ce-type: dev.ktrigger.kafka.record");
                BEGIN();
                PUTS("ce-subject: partition:");
                PUTI(req->partition);
                PUTS("#");
                PUTI(req->offset);
                END();
                if (req->timestamp_ms >= 0) {
                        BEGIN();
                        PUTS("ce-time: ");
                        PUTS(tbuf);
                        END();
                }
                BEGIN();
                PUTS("Content-Type: ");
                PUTS(type);
                END();
                if (!req->value)
                        LINE("ce-kafkatombstone: true");
        } else {
                TRY(line_record_id(h, "event-id: ", req));
                BEGIN();
                PUTS("event-time: ");
                PUTS(tbuf);
                END();
                if (req->timestamp_ms >= 0 && req->timestamp_type == RD_KAFKA_TIMESTAMP_CREATE_TIME)
                        LINE("event-timestamp-type: create");
                else if (req->timestamp_ms >= 0 &&
                         req->timestamp_type == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)
                        LINE("event-timestamp-type: log-append");
                BEGIN();
                PUTS("event-type: ");
                PUTS(type);
                END();
                BEGIN();
                PUTS("Content-Type: ");
                PUTS(type);
                END();
                LINE("event-namespace: kafkatriggers.kubeless.io");
                BEGIN();
                PUTS("event-topic: ");
                PUTS(req->topic);
                END();
                BEGIN();
                PUTS("event-partition: ");
                PUTI(req->partition);
                END();
                BEGIN();
                PUTS("event-offset: ");
                PUTI(req->offset);
                END();
                if (!req->value)
                        LINE("event-tombstone: true");
        }
        if (req->key) {
                /* CloudEvents' partitioning extension carries the key. */
                const char *kname =
                    req->format == KT_EVENT_CLOUDEVENTS ? "ce-partitionkey" : "event-key";
                if (req->key_len == 0) {
                        BEGIN();
                        PUTS(kname);
                        PUTS(";"); /* curl's form for an empty value */
                        END();
                } else if (req->key_len <= KT_MAX_KEY_PLAIN_BYTES &&
                           value_printable(req->key, req->key_len)) {
                        BEGIN();
                        PUTS(kname);
                        PUTS(": ");
                        if ((err = put(h, req->key, req->key_len)))
                                goto out;
                        END();
                } else if (req->key_len <= KT_MAX_HEADER_VALUE_BYTES) {
                        int n = snprintf(line, LINE_MAX_BYTES, "%s: ", kname);
                        base64(req->key, req->key_len, line + n);
                        LINE(line);
                        LINE(req->format == KT_EVENT_CLOUDEVENTS ? "ce-partitionkeyencoding: base64"
                                                                 : "event-key-encoding: base64");
                } else
                        notes->dropped++;
        }
        if ((err = add_record_headers(req, &sc, h, line, notes)))
                goto out;
        if (sc.tp) {
                /* W3C trace context as the call's own headers; with CloudEvents also as the
                 * distributed-tracing extension's attributes (binary mode: ce-<name>). */
                int ce = req->format == KT_EVENT_CLOUDEVENTS;
                for (int pass = 0; pass <= ce; pass++) {
                        BEGIN();
                        PUTS(pass ? "ce-traceparent: " : "traceparent: ");
                        if ((err = put(h, sc.tp, sc.tp_len)))
                                goto out;
                        END();
                        if (sc.ts[0]) {
                                BEGIN();
                                PUTS(pass ? "ce-tracestate: " : "tracestate: ");
                                PUTS(sc.ts);
                                END();
                        }
                }
        }
        /* No "Expect: 100-continue" round trip for large bodies. */
        LINE("Expect:");
#undef TRY
#undef BEGIN
#undef PUTS
#undef PUTI
#undef END
#undef LINE
        for (size_t i = 0; i < h->cnt; i++) {
                h->nodes[i].data = h->buf + (uintptr_t)h->nodes[i].data;
                h->nodes[i].next = i + 1 < h->cnt ? &h->nodes[i + 1] : NULL;
        }
        h->list = h->cnt ? h->nodes : NULL;
        return KT_OK;
out:
        h->list = NULL;
        h->cnt = 0;
        h->len = 0;
        return err;
}
