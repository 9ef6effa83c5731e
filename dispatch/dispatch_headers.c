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
#include <stdint.h>
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

/** RFC 3339 UTC with milliseconds: 2023-11-14T22:13:20.123Z. The date and time part is kept
 *  for the last second formatted: records of one batch mostly share it. */
static void format_rfc3339(int64_t ms, char *buf, size_t size) {
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
        char tmp[24], *e = tmp + sizeof(tmp), *p = e;
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

        do
                *--p = (char)('0' + u % 10);
        while ((u /= 10));
        if (v < 0)
                *--p = '-';
        return put(h, p, (size_t)(e - p));
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

static kt_err_t add_record_headers(const kt_dispatch_req_t *req, kt_dispatch_hdrs_t *h, char *line,
                                   int *droppedp) {
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
                if ((err = add(h, line)))
                        return err;
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
                                   int *droppedp) {
        /* On the stack (about 11 KiB): no allocation per call for the line buffer. */
        char line[LINE_MAX_BYTES], tbuf[64], ctbuf[256];
        const char *type = content_type(req, ctbuf, sizeof(ctbuf));
        kt_err_t err = KT_ERR_NOMEM;

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

        format_rfc3339(req->timestamp_ms >= 0 ? req->timestamp_ms : kt_wallclock_ms(), tbuf,
                       sizeof(tbuf));
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
                        (*droppedp)++;
        }
        if ((err = add_record_headers(req, h, line, droppedp)))
                goto out;
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
