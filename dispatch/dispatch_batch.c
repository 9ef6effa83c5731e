/*
 * DESIGN: batched delivery, the wire format (dispatch.batch.max_records > 1).
 *
 * Request: one POST, Content-Type application/cloudevents-batch+json, body a JSON array of
 * CloudEvents 1.0 in structured mode (the CloudEvents JSON batch format). Each event:
 *   specversion "1.0"; id "topic/partition/offset" (the same as event-id / ce-id: stable, so a
 *   function can de-duplicate); source "kafka://topic"; type "dev.ktrigger.kafka.record";
 *   subject "partition:P#O"; time = the record timestamp (RFC 3339, ms) if it has one;
 *   datacontenttype + data for a value that is one whole JSON object or array, valid UTF-8 and
 *   at most KT_MAX_JSON_SCAN_BYTES (embedded as it is, not parsed and printed again);
 *   otherwise data_base64 (datacontenttype application/octet-stream). A tombstone has no data
 *   and kafkatombstone: true.
 *   The key: partitionkey (CloudEvents' partitioning extension) as a string when it is valid
 *   UTF-8, else base64 with partitionkeyencoding: "base64" (as binary mode does).
 *   Record headers: extension attribute names may only be lowercase letters and digits, so a
 *   header's name is hex-encoded (lowercase, byte by byte): "kh" + hex(name) holds the value as
 *   a string when it is valid UTF-8 (a null value: ""), "kb" + hex(name) holds it base64 when it
 *   is not. Example: header "trace-id: 7" -> "kh74726163652d6964": "7". Names over
 *   KT_MAX_HEADER_NAME_BYTES, values over KT_MAX_HEADER_VALUE_BYTES, a second header of the same
 *   name (a JSON object cannot hold both) and headers past KT_MAX_RECORD_HEADERS are dropped
 *   and counted, as in the per-record request.
 *
 * Response (Dapr's bulk subscribe convention, one of the two the issue offered):
 *   {"statuses":[{"entryId":"<event id>","status":"SUCCESS"|"RETRY"|"DROP"}, ...]}
 *   A 2xx with an empty (or all white space) body: every entry succeeded. An entry the answer
 *   does not list is RETRY (as in Dapr). Anything else - not JSON, not that shape, an unknown
 *   status, an entryId that is not in the batch or is listed twice, a body over
 *   KT_MAX_RESPONSE_BYTES - is unreadable: the whole batch failed (the caller treats it as
 *   retriable). Parsed with cJSON.
 *
 * Size: events are appended one by one; an event that takes the body past max_bytes is taken
 * back out (the caller sends what fits), except the first, so a record bigger than max_bytes
 * goes alone. The body is owned by the batch until handed to the dispatcher.
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kt_err_t grow(kt_dispatch_batch_t *b, size_t more) {
        size_t cap;
        char *nb;

        if (b->len + more <= b->cap)
                return KT_OK;
        cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more)
                cap *= 2;
        if (!(nb = realloc(b->buf, cap)))
                return KT_ERR_NOMEM;
        b->buf = nb;
        b->cap = cap;
        return KT_OK;
}

static kt_err_t put(kt_dispatch_batch_t *b, const void *p, size_t n) {
        if (grow(b, n))
                return KT_ERR_NOMEM;
        memcpy(b->buf + b->len, p, n);
        b->len += n;
        return KT_OK;
}

static kt_err_t puts_(kt_dispatch_batch_t *b, const char *s) {
        return put(b, s, strlen(s));
}

static kt_err_t put_i64(kt_dispatch_batch_t *b, int64_t v) {
        char num[KT_FMT_I64_BYTES];
        return put(b, num, kt_dispatch_fmt_i64(num, v));
}

/** A JSON string of \p s (valid UTF-8: the caller checked), quotes included. */
static kt_err_t put_str(kt_dispatch_batch_t *b, const void *sv, size_t n) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *s = sv;

        if (grow(b, n * 6 + 2))
                return KT_ERR_NOMEM;
        b->buf[b->len++] = '"';
        for (size_t i = 0; i < n; i++) {
                unsigned char c = s[i];
                if (c == '"' || c == '\\') {
                        b->buf[b->len++] = '\\';
                        b->buf[b->len++] = (char)c;
                } else if (c < 0x20 || c == 0x7f) {
                        b->buf[b->len++] = '\\';
                        b->buf[b->len++] = 'u';
                        b->buf[b->len++] = '0';
                        b->buf[b->len++] = '0';
                        b->buf[b->len++] = hex[c >> 4];
                        b->buf[b->len++] = hex[c & 15];
                } else
                        b->buf[b->len++] = (char)c;
        }
        b->buf[b->len++] = '"';
        return KT_OK;
}

/** A JSON string holding base64 (RFC 4648, padded) of \p len bytes. */
static kt_err_t put_b64(kt_dispatch_batch_t *b, const void *inv, size_t len) {
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *in = inv;
        size_t i;
        char *o;

        if (grow(b, (len + 2) / 3 * 4 + 2))
                return KT_ERR_NOMEM;
        o = b->buf + b->len;
        *o++ = '"';
        for (i = 0; i + 2 < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
                *o++ = tbl[v >> 18 & 63];
                *o++ = tbl[v >> 12 & 63];
                *o++ = tbl[v >> 6 & 63];
                *o++ = tbl[v & 63];
        }
        if (i < len) {
                uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
                *o++ = tbl[v >> 18 & 63];
                *o++ = tbl[v >> 12 & 63];
                *o++ = i + 1 < len ? tbl[v >> 6 & 63] : '=';
                *o++ = '=';
        }
        *o++ = '"';
        b->len = (size_t)(o - b->buf);
        return KT_OK;
}

/** An attribute name "<prefix><hex of name>" with its quotes and colon. */
static kt_err_t put_hex_name(kt_dispatch_batch_t *b, const char *prefix, const char *name,
                             size_t nlen) {
        static const char hex[] = "0123456789abcdef";

        if (grow(b, 2 * nlen + 8))
                return KT_ERR_NOMEM;
        b->buf[b->len++] = ',';
        b->buf[b->len++] = '"';
        memcpy(b->buf + b->len, prefix, 2);
        b->len += 2;
        for (size_t i = 0; i < nlen; i++) {
                b->buf[b->len++] = hex[(unsigned char)name[i] >> 4];
                b->buf[b->len++] = hex[(unsigned char)name[i] & 15];
        }
        b->buf[b->len++] = '"';
        b->buf[b->len++] = ':';
        return KT_OK;
}

/** Record headers as extension attributes (see the DESIGN block). */
static kt_err_t put_headers(kt_dispatch_batch_t *b, const kt_dispatch_req_t *req,
                            kt_dispatch_notes_t *notes) {
        size_t cnt = req->headers ? rd_kafka_header_cnt(req->headers) : 0;
        const char *name;
        const void *v;
        size_t len;
        kt_err_t err;

        if (cnt > KT_MAX_RECORD_HEADERS) {
                notes->dropped += (int)(cnt - KT_MAX_RECORD_HEADERS);
                cnt = KT_MAX_RECORD_HEADERS;
        }
        for (size_t i = 0; i < cnt && !rd_kafka_header_get_all(req->headers, i, &name, &v, &len);
             i++) {
                size_t nlen = strlen(name);
                int dup = 0;
                const char *pn;
                const void *pv;
                size_t pl;

                for (size_t j = 0; j < i && !dup; j++)
                        if (!rd_kafka_header_get_all(req->headers, j, &pn, &pv, &pl) &&
                            !strcmp(pn, name))
                                dup = 1;
                if (dup || nlen == 0 || nlen > KT_MAX_HEADER_NAME_BYTES ||
                    len > KT_MAX_HEADER_VALUE_BYTES) {
                        notes->dropped++;
                        continue;
                }
                if (!v || kt_dispatch_utf8_valid(v, len)) {
                        if ((err = put_hex_name(b, "kh", name, nlen)) ||
                            (err = put_str(b, v ? v : "", v ? len : 0)))
                                return err;
                } else if ((err = put_hex_name(b, "kb", name, nlen)) || (err = put_b64(b, v, len)))
                        return err;
        }
        return KT_OK;
}

static kt_err_t put_event(kt_dispatch_batch_t *b, const kt_dispatch_req_t *req,
                          kt_dispatch_notes_t *notes) {
        kt_err_t err;
        char tbuf[KT_RFC3339_BYTES];
        size_t tlen = strlen(req->topic);
        int json = 0;

#define TRY(call)                                                                                  \
        do {                                                                                       \
                if ((err = (call)))                                                                \
                        return err;                                                                \
        } while (0)
        TRY(puts_(b, "{\"specversion\":\"1.0\",\"id\":"));
        /* A topic name is [a-zA-Z0-9._-]: no escaping needed, but put_str is safe anyway. */
        TRY(put(b, "\"", 1));
        TRY(put(b, req->topic, tlen));
        TRY(put(b, "/", 1));
        TRY(put_i64(b, req->partition));
        TRY(put(b, "/", 1));
        TRY(put_i64(b, req->offset));
        TRY(puts_(b, "\",\"source\":\"kafka://"));
        TRY(put(b, req->topic, tlen));
        TRY(puts_(b, "\",\"type\":\"dev.ktrigger.kafka.record\",\"subject\":\"partition:"));
        TRY(put_i64(b, req->partition));
        TRY(put(b, "#", 1));
        TRY(put_i64(b, req->offset));
        TRY(put(b, "\"", 1));
        if (req->timestamp_ms >= 0) {
                kt_dispatch_rfc3339(req->timestamp_ms, tbuf, sizeof(tbuf));
                TRY(puts_(b, ",\"time\":\""));
                TRY(puts_(b, tbuf));
                TRY(put(b, "\"", 1));
        }
        if (req->key) {
                TRY(puts_(b, ",\"partitionkey\":"));
                if (kt_dispatch_utf8_valid(req->key, req->key_len))
                        TRY(put_str(b, req->key, req->key_len));
                else {
                        TRY(put_b64(b, req->key, req->key_len));
                        TRY(puts_(b, ",\"partitionkeyencoding\":\"base64\""));
                }
        }
        TRY(put_headers(b, req, notes));
        if (!req->value) {
                TRY(puts_(b, ",\"kafkatombstone\":true}"));
                return KT_OK;
        }
        if (req->len <= KT_MAX_JSON_SCAN_BYTES) {
                int kind = req->value_kind ? *req->value_kind : KT_VALUE_UNKNOWN;
                if (kind == KT_VALUE_UNKNOWN || kind == KT_VALUE_JSON)
                        json = kt_dispatch_value_is_json(req->value, req->len);
                json = json && kt_dispatch_utf8_valid(req->value, req->len);
        }
        if (json) {
                TRY(puts_(b, ",\"datacontenttype\":\"application/json\",\"data\":"));
                TRY(put(b, req->value, req->len));
        } else {
                TRY(puts_(b, ",\"datacontenttype\":\"application/octet-stream\",\"data_base64\":"));
                TRY(put_b64(b, req->value, req->len));
        }
        TRY(put(b, "}", 1));
#undef TRY
        return KT_OK;
}

void kt_dispatch_batch_reset(kt_dispatch_batch_t *b) {
        b->len = 0;
        b->cnt = 0;
}

void kt_dispatch_batch_free(kt_dispatch_batch_t *b) {
        free(b->buf);
        b->buf = NULL;
        b->len = b->cap = b->cnt = 0;
}

kt_err_t kt_dispatch_batch_add(kt_dispatch_batch_t *b, const kt_dispatch_req_t *req,
                               size_t max_bytes, kt_dispatch_notes_t *notes) {
        size_t mark = b->len;
        kt_dispatch_notes_t n = {0, 0};
        kt_err_t err;

        if ((err = put(b, b->cnt ? "," : "[", 1)) || (err = put_event(b, req, &n))) {
                b->len = mark;
                return err;
        }
        /* +1: the closing bracket. */
        if (b->cnt && b->len + 1 > max_bytes) {
                b->len = mark;
                return KT_ERR_FULL;
        }
        notes->dropped += n.dropped;
        b->cnt++;
        return KT_OK;
}

kt_err_t kt_dispatch_batch_finish(kt_dispatch_batch_t *b) {
        if (!b->cnt)
                return KT_ERR_INVALID;
        return put(b, "]", 1);
}

static int id_matches(const char *id, const kt_dispatch_req_t *req) {
        char tail[2 * KT_FMT_I64_BYTES];
        size_t tlen = strlen(req->topic), n;

        if (strncmp(id, req->topic, tlen) || id[tlen] != '/')
                return 0;
        n = kt_dispatch_fmt_i64(tail, req->partition);
        tail[n++] = '/';
        kt_dispatch_fmt_i64(tail + n, req->offset);
        return !strcmp(id + tlen + 1, tail);
}

kt_err_t kt_dispatch_batch_parse(const char *body, size_t len, const kt_dispatch_req_t *reqs,
                                 size_t cnt, kt_batch_status_t *st, char *errstr,
                                 size_t errstr_size) {
        cJSON *root = NULL, *statuses, *e;
        kt_err_t err = KT_ERR_INVALID;
        size_t i, k = 0;
        unsigned char *seen = NULL;

        for (i = 0; i < cnt; i++)
                st[i] = KT_BATCH_RETRY; /* not listed: retried, as in Dapr */
        for (i = 0; body && i < len; i++)
                if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
                        break;
        if (!body || i == len) {
                for (i = 0; i < cnt; i++)
                        st[i] = KT_BATCH_SUCCESS;
                return KT_OK;
        }
        if (!(seen = calloc(cnt ? cnt : 1, 1))) {
                snprintf(errstr, errstr_size, "out of memory reading the answer");
                return KT_ERR_NOMEM;
        }
        if (!(root = cJSON_ParseWithLength(body, len))) {
                snprintf(errstr, errstr_size, "answer is not JSON");
                goto out;
        }
        statuses = cJSON_GetObjectItemCaseSensitive(root, "statuses");
        if (!cJSON_IsObject(root) || !cJSON_IsArray(statuses)) {
                snprintf(errstr, errstr_size, "answer is not {\"statuses\":[...]}");
                goto out;
        }
        cJSON_ArrayForEach(e, statuses) {
                cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "entryId");
                cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "status");
                kt_batch_status_t v;
                size_t j;

                if (!cJSON_IsString(id) || !cJSON_IsString(s)) {
                        snprintf(errstr, errstr_size,
                                 "a statuses entry has no string entryId and status");
                        goto out;
                }
                if (!strcmp(s->valuestring, "SUCCESS"))
                        v = KT_BATCH_SUCCESS;
                else if (!strcmp(s->valuestring, "RETRY"))
                        v = KT_BATCH_RETRY;
                else if (!strcmp(s->valuestring, "DROP"))
                        v = KT_BATCH_DROP;
                else {
                        snprintf(errstr, errstr_size, "unknown status \"%.64s\" for entry %.200s",
                                 s->valuestring, id->valuestring);
                        goto out;
                }
                /* Usually in the order sent: try the next one first. */
                for (j = 0; j < cnt; j++)
                        if (id_matches(id->valuestring, &reqs[(k + j) % cnt]))
                                break;
                if (j == cnt) {
                        snprintf(errstr, errstr_size, "entryId %.200s is not in the batch",
                                 id->valuestring);
                        goto out;
                }
                j = (k + j) % cnt;
                if (seen[j]) {
                        snprintf(errstr, errstr_size, "entryId %.200s is listed twice",
                                 id->valuestring);
                        goto out;
                }
                seen[j] = 1;
                st[j] = v;
                k = j + 1;
        }
        err = KT_OK;
out:
        if (err)
                for (i = 0; i < cnt; i++)
                        st[i] = KT_BATCH_RETRY;
        cJSON_Delete(root);
        free(seen);
        return err;
}
