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
            {"{}", 1},       {"{\"a\":1}", 1}, {"  {\"a\": [1,2,{\"b\":null}]}\n", 1},
            {"[1,2]", 0},    {"\"str\"", 0},   {"42", 0},
            {"hello", 0},    {"", 0},          {"{\"a\":1} trailing", 0},
            {"{\"a\":1", 0}, {"{bad}", 0},     {"{\"a\":1}{\"b\":2}", 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int got = kt_dispatch_value_is_json_object(cases[i].value, strlen(cases[i].value));
                KT_CHECK(got == cases[i].want, "'%s': got %d want %d", cases[i].value, got,
                         cases[i].want);
        }
        /* Not NUL-terminated: only len bytes may be read. */
        {
                char buf[8] = {'{', '}', 'x', 'x', 'x', 'x', 'x', 'x'};
                KT_CHECK(kt_dispatch_value_is_json_object(buf, 2) == 1, "length-bounded");
        }
        KT_CHECK(kt_dispatch_value_is_json_object(NULL, 0) == 0, "NULL value (tombstone)");
}

static void test_headers(void) {
        struct curl_slist *h = NULL;
        kt_dispatch_req_t req = {"orders", 3, 1234, 1700000000123LL, "{\"x\":1}", 7};

        KT_CHECK(kt_dispatch_headers_build(&req, &h) == KT_OK, "build");
        KT_CHECK_STR(find(h, "event-id"), "event-id: orders/3/1234");
        KT_CHECK_STR(find(h, "event-time"), "event-time: 2023-11-14 22:13:20.123 +0000 UTC");
        KT_CHECK_STR(find(h, "event-type"), "event-type: application/json");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/json");
        KT_CHECK_STR(find(h, "event-namespace"), "event-namespace: kafkatriggers.kubeless.io");
        KT_CHECK_STR(find(h, "event-topic"), "event-topic: orders");
        KT_CHECK_STR(find(h, "event-partition"), "event-partition: 3");
        KT_CHECK_STR(find(h, "event-offset"), "event-offset: 1234");
        KT_CHECK(find(h, "Expect") != NULL, "Expect: removed");
        curl_slist_free_all(h);

        h = NULL;
        req.value = "plain text";
        req.len = 10;
        req.timestamp_ms = -1;
        KT_CHECK(kt_dispatch_headers_build(&req, &h) == KT_OK, "build");
        KT_CHECK_STR(find(h, "Content-Type"), "Content-Type: application/x-www-form-urlencoded");
        KT_CHECK_STR(find(h, "event-type"), "event-type: application/x-www-form-urlencoded");
        KT_CHECK(find(h, "event-time") && strstr(find(h, "event-time"), " +0000 UTC"),
                 "event-time falls back to now");
        for (struct curl_slist *l = h; l; l = l->next)
                KT_CHECK(!strpbrk(l->data, "\r\n"), "no line break in '%s'", l->data);
        curl_slist_free_all(h);
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

        conf.retry_backoff_ms = 100;
        conf.retry_max_backoff_ms = 1000;
        for (int round = 0; round < 200; round++) {
                int64_t b1 = kt_dispatch_backoff_ms(&conf, 1);
                int64_t b3 = kt_dispatch_backoff_ms(&conf, 3);
                int64_t b30 = kt_dispatch_backoff_ms(&conf, 30);
                KT_CHECK(b1 >= 50 && b1 <= 100, "attempt 1: %lld", (long long)b1);
                KT_CHECK(b3 >= 200 && b3 <= 400, "attempt 3: %lld", (long long)b3);
                KT_CHECK(b30 >= 500 && b30 <= 1000, "capped: %lld", (long long)b30);
        }
}

int main(void) {
        test_json_detection();
        test_headers();
        test_outcomes();
        test_backoff();
        return kt_test_done("test_headers");
}
