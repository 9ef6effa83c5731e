/*
 * The event headers a Kubeless runtime expects, plus what Kubeless never forwarded.
 * Only values ktrigger formats itself go into headers here (numbers, validated topic names,
 * times), so nothing from a record can inject into the request.
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/** The largest value we parse to decide the content type; bigger ones are sniffed cheaply. */
#define KT_MAX_JSON_SNIFF_BYTES (1024 * 1024)

int kt_dispatch_value_is_json_object(const void *value, size_t len) {
        const char *s = value, *end = NULL;
        size_t i = 0;
        cJSON *json;
        int ok;

        if (!s)
                return 0;
        while (i < len && strchr(" \t\r\n", s[i]) && s[i])
                i++;
        if (i == len || s[i] != '{')
                return 0;
        if (len > KT_MAX_JSON_SNIFF_BYTES) {
                /* Too big to parse per record: trust the braces at both ends. */
                size_t j = len;
                while (j > i && strchr(" \t\r\n", s[j - 1]) && s[j - 1])
                        j--;
                return s[j - 1] == '}';
        }
        json = cJSON_ParseWithLengthOpts(s, len, &end, 0);
        ok = json && cJSON_IsObject(json);
        cJSON_Delete(json);
        if (!ok || !end)
                return 0;
        /* Like Go's json.Unmarshal: only white space may follow the object. */
        for (; end < s + len; end++)
                if (!strchr(" \t\r\n", *end) || !*end)
                        return 0;
        return 1;
}

/** Go's time.Time.String() as Kubeless sent it: "2006-01-02 15:04:05.000 +0000 UTC". */
static void format_event_time(int64_t ms, char *buf, size_t size) {
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        size_t n;

        gmtime_r(&sec, &tm);
        n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%03d +0000 UTC", (int)(ms % 1000));
}

static kt_err_t add(struct curl_slist **headersp, const char *line) {
        struct curl_slist *n = curl_slist_append(*headersp, line);
        if (!n)
                return KT_ERR_NOMEM;
        *headersp = n;
        return KT_OK;
}

kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, struct curl_slist **headersp) {
        char line[512], tbuf[64];
        const char *type = kt_dispatch_value_is_json_object(req->value, req->len)
                               ? "application/json"
                               : "application/x-www-form-urlencoded";
        kt_err_t err;

        snprintf(line, sizeof(line), "event-id: %s/%" PRId32 "/%" PRId64, req->topic,
                 req->partition, req->offset);
        if ((err = add(headersp, line)))
                return err;
        format_event_time(req->timestamp_ms >= 0 ? req->timestamp_ms : kt_wallclock_ms(), tbuf,
                          sizeof(tbuf));
        snprintf(line, sizeof(line), "event-time: %s", tbuf);
        if ((err = add(headersp, line)))
                return err;
        snprintf(line, sizeof(line), "event-type: %s", type);
        if ((err = add(headersp, line)))
                return err;
        snprintf(line, sizeof(line), "Content-Type: %s", type);
        if ((err = add(headersp, line)))
                return err;
        if ((err = add(headersp, "event-namespace: kafkatriggers.kubeless.io")))
                return err;
        snprintf(line, sizeof(line), "event-topic: %s", req->topic);
        if ((err = add(headersp, line)))
                return err;
        snprintf(line, sizeof(line), "event-partition: %" PRId32, req->partition);
        if ((err = add(headersp, line)))
                return err;
        snprintf(line, sizeof(line), "event-offset: %" PRId64, req->offset);
        if ((err = add(headersp, line)))
                return err;
        /* No "Expect: 100-continue" round trip for large bodies. */
        return add(headersp, "Expect:");
}
