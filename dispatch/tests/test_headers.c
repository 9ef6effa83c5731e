/* Request headers, content-type detection, outcome classes and back-off. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <stdlib.h>

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
        kt_dispatch_req_t req = {
            "orders",    3, 1234, 1700000000123LL,  RD_KAFKA_TIMESTAMP_CREATE_TIME, "k1", 2,
            "{\"x\":1}", 7, NULL, KT_EVENT_KUBELESS};
        rd_kafka_headers_t *rh = hdrs();
        char big[KT_MAX_HEADER_VALUE_BYTES + 1];
        int dropped = 0;

        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
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
        KT_CHECK(dropped == 0, "dropped %d", dropped);

        /* Plain text, no timestamp, binary key, record headers good and bad. */
        req.value = "plain text";
        req.len = 10;
        req.timestamp_ms = -1;
        req.key = "\x00\xff";
        req.key_len = 2;
        req.headers = rh;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
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
        KT_CHECK(dropped == 2, "two names are not tokens: dropped %d", dropped);
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
        dropped = 0;
        rd_kafka_header_add(rh, "CONTENT-TYPE", -1, "text/csv", -1);
        memset(big, 'a', sizeof(big));
        rd_kafka_header_add(rh, "big", -1, big, sizeof(big));
        req.value = "a,b\n";
        req.len = 4;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: text/csv");
        KT_CHECK(!find(h, "event-header-big"), "oversized header dropped");
        KT_CHECK(dropped == 3, "dropped %d", dropped);
        rd_kafka_headers_destroy(rh);

        req.headers = NULL;
        req.value = "\x00\xff\xfe";
        req.len = 3;
        req.key = NULL;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/octet-stream");
        KT_CHECK(!find(h, "event-key"), "no key, no header");

        req.value = NULL;
        req.len = 0;
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "event-tombstone"), "event-tombstone: true");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/octet-stream");

        req.value = "";
        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
        h = hs.list;
        KT_CHECK(!find(h, "event-tombstone"), "empty is not a tombstone");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: text/plain; charset=utf-8");
        KT_CHECK(hs.buf && hs.size <= KT_HDRS_KEEP_BYTES, "storage kept for the next call");
        kt_dispatch_hdrs_free(&hs);
}

static void test_cloudevents(void) {
        kt_dispatch_hdrs_t hs = {0};
        struct curl_slist *h = NULL;
        kt_dispatch_req_t req = {
            "orders", 3, 1234, 1700000000123LL,     RD_KAFKA_TIMESTAMP_CREATE_TIME, "k1", 2,
            "[1]",    3, NULL, KT_EVENT_CLOUDEVENTS};
        int dropped = 0;

        KT_CHECK(kt_dispatch_headers_build(&req, &hs, &dropped) == KT_OK, "build");
        h = hs.list;
        KT_CHECK_STR(find(h, "ce-specversion"), "ce-specversion: 1.0");
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

int main(void) {
        test_json_detection();
        test_utf8();
        test_cloudevents();
        test_headers();
        test_outcomes();
        test_backoff();
        return kt_test_done("test_headers");
}
