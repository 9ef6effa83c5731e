/* Request headers, content-type detection, outcome classes and back-off. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *find(struct curl_slist *h, const char *name) {
        size_t len = strlen(name);
        for (; h; h = h->next)
                if (!strncmp(h->data, name, len) && h->data[len] == ':')
                        return h->data;
        return NULL;
}

static void test_json_detection(void) {
        static const struct {
                const char *value;
                int want;
        } cases[] = {
            {"{}", 1},
            {"{\"a\":1}", 1},
            {"  {\"a\": [1,2,{\"b\":null}]}\n", 1},
            {"[1,2]", 1},
            {"[]", 1},
            {"\"str\"", 0},
            {"42", 0},
            {"hello", 0},
            {"", 0},
            {"{\"a\":1} trailing", 0},
            {"{\"a\":1", 0},
            {"{bad}", 0},
            {"{\"a\":1}{\"b\":2}", 0},
            {"[1,2", 0},
            {"[1,]", 0},
            {"{\"a\":}", 0},
            {"{\"a\" 1}", 0},
            {"{\"a\":1,}", 0},
            {"{1:2}", 0},
            {"[01]", 0},
            {"[1.]", 0},
            {"[1e]", 0},
            {"[-0.5e+10, 1E3, 0]", 1},
            {"[tru]", 0},
            {"[true, false, null]", 1},
            {"[\"\\u00e9\\n\"]", 1},
            {"[\"\\x\"]", 0},
            {"[\"\\u12\"]", 0},
            {"[\"a\tb\"]", 0}, /* a raw control character in a string */
            {"[\"unterminated]", 0},
            {"{\"a\":[1,{\"b\":[]}],\"c\":{}}", 1},
            {"[1]]", 0},
            {"[[1]", 0},
            {"{\"a\":1}}", 0},
            {"[{]}", 0},
            {"[1] [2]", 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int got = kt_dispatch_value_is_json(cases[i].value, strlen(cases[i].value));
                KT_CHECK(got == cases[i].want, "'%s': got %d want %d", cases[i].value, got,
                         cases[i].want);
        }
        /* Not NUL-terminated: only len bytes may be read. */
        {
                char buf[8] = {'{', '}', 'x', 'x', 'x', 'x', 'x', 'x'};
                KT_CHECK(kt_dispatch_value_is_json(buf, 2) == 1, "length-bounded");
        }
        KT_CHECK(kt_dispatch_value_is_json(NULL, 0) == 0, "NULL value (tombstone)");
        /* Deep: KT_JSON_MAX_DEPTH levels are JSON, one more is not. Big: a 1 MiB array is
         * scanned in full (one bad byte in the middle is seen); over the bound only the
         * brackets count. */
        {
                size_t d = KT_JSON_MAX_DEPTH + 1, n = 1024 * 1024;
                char *deep = malloc(2 * d), *big = malloc(n + 2);
                KT_CHECK(deep && big, "malloc");
                if (deep && big) {
                        memset(deep, '[', d);
                        memset(deep + d, ']', d);
                        KT_CHECK(kt_dispatch_value_is_json(deep + 1, 2 * d - 2) == 1, "%d levels",
                                 KT_JSON_MAX_DEPTH);
                        KT_CHECK(kt_dispatch_value_is_json(deep, 2 * d) == 0, "%zu levels", d);
                        big[0] = '[';
                        for (size_t i = 1; i < n - 1; i += 2) {
                                big[i] = '1';
                                big[i + 1] = ',';
                        }
                        big[n - 2] = '1';
                        big[n - 1] = ']';
                        KT_CHECK(kt_dispatch_value_is_json(big, n) == 1, "1 MiB array");
                        big[n / 2 | 1] = 'x';
                        KT_CHECK(kt_dispatch_value_is_json(big, n) == 0,
                                 "1 MiB array with one bad byte");
                        big[n] = ' ';
                        big[n + 1] = ']';
                        KT_CHECK(kt_dispatch_value_is_json(big, n + 2) == 1,
                                 "over KT_MAX_JSON_SCAN_BYTES: brackets only");
                }
                free(deep);
                free(big);
        }
}

static void test_trace_context(void) {
        static const struct {
                const char *v;
                int want;
        } tp[] = {
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1},
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 1},
            {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 0},   /* uppercase */
            {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", 0},   /* zero trace */
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 0},   /* zero parent */
            {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},   /* version ff */
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 0}, /* 00 is 55 */
            {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", 1},
            {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", 0},
            {"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", 0}, /* short id */
            {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", 0},
            {"", 0},
        };
        static const struct {
                const char *v;
                int want;
        } ts[] = {
            {"congo=t61rcWkgMzE", 1},
            {"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 1},
            {"rojo=1 , congo=2", 1},
            {"tenant@vendor=x", 1},
            {"1tenant@vendor=x", 1},
            {"1simple=x", 0},
            {"Upper=x", 0},
            {"a=", 0},
            {"a", 0},
            {"a=b=c", 0},
            {"a=1,a=2", 0}, /* keys are unique */
            {"a=\x01", 0},
            {"a=1,,b=2", 1}, /* empty members are allowed */
            {"t@toolongsystemid=1", 0},
        };
        char many[40 * 8];
        size_t n = 0;

        for (size_t i = 0; i < sizeof(tp) / sizeof(tp[0]); i++)
                KT_CHECK(kt_dispatch_traceparent_valid(tp[i].v, strlen(tp[i].v)) == tp[i].want,
                         "traceparent '%s'", tp[i].v);
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
                KT_CHECK(kt_dispatch_tracestate_valid(ts[i].v, strlen(ts[i].v)) == ts[i].want,
                         "tracestate '%s'", ts[i].v);
        for (int m = 0; m < 33; m++)
                n += (size_t)snprintf(many + n, sizeof(many) - n, "%sk%d=v", m ? "," : "", m);
        KT_CHECK(kt_dispatch_tracestate_valid(many, n) == 0, "33 members");
        n = (size_t)(strrchr(many, ',') - many);
        KT_CHECK(kt_dispatch_tracestate_valid(many, n) == 1, "32 members");
}

/* Build \p req with \p rh as its headers; @returns the value of line \p name or NULL. */
static const char *line_of(kt_dispatch_hdrs_t *hs, const char *name) {
        const char *l = find(hs->list, name);
        return l ? l + strlen(name) + 2 : NULL;
}

static void test_trace_forwarding(void) {
        static const char good[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        static const struct {
                const char *tp, *tp2, *ts;
                kt_event_format_t fmt;
                const char *want_tp, *want_ts;
                int invalid;
        } cases[] = {
            {good, NULL, "congo=t61", KT_EVENT_KUBELESS, good, "congo=t61", 0},
            {good, NULL, NULL, KT_EVENT_KUBELESS, good, NULL, 0},
            {good, NULL, "Bad=1", KT_EVENT_KUBELESS, good, NULL, 1},
            {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", NULL, "congo=t61",
             KT_EVENT_KUBELESS, NULL, NULL, 1},
            {good, good, NULL, KT_EVENT_KUBELESS, NULL, NULL, 1}, /* two traceparents */
            {NULL, NULL, "congo=t61", KT_EVENT_KUBELESS, NULL, NULL, 1},
            {good, NULL, "congo=t61", KT_EVENT_CLOUDEVENTS, good, "congo=t61", 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_dispatch_hdrs_t hs = {0};
                kt_dispatch_notes_t nt = {0, 0};
                rd_kafka_headers_t *rh = rd_kafka_headers_new(4);
                kt_dispatch_req_t req = {"t", 0, 1,  -1,           0, NULL, 0,
                                         "x", 1, rh, cases[i].fmt, 0, NULL};
                const char *got;

                if (cases[i].tp)
                        rd_kafka_header_add(rh, "traceparent", -1, cases[i].tp, -1);
                if (cases[i].tp2)
                        rd_kafka_header_add(rh, "traceparent", -1, cases[i].tp2, -1);
                if (cases[i].ts)
                        rd_kafka_header_add(rh, "tracestate", -1, cases[i].ts, -1);
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build %zu", i);
                got = line_of(&hs, "traceparent");
                KT_CHECK(cases[i].want_tp ? got && !strcmp(got, cases[i].want_tp) : !got,
                         "case %zu: traceparent %s", i, got ? got : "(none)");
                got = line_of(&hs, "tracestate");
                KT_CHECK(cases[i].want_ts ? got && !strcmp(got, cases[i].want_ts) : !got,
                         "case %zu: tracestate %s", i, got ? got : "(none)");
                got = line_of(&hs, "ce-traceparent");
                KT_CHECK(cases[i].fmt == KT_EVENT_CLOUDEVENTS && cases[i].want_tp
                             ? got && !strcmp(got, cases[i].want_tp)
                             : !got,
                         "case %zu: ce-traceparent %s", i, got ? got : "(none)");
                KT_CHECK(nt.trace_invalid == cases[i].invalid, "case %zu: invalid %d", i,
                         nt.trace_invalid);
                /* The record's own header is forwarded as before, whatever its validity. */
                if (cases[i].tp && !cases[i].tp2)
                        KT_CHECK(line_of(&hs, "event-header-traceparent") != NULL,
                                 "case %zu: event-header-traceparent", i);
                rd_kafka_headers_destroy(rh);
                kt_dispatch_hdrs_free(&hs);
        }
}

/* Header names with a NUL inside are checked with their real length: not a token, dropped. */
static void test_nul_names(void) {
        kt_dispatch_hdrs_t hs = {0};
        kt_dispatch_notes_t nt = {0, 0};
        rd_kafka_headers_t *rh = rd_kafka_headers_new(4);
        kt_dispatch_req_t req = {"t", 0,   1, -1, 0, NULL, 0, "plain", 5, rh, KT_EVENT_KUBELESS,
                                 0,   NULL};

        rd_kafka_header_add(rh, "Content-Type\0junk", 17, "text/evil", -1);
        rd_kafka_header_add(rh, "traceparent\0x", 13,
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", -1);
        rd_kafka_header_add(rh, "nul\0null-value", 15, NULL, 0);
        rd_kafka_header_add(rh, "ok", -1, "fine", -1);
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        KT_CHECK_STR(find(hs.list, "Content-Type"), "Content-Type: text/plain; charset=utf-8");
        KT_CHECK(!find(hs.list, "event-header-content-type"), "NUL name forwarded");
        KT_CHECK(!find(hs.list, "traceparent") && !find(hs.list, "event-header-traceparent"),
                 "NUL-named traceparent used");
        for (struct curl_slist *l = hs.list; l; l = l->next)
                KT_CHECK(strncmp(l->data, "event-header-nul", 16), "'%s' forwarded", l->data);
        KT_CHECK_STR(find(hs.list, "event-header-ok"), "event-header-ok: fine");
        KT_CHECK(nt.dropped == 3, "dropped %d, want 3", nt.dropped);
        rd_kafka_headers_destroy(rh);
        kt_dispatch_hdrs_free(&hs);
}

/* 150 headers of 8 KiB (1.2 MB, over libcurl's ~1 MiB): the request stays under the cap, the
 * rest is dropped and counted; more than KT_MAX_RECORD_HEADERS headers: the rest dropped.
 * With small headers after the big ones the record headers fill the cap to the byte, so the
 * lines put after them (trace context twice with CloudEvents, Expect:) must fit in what the
 * builder keeps for them. */
static void test_header_caps(void) {
        static const struct {
                int cnt;
                size_t value_len;
                int small_cnt; /* then this many headers of 1 byte */
                kt_event_format_t fmt;
                int trace;     /* a longest traceparent and tracestate first */
                int want_sent; /* -1: whatever fits */
        } cases[] = {
            {150, KT_MAX_HEADER_VALUE_BYTES, 0, KT_EVENT_KUBELESS, 0, -1},
            {20, KT_MAX_HEADER_VALUE_BYTES, 0, KT_EVENT_KUBELESS, 0, 20},
            {KT_MAX_RECORD_HEADERS + 100, 1, 0, KT_EVENT_KUBELESS, 0, KT_MAX_RECORD_HEADERS},
            {40, KT_MAX_HEADER_VALUE_BYTES, 700, KT_EVENT_KUBELESS, 1, -1},
            {40, KT_MAX_HEADER_VALUE_BYTES, 700, KT_EVENT_CLOUDEVENTS, 1, -1},
        };
        char *v = malloc(KT_MAX_HEADER_VALUE_BYTES);
        char tp[257], ts[KT_MAX_TRACESTATE_BYTES + 1];

        KT_CHECK(v != NULL, "malloc");
        if (!v)
                return;
        memset(v, 'v', KT_MAX_HEADER_VALUE_BYTES);
        /* A later traceparent version may be up to 256 characters; a tracestate up to the cap. */
        snprintf(tp, sizeof(tp), "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-%0200d",
                 0);
        snprintf(ts, sizeof(ts), "a=%0250d,b=%0250d,c=%03d", 0, 0, 0);
        KT_CHECK(strlen(tp) == 256 && kt_dispatch_traceparent_valid(tp, strlen(tp)), "tp");
        KT_CHECK(strlen(ts) > KT_MAX_TRACESTATE_BYTES - 8 &&
                     kt_dispatch_tracestate_valid(ts, strlen(ts)),
                 "ts %zu", strlen(ts));
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_dispatch_hdrs_t hs = {0};
                kt_dispatch_notes_t nt = {0, 0};
                rd_kafka_headers_t *rh = rd_kafka_headers_new(8);
                kt_dispatch_req_t req = {"t", 0, 1,  -1,           0, NULL, 0,
                                         "x", 1, rh, cases[i].fmt, 0, NULL};
                size_t bytes = 0;
                int sent = 0, cnt = cases[i].cnt + cases[i].small_cnt;

                if (cases[i].trace) {
                        rd_kafka_header_add(rh, "traceparent", -1, tp, -1);
                        rd_kafka_header_add(rh, "tracestate", -1, ts, -1);
                }
                for (int k = 0; k < cnt; k++) {
                        char name[16];
                        snprintf(name, sizeof(name), "h%d", k);
                        rd_kafka_header_add(rh, name, -1, v,
                                            k < cases[i].cnt ? (ssize_t)cases[i].value_len : 1);
                }
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build %zu", i);
                for (struct curl_slist *l = hs.list; l; l = l->next) {
                        bytes += strlen(l->data) + 2;
                        sent += !strncmp(l->data, "event-header-h", 14);
                }
                if (cases[i].trace)
                        KT_CHECK(
                            line_of(&hs, "traceparent") && line_of(&hs, "tracestate") &&
                                (cases[i].fmt != KT_EVENT_CLOUDEVENTS ||
                                 (line_of(&hs, "ce-traceparent") && line_of(&hs, "ce-tracestate"))),
                            "case %zu: trace context sent", i);
                KT_CHECK(bytes <= KT_MAX_REQUEST_HEADER_BYTES, "case %zu: %zu header bytes", i,
                         bytes);
                if (cases[i].want_sent >= 0)
                        KT_CHECK(sent == cases[i].want_sent, "case %zu: %d sent", i, sent);
                else
                        KT_CHECK(sent > 20 && sent < cnt, "case %zu: %d sent", i, sent);
                KT_CHECK(nt.dropped == cnt - sent, "case %zu: %d dropped, %d sent", i, nt.dropped,
                         sent);
                rd_kafka_headers_destroy(rh);
                kt_dispatch_hdrs_free(&hs);
        }
        free(v);
}

/* Null-valued headers are checked for a NUL in their name with librdkafka's exact-size lookup,
 * which walks the whole list: 1024 of them in a record of 100,000 (unique names) cost 0.33 s of
 * loop time per build (release build). Past KT_MAX_RECORD_HEADERS headers a null-valued one is
 * dropped instead; up to it, it is still forwarded. */
static void test_null_values_bounded(void) {
        static const struct {
                int cnt;
                int want_null_sent;
        } cases[] = {
            {KT_MAX_RECORD_HEADERS, KT_MAX_RECORD_HEADERS},
            {100000, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                rd_kafka_headers_t *rh = rd_kafka_headers_new(1024);
                kt_dispatch_hdrs_t hs = {0};
                kt_dispatch_notes_t nt = {0, 0};
                kt_dispatch_req_t req = {"t", 0,   1, -1, 0, NULL, 0, "x", 1, rh, KT_EVENT_KUBELESS,
                                         0,   NULL};
                struct timespec a, b;
                double took;
                int sent = 0;

                for (int k = 0; k < cases[i].cnt; k++) {
                        char name[16];
                        snprintf(name, sizeof(name), "h%d", k);
                        rd_kafka_header_add(rh, name, -1, NULL, 0);
                }
                clock_gettime(CLOCK_MONOTONIC, &a);
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build %zu", i);
                clock_gettime(CLOCK_MONOTONIC, &b);
                took = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
                for (struct curl_slist *l = hs.list; l; l = l->next)
                        sent += !strncmp(l->data, "event-header-h", 14);
                KT_CHECK(sent == cases[i].want_null_sent && nt.dropped == cases[i].cnt - sent,
                         "case %zu: %d sent, %d dropped", i, sent, nt.dropped);
                KT_CHECK(took < 0.15, "case %zu: build took %.3f s", i, took);
                rd_kafka_headers_destroy(rh);
                kt_dispatch_hdrs_free(&hs);
        }
}

/* dispatch.json_content_type_exact, and detection kept between attempts. */
static void test_content_type(void) {
        static const struct {
                const char *ct;
                int exact;
                const char *want;
        } cases[] = {
            {"application/json; charset=utf-8", 1, "application/json"},
            {"application/json; charset=utf-8", 0, "application/json; charset=utf-8"},
            {"Application/JSON", 1, "application/json"},
            {"application/json;charset=\"UTF-8\"", 1, "application/json"},
            {"application/json; charset=utf-16", 1, "application/json; charset=utf-16"},
            {"application/json-patch+json", 1, "application/json-patch+json"},
            {"application/jsonx", 1, "application/jsonx"},
            {"text/csv", 1, "text/csv"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_dispatch_hdrs_t hs = {0};
                kt_dispatch_notes_t nt = {0, 0};
                rd_kafka_headers_t *rh = rd_kafka_headers_new(2);
                kt_dispatch_req_t req = {
                    "t", 0, 1, -1, 0, NULL, 0, "{}", 2, rh, KT_EVENT_KUBELESS, 0, NULL};
                req.json_ct_exact = cases[i].exact;
                rd_kafka_header_add(rh, "content-type", -1, cases[i].ct, -1);
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build %zu", i);
                KT_CHECK(line_of(&hs, "Content-Type") &&
                             !strcmp(line_of(&hs, "Content-Type"), cases[i].want),
                         "case %zu: got %s", i, line_of(&hs, "Content-Type"));
                KT_CHECK(line_of(&hs, "event-header-content-type") &&
                             !strcmp(line_of(&hs, "event-header-content-type"), cases[i].ct),
                         "case %zu: the record's own value kept", i);
                rd_kafka_headers_destroy(rh);
                kt_dispatch_hdrs_free(&hs);
        }
        {
                kt_dispatch_hdrs_t hs = {0};
                kt_dispatch_notes_t nt = {0, 0};
                int kind = KT_VALUE_UNKNOWN;
                kt_dispatch_req_t req = {
                    "t", 0, 1, -1, 0, NULL, 0, "[1]", 3, NULL, KT_EVENT_KUBELESS, 0, NULL};
                req.value_kind = &kind;
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
                KT_CHECK(kind == KT_VALUE_JSON, "detected once: %d", kind);
                kind = KT_VALUE_TEXT; /* what an earlier attempt found is used, not redone */
                KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
                KT_CHECK_STR(find(hs.list, "Content-Type"),
                             "Content-Type: text/plain; charset=utf-8");
                kt_dispatch_hdrs_free(&hs);
        }
}

static void test_unbuildable(void) {
        static const struct {
                CURLcode rc;
                long request_bytes;
                size_t header_bytes;
                int want;
        } cases[] = {
            {CURLE_OUT_OF_MEMORY, 0, 1100 * 1024, 1},
            {CURLE_BAD_FUNCTION_ARGUMENT, 0, 1100 * 1024, 1},
            {CURLE_OUT_OF_MEMORY, 0, KT_MIN_UNBUILDABLE_HEADER_BYTES, 1},
            /* Under the bound libcurl can build it: out of memory is the allocator's. */
            {CURLE_OUT_OF_MEMORY, 0, KT_MIN_UNBUILDABLE_HEADER_BYTES - 1, 0},
            {CURLE_OUT_OF_MEMORY, 0, 300, 0},
            {CURLE_BAD_FUNCTION_ARGUMENT, 0, 300, 0},
            {CURLE_OUT_OF_MEMORY, 1234, 1100 * 1024, 0},
            {CURLE_COULDNT_CONNECT, 0, 1100 * 1024, 0},
            {CURLE_OPERATION_TIMEDOUT, 0, 1100 * 1024, 0},
            {CURLE_RECV_ERROR, 0, 1100 * 1024, 0},
            {CURLE_OK, 0, 1100 * 1024, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                KT_CHECK(kt_dispatch_transfer_unbuildable(cases[i].rc, cases[i].request_bytes,
                                                          cases[i].header_bytes) == cases[i].want,
                         "case %zu", i);
}

static void test_utf8(void) {
        static const struct {
                const char *s;
                size_t len;
                int want;
        } cases[] = {
            {"plain", 5, 1},
            {"", 0, 1},
            {"caf\xc3\xa9", 5, 1},
            {"\xe2\x82\xac", 3, 1},
            {"\xf0\x9f\x98\x80", 4, 1},
            {"\xff", 1, 0},
            {"\xc3", 1, 0},
            {"\xe2\x82", 2, 0},
            {"\xc0\xaf", 2, 0},         /* overlong */
            {"\xed\xa0\x80", 3, 0},     /* surrogate */
            {"\xf4\x90\x80\x80", 4, 0}, /* beyond U+10FFFF */
            {"a\0b", 3, 1},             /* NUL is valid UTF-8 (headers treat it as control) */
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                KT_CHECK(kt_dispatch_utf8_valid((const unsigned char *)cases[i].s, cases[i].len) ==
                             cases[i].want,
                         "case %zu", i);
}

static rd_kafka_headers_t *hdrs(void) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        rd_kafka_header_add(h, "trace-id", -1, "abc", -1);
        rd_kafka_header_add(h, "bin", -1, "\x00\x01", 2);
        rd_kafka_header_add(h, "bad name", -1, "x", -1);
        rd_kafka_header_add(h, "x\r\ninjected: 1", -1, "x", -1);
        rd_kafka_header_add(h, "crlf", -1, "a\r\ninjected: 1", -1);
        rd_kafka_header_add(h, "empty", -1, "", 0);
        rd_kafka_header_add(h, "nullv", -1, NULL, 0);
        rd_kafka_header_add(h, "Mixed-Case", -1, "v", -1);
        rd_kafka_header_add(h, "nel", -1,
                            "a\xc2\x85"
                            "b",
                            -1);
        return h;
}

static void test_headers(void) {
        kt_dispatch_hdrs_t hs = {0};
        struct curl_slist *h = NULL;
        kt_dispatch_req_t req = {"orders",
                                 3,
                                 1234,
                                 1700000000123LL,
                                 RD_KAFKA_TIMESTAMP_CREATE_TIME,
                                 "k1",
                                 2,
                                 "{\"x\":1}",
                                 7,
                                 NULL,
                                 KT_EVENT_KUBELESS,
                                 0,
                                 NULL};
        rd_kafka_headers_t *rh = hdrs();
        char big[KT_MAX_HEADER_VALUE_BYTES + 1];
        kt_dispatch_notes_t nt = {0, 0};

        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "event-id"), "event-id: orders/3/1234");
        KT_CHECK_STR(find(h, "event-time"), "event-time: 2023-11-14T22:13:20.123Z");
        KT_CHECK_STR(find(h, "event-timestamp-type"), "event-timestamp-type: create");
        KT_CHECK_STR(find(h, "event-type"), "event-type: application/json");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/json");
        KT_CHECK_STR(find(h, "event-namespace"), "event-namespace: kafkatriggers.kubeless.io");
        KT_CHECK_STR(find(h, "event-topic"), "event-topic: orders");
        KT_CHECK_STR(find(h, "event-partition"), "event-partition: 3");
        KT_CHECK_STR(find(h, "event-offset"), "event-offset: 1234");
        KT_CHECK_STR(find(h, "event-key"), "event-key: k1");
        KT_CHECK(!find(h, "event-key-encoding"), "plain key is not encoded");
        KT_CHECK(!find(h, "event-tombstone"), "not a tombstone");
        KT_CHECK(find(h, "Expect") != NULL, "Expect: removed");
        KT_CHECK_STR(find(h, "User-Agent"), KT_USER_AGENT_LINE);
        KT_CHECK(nt.dropped == 0, "dropped %d", nt.dropped);

        /* Plain text, no timestamp, binary key, record headers good and bad. */
        req.value = "plain text";
        req.len = 10;
        req.timestamp_ms = -1;
        req.key = "\x00\xff";
        req.key_len = 2;
        req.headers = rh;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: text/plain; charset=utf-8");
        KT_CHECK(find(h, "event-time") && strchr(find(h, "event-time"), 'Z'),
                 "event-time falls back to now");
        KT_CHECK(!find(h, "event-timestamp-type"), "no timestamp type without a timestamp");
        KT_CHECK_STR(find(h, "event-key"), "event-key: AP8=");
        KT_CHECK_STR(find(h, "event-key-encoding"), "event-key-encoding: base64");
        KT_CHECK_STR(find(h, "event-header-trace-id"), "event-header-trace-id: abc");
        KT_CHECK_STR(find(h, "event-headerb64-bin"), "event-headerb64-bin: AAE=");
        KT_CHECK_STR(find(h, "event-headerb64-crlf"), "event-headerb64-crlf: YQ0KaW5qZWN0ZWQ6IDE=");
        KT_CHECK(find(h, "event-header-empty;") || find(h, "event-header-empty") == NULL,
                 "empty value");
        KT_CHECK(nt.dropped == 2, "two names are not tokens: dropped %d", nt.dropped);
        KT_CHECK_STR(find(h, "event-header-mixed-case"), "event-header-mixed-case: v");
        KT_CHECK_STR(find(h, "event-headerb64-nel"), "event-headerb64-nel: YcKFYg==");
        for (struct curl_slist *l = h; l; l = l->next) {
                KT_CHECK(!strpbrk(l->data, "\r\n"), "no line break in '%s'", l->data);
                KT_CHECK(!strstr(l->data, "injected: 1") || strstr(l->data, "b64"),
                         "no injection in '%s'", l->data);
                KT_CHECK(strncmp(l->data, "bad", 3) && strncmp(l->data, "x", 1), "raw name '%s'",
                         l->data);
        }
        {
                int empty = 0, nullv = 0;
                for (struct curl_slist *l = h; l; l = l->next) {
                        empty += !strcmp(l->data, "event-header-empty;");
                        nullv += !strcmp(l->data, "event-header-nullv;");
                }
                KT_CHECK(empty == 1 && nullv == 1, "empty %d null %d sent as empty values", empty,
                         nullv);
        }

        /* Content-Type from the record's header; binary value; tombstone; oversized header. */
        nt.dropped = 0;
        rd_kafka_header_add(rh, "CONTENT-TYPE", -1, "text/csv", -1);
        memset(big, 'a', sizeof(big));
        rd_kafka_header_add(rh, "big", -1, big, sizeof(big));
        req.value = "a,b\n";
        req.len = 4;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: text/csv");
        KT_CHECK(!find(h, "event-header-big"), "oversized header dropped");
        KT_CHECK(nt.dropped == 3, "dropped %d", nt.dropped);
        rd_kafka_headers_destroy(rh);

        req.headers = NULL;
        req.value = "\x00\xff\xfe";
        req.len = 3;
        req.key = NULL;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/octet-stream");
        KT_CHECK(!find(h, "event-key"), "no key, no header");

        req.value = NULL;
        req.len = 0;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "event-tombstone"), "event-tombstone: true");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/octet-stream");

        req.value = "";
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK(!find(h, "event-tombstone"), "empty is not a tombstone");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: text/plain; charset=utf-8");
        KT_CHECK(hs.buf && hs.size <= KT_HDRS_KEEP_BYTES, "storage kept for the next call");
        kt_dispatch_hdrs_free(&hs);
}

static void test_cloudevents(void) {
        kt_dispatch_hdrs_t hs = {0};
        struct curl_slist *h = NULL;
        kt_dispatch_req_t req = {"orders",
                                 3,
                                 1234,
                                 1700000000123LL,
                                 RD_KAFKA_TIMESTAMP_CREATE_TIME,
                                 "k1",
                                 2,
                                 "[1]",
                                 3,
                                 NULL,
                                 KT_EVENT_CLOUDEVENTS,
                                 0,
                                 NULL};
        kt_dispatch_notes_t nt = {0, 0};

        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &nt) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "ce-specversion"), "ce-specversion: 1.0");
        KT_CHECK_STR(find(h, "User-Agent"), KT_USER_AGENT_LINE);
        KT_CHECK_STR(find(h, "ce-id"), "ce-id: orders/3/1234");
        KT_CHECK_STR(find(h, "ce-source"), "ce-source: kafka://orders");
        KT_CHECK_STR(find(h, "ce-type"), "ce-type: dev.ktrigger.kafka.record");
        KT_CHECK_STR(find(h, "ce-subject"), "ce-subject: partition:3#1234");
        KT_CHECK_STR(find(h, "ce-time"), "ce-time: 2023-11-14T22:13:20.123Z");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/json");
        KT_CHECK_STR(find(h, "ce-partitionkey"), "ce-partitionkey: k1");
        KT_CHECK(!find(h, "event-id") && !find(h, "event-key"), "no Kubeless headers");
        kt_dispatch_hdrs_free(&hs);
}

static void test_outcomes(void) {
        static const struct {
                long status;
                kt_outcome_t want;
        } cases[] = {
            {200, KT_OUTCOME_SUCCESS},   {201, KT_OUTCOME_SUCCESS},   {204, KT_OUTCOME_SUCCESS},
            {0, KT_OUTCOME_RETRIABLE},   {408, KT_OUTCOME_RETRIABLE}, {429, KT_OUTCOME_RETRIABLE},
            {500, KT_OUTCOME_RETRIABLE}, {503, KT_OUTCOME_RETRIABLE}, {400, KT_OUTCOME_PERMANENT},
            {404, KT_OUTCOME_PERMANENT}, {302, KT_OUTCOME_PERMANENT}, {100, KT_OUTCOME_PERMANENT},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                KT_CHECK(kt_dispatch_outcome_classify(cases[i].status) == cases[i].want,
                         "status %ld", cases[i].status);
}

static void test_backoff(void) {
        kt_config_t conf = {0};

        int64_t max3 = 0, max30 = 0;

        conf.retry_initial_backoff_ms = 100;
        conf.retry_max_backoff_ms = 1000;
        for (int round = 0; round < 500; round++) {
                int64_t b1 = kt_dispatch_backoff_ms(&conf, 1);
                int64_t b3 = kt_dispatch_backoff_ms(&conf, 3);
                int64_t b30 = kt_dispatch_backoff_ms(&conf, 30);
                KT_CHECK(b1 == 100, "attempt 1: %lld", (long long)b1);
                KT_CHECK(b3 >= 100 && b3 <= 400, "attempt 3: %lld", (long long)b3);
                KT_CHECK(b30 >= 100 && b30 <= 1000, "capped: %lld", (long long)b30);
                max3 = b3 > max3 ? b3 : max3;
                max30 = b30 > max30 ? b30 : max30;
        }
        /* Full jitter really spreads (500 draws: the top tenth is hit). */
        KT_CHECK(max3 > 370 && max30 > 900, "jitter range: %lld %lld", (long long)max3,
                 (long long)max30);
}

/* The printf-free formatters the headers and batch bodies share, against snprintf / gmtime. */
static void test_formatters(void) {
        static const int64_t nums[] = {0,         1,         -1,        9,
                                       10,        -10,       123456789, INT32_MAX,
                                       INT32_MIN, INT64_MAX, INT64_MIN, INT64_MIN + 1};
        /* Across second boundaries (the kept date part must follow), before 1970, and back. */
        static const int64_t times[] = {
            1700000000123LL, 1700000000999LL, 1700000001000LL, 1700000000000LL,  0, -1,
            -1000,           -1001,           951782400000LL,  253402300799999LL};
        char got[KT_FMT_I64_BYTES], want[KT_FMT_I64_BYTES], tbuf[KT_RFC3339_BYTES];

        for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
                size_t n = kt_dispatch_fmt_i64(got, nums[i]);
                snprintf(want, sizeof(want), "%lld", (long long)nums[i]);
                KT_CHECK(!strcmp(got, want) && n == strlen(want), "got \"%s\" (%zu), want %s", got,
                         n, want);
        }
        for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
                int64_t ms = times[i], sec = ms / 1000 - (ms % 1000 < 0);
                time_t t = (time_t)sec;
                struct tm tm;
                char date[40], expect[KT_RFC3339_BYTES];
                gmtime_r(&t, &tm);
                strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
                snprintf(expect, sizeof(expect), "%s.%03dZ", date, (int)(ms - sec * 1000));
                kt_dispatch_rfc3339(ms, tbuf, sizeof(tbuf));
                KT_CHECK(!strcmp(tbuf, expect), "got %s, want %s", tbuf, expect);
        }
        strcpy(tbuf, "untouched");
        kt_dispatch_rfc3339(1700000000123LL, tbuf, 10); /* too small: left as it was */
        KT_CHECK(!strcmp(tbuf, "untouched"), "got %s", tbuf);
}

int main(void) {
        test_formatters();
        test_json_detection();
        test_utf8();
        test_cloudevents();
        test_headers();
        test_outcomes();
        test_backoff();
        test_trace_context();
        test_trace_forwarding();
        test_nul_names();
        test_header_caps();
        test_content_type();
        test_null_values_bounded();
        test_unbuildable();
        return kt_test_done("test_headers");
}
