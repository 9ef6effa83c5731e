/*
 * The event contract: what a record becomes as HTTP request headers.
 *
 * Kubeless' headers are kept (event-id, event-time, event-type, event-namespace, event-topic,
 * Content-Type) and what users asked for is added: partition, offset, timestamp type, key and
 * every record header. Nothing from a record reaches a header line unless it is safe there:
 * names must be HTTP tokens, values printable; a key or header value that is not is sent
 * base64-encoded under a marked name, a name that is not a token or an oversized value is
 * dropped and counted. So no record can inject a header or split the request.
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/** The largest value parsed to decide the content type; bigger ones are sniffed cheaply. */
#define KT_MAX_JSON_SNIFF_BYTES (1024 * 1024)
/** One header line: name, ": ", a base64 value of the largest allowed size, NUL. */
#define LINE_MAX_BYTES (64 + KT_MAX_HEADER_NAME_BYTES + (KT_MAX_HEADER_VALUE_BYTES / 3 + 1) * 4 + 8)

static int is_ws(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int kt_dispatch_value_is_json(const void *value, size_t len) {
        const char *s = value, *end = NULL;
        size_t i = 0, j = len;
        cJSON *json;
        int ok;

        if (!s)
                return 0;
        while (i < len && is_ws(s[i]))
                i++;
        while (j > i && is_ws(s[j - 1]))
                j--;
        if (i == j || !((s[i] == '{' && s[j - 1] == '}') || (s[i] == '[' && s[j - 1] == ']')))
                return 0;
        if (len > KT_MAX_JSON_SNIFF_BYTES)
                return 1; /* too big to parse per record: trust the brackets at both ends */
        json = cJSON_ParseWithLengthOpts(s, len, &end, 0);
        ok = json && (cJSON_IsObject(json) || cJSON_IsArray(json));
        cJSON_Delete(json);
        if (!ok || !end)
                return 0;
        /* Like Go's json.Unmarshal: only white space may follow. */
        for (; end < s + len; end++)
                if (!is_ws(*end))
                        return 0;
        return 1;
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

static int name_is_token(const char *name) {
        size_t len = strlen(name);

        if (len == 0 || len > KT_MAX_HEADER_NAME_BYTES)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (!is_tchar((unsigned char)name[i]))
                        return 0;
        return 1;
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

/** RFC 3339 UTC with milliseconds: 2023-11-14T22:13:20.123Z. */
static void format_rfc3339(int64_t ms, char *buf, size_t size) {
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        size_t n;

        gmtime_r(&sec, &tm);
        n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%03dZ", (int)(ms % 1000));
}

static kt_err_t add(struct curl_slist **headersp, const char *line) {
        struct curl_slist *n = curl_slist_append(*headersp, line);
        if (!n)
                return KT_ERR_NOMEM;
        *headersp = n;
        return KT_OK;
}

/** The content type a runtime should parse the value as. */
static const char *content_type(const kt_dispatch_req_t *req, char *buf, size_t size) {
        if (req->headers) {
                /* The last content-type header, whatever its case. */
                const char *name;
                const void *hv, *found = NULL;
                size_t hlen, found_len = 0;
                for (size_t i = 0; !rd_kafka_header_get_all(req->headers, i, &name, &hv, &hlen);
                     i++)
                        if (!strcasecmp(name, "content-type")) {
                                found = hv;
                                found_len = hlen;
                        }
                if (found && found_len > 0 && found_len < size &&
                    value_printable(found, found_len)) {
                        memcpy(buf, found, found_len);
                        buf[found_len] = '\0';
                        return buf;
                }
        }
        if (!req->value)
                return "application/octet-stream";
        if (kt_dispatch_value_is_json(req->value, req->len))
                return "application/json";
        if (kt_dispatch_utf8_valid(req->value, req->len))
                return "text/plain; charset=utf-8";
        return "application/octet-stream";
}

static kt_err_t add_record_headers(const kt_dispatch_req_t *req, struct curl_slist **headersp,
                                   char *line, int *droppedp) {
        const char *name;
        const void *v;
        size_t len;
        kt_err_t err;
        int n;
        char lower[KT_MAX_HEADER_NAME_BYTES + 1];

        for (size_t i = 0;
             req->headers && !rd_kafka_header_get_all(req->headers, i, &name, &v, &len); i++) {
                if (!name_is_token(name) || len > KT_MAX_HEADER_VALUE_BYTES) {
                        (*droppedp)++;
                        continue;
                }
                {
                        /* HTTP names are case-insensitive: send them in one case, lower. */
                        size_t nlen = strlen(name);
                        char *lname = lower;
                        for (size_t k = 0; k <= nlen; k++)
                                lname[k] = (char)tolower((unsigned char)name[k]);
                        name = lname;
                }
                if (!v || value_printable(v, len)) {
                        n = snprintf(line, LINE_MAX_BYTES, "event-header-%s: %.*s", name, (int)len,
                                     v ? (const char *)v : "");
                        if (!len)
                                /* curl sends "name;" as a header with an empty value. */
                                n = snprintf(line, LINE_MAX_BYTES, "event-header-%s;", name);
                } else {
                        n = snprintf(line, LINE_MAX_BYTES, "event-headerb64-%s: ", name);
                        base64(v, len, line + n);
                }
                if ((err = add(headersp, line)))
                        return err;
        }
        return KT_OK;
}

kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, struct curl_slist **headersp,
                                   int *droppedp) {
        /* On the stack (about 11 KiB): no allocation per call for the line buffer. */
        char line[LINE_MAX_BYTES], tbuf[64], ctbuf[256];
        const char *type = content_type(req, ctbuf, sizeof(ctbuf));
        kt_err_t err = KT_ERR_NOMEM;

#define ADDF(...)                                                                                  \
        do {                                                                                       \
                snprintf(line, LINE_MAX_BYTES, __VA_ARGS__);                                       \
                if ((err = add(headersp, line)))                                                   \
                        goto out;                                                                  \
        } while (0)

        format_rfc3339(req->timestamp_ms >= 0 ? req->timestamp_ms : kt_wallclock_ms(), tbuf,
                       sizeof(tbuf));
        if (req->format == KT_EVENT_CLOUDEVENTS) {
                /* CloudEvents 1.0, HTTP binary content mode. */
                ADDF("ce-specversion: 1.0");
                ADDF("ce-id: %s/%" PRId32 "/%" PRId64, req->topic, req->partition, req->offset);
                ADDF("ce-source: kafka://%s", req->topic);
                ADDF("ce-type: dev.ktrigger.kafka.record");
                ADDF("ce-subject: partition:%" PRId32 "#%" PRId64, req->partition, req->offset);
                if (req->timestamp_ms >= 0)
                        ADDF("ce-time: %s", tbuf);
                ADDF("Content-Type: %s", type);
                if (!req->value)
                        ADDF("ce-kafkatombstone: true");
        } else {
                ADDF("event-id: %s/%" PRId32 "/%" PRId64, req->topic, req->partition, req->offset);
                ADDF("event-time: %s", tbuf);
                if (req->timestamp_ms >= 0 && req->timestamp_type == RD_KAFKA_TIMESTAMP_CREATE_TIME)
                        ADDF("event-timestamp-type: create");
                else if (req->timestamp_ms >= 0 &&
                         req->timestamp_type == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)
                        ADDF("event-timestamp-type: log-append");
                ADDF("event-type: %s", type);
                ADDF("Content-Type: %s", type);
                ADDF("event-namespace: kafkatriggers.kubeless.io");
                ADDF("event-topic: %s", req->topic);
                ADDF("event-partition: %" PRId32, req->partition);
                ADDF("event-offset: %" PRId64, req->offset);
                if (!req->value)
                        ADDF("event-tombstone: true");
        }
        if (req->key) {
                /* CloudEvents' partitioning extension carries the key. */
                const char *kname =
                    req->format == KT_EVENT_CLOUDEVENTS ? "ce-partitionkey" : "event-key";
                if (req->key_len == 0)
                        ADDF("%s;", kname); /* curl's form for an empty value */
                else if (req->key_len <= KT_MAX_KEY_PLAIN_BYTES &&
                         value_printable(req->key, req->key_len))
                        ADDF("%s: %.*s", kname, (int)req->key_len, (const char *)req->key);
                else if (req->key_len <= KT_MAX_HEADER_VALUE_BYTES) {
                        int n = snprintf(line, LINE_MAX_BYTES, "%s: ", kname);
                        base64(req->key, req->key_len, line + n);
                        if ((err = add(headersp, line)) ||
                            (err = add(headersp, req->format == KT_EVENT_CLOUDEVENTS
                                                     ? "ce-partitionkeyencoding: base64"
                                                     : "event-key-encoding: base64")))
                                goto out;
                } else
                        (*droppedp)++;
        }
        if ((err = add_record_headers(req, headersp, line, droppedp)))
                goto out;
        /* No "Expect: 100-continue" round trip for large bodies. */
        err = add(headersp, "Expect:");
#undef ADDF
out:
        return err;
}
