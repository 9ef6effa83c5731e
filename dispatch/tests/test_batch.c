/* Batch bodies (CloudEvents JSON batch format) and per-entry answers (Dapr statuses). */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static kt_dispatch_req_t req_make(int64_t offset, const char *key, size_t key_len,
                                  const char *value, size_t len, rd_kafka_headers_t *hdrs) {
        kt_dispatch_req_t r;

        memset(&r, 0, sizeof(r));
        r.topic = "orders";
        r.partition = 3;
        r.offset = offset;
        r.timestamp_ms = 1700000000123LL;
        r.key = key;
        r.key_len = key_len;
        r.value = value;
        r.len = len;
        r.headers = hdrs;
        return r;
}

static const char *str_of(const cJSON *ev, const char *name) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_encode_event(void) {
        static const struct {
                const char *value; /* NULL: tombstone */
                size_t len;
                const char *key;
                size_t key_len;
                const char *want_data;   /* printed "data", NULL if none */
                const char *want_b64;    /* "data_base64", NULL if none */
                const char *want_key;    /* partitionkey */
                const char *want_keyenc; /* partitionkeyencoding */
        } cases[] = {
            {"{\"a\":[1,2]}", 11, "k1", 2, "{\"a\":[1,2]}", NULL, "k1", NULL},
            {"[1,2]", 5, NULL, 0, "[1,2]", NULL, NULL, NULL},
            {"hello", 5, NULL, 0, NULL, "aGVsbG8=", NULL, NULL},
            {"{\"a\":", 5, NULL, 0, NULL, "eyJhIjo=", NULL, NULL},              /* not whole JSON */
            {"{\"a\":\"\xff\"}", 9, NULL, 0, NULL, "eyJhIjoi/yJ9", NULL, NULL}, /* not UTF-8 */
            {"\x00\x01", 2, "\xff\xfe", 2, NULL, "AAE=", "//4=", "base64"},
            {"x", 1, "a\"b\\c\n", 6, NULL, "eA==", "a\"b\\c\n", NULL},
            {"", 0, "", 0, NULL, "", "", NULL},
            {NULL, 0, NULL, 0, NULL, NULL, NULL, NULL},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_dispatch_batch_t b = {0};
                kt_dispatch_notes_t notes = {0, 0};
                kt_dispatch_req_t r = req_make((int64_t)i, cases[i].key, cases[i].key_len,
                                               cases[i].value, cases[i].len, NULL);
                cJSON *arr, *ev, *data;
                char *printed = NULL;

                KT_CHECK(kt_dispatch_batch_add(&b, &r, 1 << 20, &notes) == KT_OK, "case %zu", i);
                KT_CHECK(kt_dispatch_batch_finish(&b) == KT_OK, "case %zu", i);
                arr = cJSON_ParseWithLength(b.buf, b.len);
                KT_CHECK(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 1,
                         "case %zu: not a one-event array: %.*s", i, (int)b.len, b.buf);
                ev = cJSON_GetArrayItem(arr, 0);
                {
                        char id[64];
                        snprintf(id, sizeof(id), "orders/3/%zu", i);
                        KT_CHECK_STR(str_of(ev, "id"), id);
                }
                KT_CHECK_STR(str_of(ev, "specversion"), "1.0");
                KT_CHECK_STR(str_of(ev, "source"), "kafka://orders");
                KT_CHECK_STR(str_of(ev, "type"), "dev.ktrigger.kafka.record");
                KT_CHECK_STR(str_of(ev, "time"), "2023-11-14T22:13:20.123Z");
                data = cJSON_GetObjectItemCaseSensitive(ev, "data");
                if (data)
                        printed = cJSON_PrintUnformatted(data);
                if (cases[i].want_data)
                        KT_CHECK(printed && !strcmp(printed, cases[i].want_data),
                                 "case %zu: data %s", i, printed ? printed : "(none)");
                else
                        KT_CHECK(!data, "case %zu: unexpected data %s", i, printed);
                if (cases[i].want_b64)
                        KT_CHECK_STR(str_of(ev, "data_base64"), cases[i].want_b64);
                else
                        KT_CHECK(!str_of(ev, "data_base64"), "case %zu: unexpected data_base64", i);
                if (cases[i].want_key)
                        KT_CHECK_STR(str_of(ev, "partitionkey"), cases[i].want_key);
                else
                        KT_CHECK(!str_of(ev, "partitionkey"), "case %zu: unexpected key", i);
                if (cases[i].want_keyenc)
                        KT_CHECK_STR(str_of(ev, "partitionkeyencoding"), cases[i].want_keyenc);
                if (!cases[i].value)
                        KT_CHECK(
                            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "kafkatombstone")),
                            "case %zu: tombstone not marked", i);
                free(printed);
                cJSON_Delete(arr);
                kt_dispatch_batch_free(&b);
        }
}

static void test_encode_headers(void) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        kt_dispatch_batch_t b = {0};
        kt_dispatch_notes_t notes = {0, 0};
        kt_dispatch_req_t r;
        char bigname[KT_MAX_HEADER_NAME_BYTES + 2];
        cJSON *arr, *ev;

        memset(bigname, 'n', sizeof(bigname) - 1);
        bigname[sizeof(bigname) - 1] = '\0';
        rd_kafka_header_add(h, "trace-id", -1, "7", 1);
        rd_kafka_header_add(h, "Bin", -1, "\xff\x00", 2);
        rd_kafka_header_add(h, "trace-id", -1, "8", 1); /* repeated: dropped */
        rd_kafka_header_add(h, bigname, -1, "v", 1);    /* name too long: dropped */
        rd_kafka_header_add(h, "nullv", -1, NULL, 0);
        r = req_make(9, NULL, 0, "{}", 2, h);
        KT_CHECK(kt_dispatch_batch_add(&b, &r, 1 << 20, &notes) == KT_OK, "add");
        KT_CHECK(kt_dispatch_batch_finish(&b) == KT_OK, "finish");
        arr = cJSON_ParseWithLength(b.buf, b.len);
        ev = cJSON_GetArrayItem(arr, 0);
        KT_CHECK_STR(str_of(ev, "kh74726163652d6964"), "7"); /* hex("trace-id") */
        KT_CHECK_STR(str_of(ev, "kb42696e"), "/wA=");        /* hex("Bin"), base64 */
        KT_CHECK_STR(str_of(ev, "kh6e756c6c76"), "");        /* hex("nullv") */
        KT_CHECK(notes.dropped == 2, "dropped %d, want 2", notes.dropped);
        /* Every attribute name is lowercase letters and digits (CloudEvents). */
        for (cJSON *a = ev ? ev->child : NULL; a; a = a->next) {
                int ok = 1;
                for (const char *c = a->string; *c; c++)
                        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
                                ok = 0;
                KT_CHECK(ok, "attribute name '%s'", a->string);
        }
        cJSON_Delete(arr);
        kt_dispatch_batch_free(&b);
        rd_kafka_headers_destroy(h);
}

static void test_encode_max_bytes(void) {
        static char big[5000];
        kt_dispatch_batch_t b = {0};
        kt_dispatch_notes_t notes = {0, 0};
        kt_dispatch_req_t small = req_make(1, NULL, 0, "{\"a\":1}", 7, NULL);
        kt_dispatch_req_t large;
        cJSON *arr;

        memset(big, 'x', sizeof(big));
        large = req_make(2, NULL, 0, big, sizeof(big), NULL);
        /* The first always goes in, also over max_bytes. */
        KT_CHECK(kt_dispatch_batch_add(&b, &large, 1024, &notes) == KT_OK, "first");
        KT_CHECK(kt_dispatch_batch_add(&b, &small, 1024, &notes) == KT_ERR_FULL, "second");
        KT_CHECK(b.cnt == 1, "cnt %zu", b.cnt);
        kt_dispatch_batch_reset(&b);
        KT_CHECK(kt_dispatch_batch_add(&b, &small, 1024, &notes) == KT_OK, "small first");
        KT_CHECK(kt_dispatch_batch_add(&b, &small, 1024, &notes) == KT_OK, "small second");
        KT_CHECK(kt_dispatch_batch_add(&b, &large, 1024, &notes) == KT_ERR_FULL, "large third");
        KT_CHECK(kt_dispatch_batch_finish(&b) == KT_OK, "finish");
        KT_CHECK(b.len <= 1024, "len %zu over max_bytes", b.len);
        arr = cJSON_ParseWithLength(b.buf, b.len);
        KT_CHECK(cJSON_GetArraySize(arr) == 2, "still valid JSON with 2 events: %.*s", (int)b.len,
                 b.buf);
        cJSON_Delete(arr);
        kt_dispatch_batch_reset(&b);
        KT_CHECK(kt_dispatch_batch_finish(&b) == KT_ERR_INVALID, "empty batch");
        kt_dispatch_batch_free(&b);
}

static void test_parse(void) {
        static const struct {
                const char *body;
                kt_err_t want_err;
                kt_batch_status_t want[3];
        } cases[] = {
            {"", KT_OK, {KT_BATCH_SUCCESS, KT_BATCH_SUCCESS, KT_BATCH_SUCCESS}},
            {" \r\n\t", KT_OK, {KT_BATCH_SUCCESS, KT_BATCH_SUCCESS, KT_BATCH_SUCCESS}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/10\",\"status\":\"SUCCESS\"},"
             "{\"entryId\":\"orders/3/11\",\"status\":\"RETRY\"},"
             "{\"entryId\":\"orders/3/12\",\"status\":\"DROP\"}]}",
             KT_OK,
             {KT_BATCH_SUCCESS, KT_BATCH_RETRY, KT_BATCH_DROP}},
            /* out of order */
            {"{\"statuses\":[{\"entryId\":\"orders/3/12\",\"status\":\"SUCCESS\"},"
             "{\"entryId\":\"orders/3/10\",\"status\":\"DROP\"}]}",
             KT_OK,
             {KT_BATCH_DROP, KT_BATCH_RETRY, KT_BATCH_SUCCESS}}, /* 11 unlisted: RETRY */
            {"{\"statuses\":[]}", KT_OK, {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"not json", KT_ERR_INVALID, {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"[]", KT_ERR_INVALID, {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{}", KT_ERR_INVALID, {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":{}}", KT_ERR_INVALID, {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/10\",\"status\":\"success\"}]}",
             KT_ERR_INVALID,
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/99\",\"status\":\"SUCCESS\"}]}",
             KT_ERR_INVALID,
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/10\",\"status\":\"SUCCESS\"},"
             "{\"entryId\":\"orders/3/10\",\"status\":\"SUCCESS\"}]}",
             KT_ERR_INVALID,
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":10,\"status\":\"SUCCESS\"}]}",
             KT_ERR_INVALID,
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/1\",\"status\":\"SUCCESS\"}]}",
             KT_ERR_INVALID, /* a prefix of orders/3/10 is not it */
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
            {"{\"statuses\":[{\"entryId\":\"orders/3/10\",\"status\":\"SUCCESS\"}]",
             KT_ERR_INVALID, /* truncated */
             {KT_BATCH_RETRY, KT_BATCH_RETRY, KT_BATCH_RETRY}},
        };
        kt_dispatch_req_t reqs[3];

        for (int i = 0; i < 3; i++)
                reqs[i] = req_make(10 + i, NULL, 0, "x", 1, NULL);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_batch_status_t st[3] = {KT_BATCH_DROP, KT_BATCH_DROP, KT_BATCH_DROP};
                char err[300] = "";
                kt_err_t got = kt_dispatch_batch_parse(cases[i].body, strlen(cases[i].body), reqs,
                                                       3, st, err, sizeof(err));
                KT_CHECK(got == cases[i].want_err, "case %zu (%s): got %d want %d (%s)", i,
                         cases[i].body, (int)got, (int)cases[i].want_err, err);
                if (got)
                        KT_CHECK(err[0], "case %zu: no reason given", i);
                for (int j = 0; j < 3; j++)
                        KT_CHECK(st[j] == cases[i].want[j], "case %zu entry %d: got %d want %d", i,
                                 j, (int)st[j], (int)cases[i].want[j]);
        }
        {
                kt_batch_status_t st[3];
                char err[64];
                KT_CHECK(kt_dispatch_batch_parse(NULL, 0, reqs, 3, st, err, sizeof(err)) == KT_OK &&
                             st[2] == KT_BATCH_SUCCESS,
                         "no body at all: every entry succeeded");
        }
}

int main(void) {
        test_encode_event();
        test_encode_headers();
        test_encode_max_bytes();
        test_parse();
        return kt_test_done("test_batch");
}
