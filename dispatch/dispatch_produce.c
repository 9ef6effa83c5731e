/*
 * Replies and dead letters. A successful call's response body can be produced to
 * dispatch.reply_topic (same key, correlation headers) before the record counts as done.
 * Dead letters: a record whose retries are exhausted is produced to dispatch.dead_letter_topic
 * with its original key, value and headers plus ktrigger's error headers, by an idempotent
 * producer (acks=all). The original offset may be committed only after the delivery report
 * says the dead letter is written; a failed write is reported to the loop, which classifies
 * it (kt_produce_err_permanent) and applies its policy (core_loop.c, produce_failed()).
 *
 * Sizes: librdkafka's producer refuses, by default, anything over 1,000,000 bytes, while the
 * consumer hands over records up to its receive.message.max.bytes (Kafka returns a batch
 * bigger than the fetch sizes so that a consumer can make progress) and a reply may be
 * KT_MAX_RESPONSE_BYTES. So the producer's message.max.bytes is raised to the larger of the
 * two plus the headers' room, unless the user set it: the topic's max.message.bytes decides.
 *
 * Replies are not copied: the body the call brought back is the one librdkafka sends (no
 * RD_KAFKA_MSG_F_COPY), and it stays the caller's, so a refused reply can be produced again
 * without calling the function again. Dead letters are copied (F_COPY): the record they come
 * from may be dropped (revoked) before the delivery report, and a revoked record's memory is
 * the consumer's.
 *
 * Delivery reports (and the producer's logs and statistics) arrive on the producer's main
 * queue, whose io-event writes to a pipe the loop sleeps on, like the consumer's. Statistics
 * (every 5 s unless producer_properties say otherwise) only feed kt_rebootstrap_t: librdkafka
 * 2.10+ can strand a producer with no broker, like a consumer (consumer_rebootstrap.c).
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAC "PRODUCE"

struct kt_produce {
        const kt_config_t *conf;
        rd_kafka_t *rk;
        rd_kafka_queue_t *rkq;
        int wake[2];
        kt_produce_done_cb *cb;
        void *cbarg;
        int outstanding;
        int fatal;
        int flushed;                   /**< kt_produce_flush() was called: destroy purges at once */
        kt_rebootstrap_t *rebootstrap; /**< adds the bootstrap brokers again if stranded */
        kt_log_limits_t error_log;     /**< error_cb's lines: one per code per 10 s */
};

/** A fatal producer error (e.g. the idempotent producer's sequence broke): every later write
 *  would fail, so the loop stops and the daemon exits non-zero to be restarted. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
        kt_produce_t *kp = opaque;
        char errstr[512];

        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                rd_kafka_fatal_error(rk, errstr, sizeof(errstr));
                KT_ERR(FAC, "fatal producer error: %s", errstr);
                kp->fatal = 1;
                return;
        }
        kt_log_repeated(&kp->error_log, KT_LOG_WARNING, FAC, err,
                        rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

int kt_produce_fatal(const kt_produce_t *kp) {
        return kp->fatal;
}

int kt_produce_brokers_add(kt_produce_t *kp, const char *brokers) {
        kt_rebootstrap_remember(kp->rebootstrap, brokers);
        return rd_kafka_brokers_add(kp->rk, brokers);
}

uint64_t kt_produce_rebootstraps(const kt_produce_t *kp) {
        return kp ? kt_rebootstrap_count(kp->rebootstrap) : 0;
}

/** Statistics: only the brokers they list matter here (kt_rebootstrap_t). */
static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) {
        kt_produce_t *kp = opaque;
        cJSON *root = cJSON_ParseWithLength(json, json_len);
        const char *again;

        if (!root)
                return 0;
        again = kt_rebootstrap_check(
            kp->rebootstrap, cJSON_GetObjectItemCaseSensitive(root, "brokers"), kt_now_ms());
        if (again)
                rd_kafka_brokers_add(rk, again);
        cJSON_Delete(root);
        return 0; /* librdkafka frees json */
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
        char f[64];

        (void)rk;
        if (!strcmp(fac, "FAIL") && !kt_log_enabled(KT_LOG_DEBUG))
                return; /* a broker connection failed: error_cb logs it once, with its code */
        snprintf(f, sizeof(f), "PRODUCER-%s", fac);
        kt_log(level, f, "%s", buf);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
        kt_produce_t *kp = opaque;

        (void)rk;
        kp->outstanding--;
        kp->cb(rkm->_private, rkm->err, kp->cbarg);
}

/** librdkafka's own ceiling for message.max.bytes. */
#define KT_PRODUCE_MAX_MESSAGE_BYTES 1000000000

/** The largest record the consumer can hand over: its receive.message.max.bytes (set in
 *  kafka.properties, else librdkafka's default). */
static long long consumer_max_bytes(const kt_config_t *conf) {
        char v[64];
        size_t vsize = sizeof(v);
        rd_kafka_conf_t *c;
        long long n = 0;

        for (size_t i = 0; i < conf->prop_cnt; i++)
                if (!strcmp(conf->props[i].name, "receive.message.max.bytes") &&
                    conf->props[i].value)
                        n = strtoll(conf->props[i].value, NULL, 10);
        if (n > 0)
                return n;
        c = rd_kafka_conf_new();
        if (rd_kafka_conf_get(c, "receive.message.max.bytes", v, &vsize) == RD_KAFKA_CONF_OK)
                n = strtoll(v, NULL, 10);
        rd_kafka_conf_destroy(c);
        return n > 0 ? n : 100000000;
}

/** Set message.max.bytes so any record and any reply fit, unless the user set it. */
static int size_set(const kt_config_t *conf, rd_kafka_conf_t *rkconf, char *errstr,
                    size_t errstr_size) {
        long long n = consumer_max_bytes(conf);
        char v[32];

        for (size_t i = 0; i < conf->producer_prop_cnt; i++)
                if (!strcmp(conf->producer_props[i].name, "message.max.bytes"))
                        return 0; /* checked against the reply cap by the configuration */
        if (n < KT_MAX_RESPONSE_BYTES)
                n = KT_MAX_RESPONSE_BYTES;
        n += KT_PRODUCE_HEADER_ROOM;
        if (n > KT_PRODUCE_MAX_MESSAGE_BYTES)
                n = KT_PRODUCE_MAX_MESSAGE_BYTES;
        snprintf(v, sizeof(v), "%lld", n);
        if (rd_kafka_conf_set(rkconf, "message.max.bytes", v, errstr, errstr_size))
                return -1;
        KT_DBG(FAC, "message.max.bytes = %s", v);
        return 0;
}

int kt_produce_err_permanent(rd_kafka_resp_err_t err) {
        switch (err) {
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        case RD_KAFKA_RESP_ERR_INVALID_RECORD:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
        case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
        case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
        case RD_KAFKA_RESP_ERR__INVALID_ARG:
                return 1;
        default:
                return 0;
        }
}

rd_kafka_conf_t *kt_produce_rkconf(const kt_config_t *conf, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *rkconf = rd_kafka_conf_new();
        char err[512];
        /* Before the user's properties: theirs win (statistics.interval.ms 0 turns the
         * rebootstrap guard off). */
        static const char *const defaults[][2] = {
            {"statistics.interval.ms", "5000"},
            {"linger.ms", "5"},
            {"client.id", "ktrigger-producer"},
        };
        /* After them: what dead letters and the log need. The configuration refuses these in
         * producer_properties (config_load.c), so nothing the user wrote is dropped here. */
        static const char *const settings[][2] = {
            {"enable.idempotence", "true"},
            {"acks", "all"},
            {"log.queue", "true"},
        };

        for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
                if (rd_kafka_conf_set(rkconf, defaults[i][0], defaults[i][1], err, sizeof(err))) {
                        snprintf(errstr, errstr_size, "%s", err);
                        goto fail;
                }
        if (size_set(conf, rkconf, err, sizeof(err))) {
                snprintf(errstr, errstr_size, "message.max.bytes: %s", err);
                goto fail;
        }
        for (size_t i = 0; i < conf->producer_prop_cnt; i++)
                if (rd_kafka_conf_set(rkconf, conf->producer_props[i].name,
                                      conf->producer_props[i].value, err, sizeof(err))) {
                        snprintf(errstr, errstr_size, "%s", err);
                        goto fail;
                }
        for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
                if (rd_kafka_conf_set(rkconf, settings[i][0], settings[i][1], err, sizeof(err))) {
                        snprintf(errstr, errstr_size, "%s", err);
                        goto fail;
                }
        if (rd_kafka_conf_set(rkconf, "bootstrap.servers", conf->brokers, err, sizeof(err))) {
                snprintf(errstr, errstr_size, "%s", err);
                goto fail;
        }
        return rkconf;

fail:
        rd_kafka_conf_destroy(rkconf);
        return NULL;
}

kt_produce_t *kt_produce_new(const kt_config_t *conf, kt_produce_done_cb *cb, void *cbarg,
                             char *errstr, size_t errstr_size) {
        kt_produce_t *kp = calloc(1, sizeof(*kp));
        rd_kafka_conf_t *rkconf = NULL;
        char err[512];

        if (!kp) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        kp->conf = conf;
        kp->cb = cb;
        kp->cbarg = cbarg;
        kp->wake[0] = kp->wake[1] = -1;
        if (pipe(kp->wake) == -1 || fcntl(kp->wake[0], F_SETFL, O_NONBLOCK) == -1 ||
            fcntl(kp->wake[1], F_SETFL, O_NONBLOCK) == -1) {
                snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
                goto fail;
        }
        if (!(kp->rebootstrap = kt_rebootstrap_new("producer", conf->brokers))) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (!(rkconf = kt_produce_rkconf(conf, errstr, errstr_size)))
                goto fail;
        rd_kafka_conf_set_opaque(rkconf, kp);
        rd_kafka_conf_set_dr_msg_cb(rkconf, dr_msg_cb);
        rd_kafka_conf_set_log_cb(rkconf, log_cb);
        rd_kafka_conf_set_error_cb(rkconf, error_cb);
        rd_kafka_conf_set_stats_cb(rkconf, stats_cb);
        if (!(kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rkconf, err, sizeof(err)))) {
                snprintf(errstr, errstr_size, "%s", err);
                goto fail;
        }
        rkconf = NULL; /* owned by rk */
        rd_kafka_set_log_queue(kp->rk, NULL);
        kp->rkq = rd_kafka_queue_get_main(kp->rk);
        rd_kafka_queue_io_event_enable(kp->rkq, kp->wake[1], "1", 1);
        return kp;

fail:
        if (rkconf)
                rd_kafka_conf_destroy(rkconf);
        kt_produce_destroy(kp);
        return NULL;
}

void kt_produce_conf_set(kt_produce_t *kp, const kt_config_t *conf) {
        kp->conf = conf;
}

void kt_produce_destroy(kt_produce_t *kp) {
        if (!kp)
                return;
        if (kp->rk) {
                /* The loop waited for its dead letters; whatever is left here had its record
                 * dropped uncommitted, so it is only a duplicate-to-be. What is still not
                 * written is purged, and its reports served, so that every borrowed reply
                 * goes back to the loop to be freed. */
                if (!kp->flushed)
                        rd_kafka_flush(kp->rk, 5000); /* else the loop did, with heartbeats */
                rd_kafka_purge(kp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                for (int i = 0; i < 100 && kp->outstanding > 0; i++)
                        rd_kafka_poll(kp->rk, 10);
                if (kp->rkq)
                        rd_kafka_queue_destroy(kp->rkq);
                rd_kafka_destroy(kp->rk);
        }
        if (kp->wake[0] != -1)
                close(kp->wake[0]);
        if (kp->wake[1] != -1)
                close(kp->wake[1]);
        kt_rebootstrap_destroy(kp->rebootstrap);
        free(kp);
}

int kt_produce_wakeup_fd(const kt_produce_t *kp) {
        return kp->wake[0];
}

void kt_produce_poll(kt_produce_t *kp) {
        char buf[256];

        while (read(kp->wake[0], buf, sizeof(buf)) > 0)
                ;
        rd_kafka_poll(kp->rk, 0);
}

int kt_produce_flush(kt_produce_t *kp, int timeout_ms) {
        kp->flushed = 1;
        rd_kafka_flush(kp->rk, timeout_ms);
        return rd_kafka_outq_len(kp->rk);
}

int kt_produce_outstanding(const kt_produce_t *kp) {
        return kp->outstanding;
}

/** Add a text header; librdkafka copies it. */
static void hdr(rd_kafka_headers_t *h, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void hdr(rd_kafka_headers_t *h, const char *name, const char *fmt, ...) {
        char v[1024];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(v, sizeof(v), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        rd_kafka_header_add(h, name, -1, v, n < (int)sizeof(v) ? n : (int)sizeof(v) - 1);
}

kt_err_t kt_produce_reply(kt_produce_t *kp, const kt_produce_msg_t *m, void *opaque,
                          rd_kafka_resp_err_t *errp) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(6);
        rd_kafka_resp_err_t err;

        if (m->content_type)
                hdr(h, "content-type", "%s", m->content_type);
        hdr(h, "ktrigger-original-topic", "%s", m->topic);
        hdr(h, "ktrigger-original-partition", "%" PRId32, m->partition);
        hdr(h, "ktrigger-original-offset", "%" PRId64, m->offset);
        hdr(h, "ktrigger-function", "%s", kp->conf->handler);
        err = rd_kafka_producev(kp->rk, RD_KAFKA_V_TOPIC(kp->conf->reply_topic),
                                RD_KAFKA_V_KEY(m->key, m->key_len),
                                /* borrowed (no flag): the caller keeps it until the report */
                                RD_KAFKA_V_VALUE((void *)m->value, m->len), RD_KAFKA_V_MSGFLAGS(0),
                                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (err) {
                rd_kafka_headers_destroy(h); /* not taken over on failure */
                *errp = err;                 /* the loop logs it, naming the record */
                return KT_ERR_KAFKA;
        }
        kp->outstanding++;
        return KT_OK;
}

kt_err_t kt_produce_dead_letter(kt_produce_t *kp, const kt_produce_msg_t *m, void *opaque,
                                rd_kafka_resp_err_t *errp) {
        rd_kafka_headers_t *h;
        rd_kafka_resp_err_t err;

        if (m->headers)
                h = rd_kafka_headers_copy(m->headers);
        else
                h = rd_kafka_headers_new(8);
        hdr(h, "ktrigger-original-topic", "%s", m->topic);
        hdr(h, "ktrigger-original-partition", "%" PRId32, m->partition);
        hdr(h, "ktrigger-original-offset", "%" PRId64, m->offset);
        hdr(h, "ktrigger-original-timestamp", "%" PRId64, m->timestamp_ms);
        hdr(h, "ktrigger-attempts", "%d", m->attempts);
        if (m->last_status)
                hdr(h, "ktrigger-last-status", "%ld", m->last_status);
        if (m->last_error)
                hdr(h, "ktrigger-last-error", "%s", m->last_error);
        if (m->reply_refused)
                hdr(h, "ktrigger-reply-error", "%s",
                    rd_kafka_err2name((rd_kafka_resp_err_t)m->reply_refused));
        hdr(h, "ktrigger-function", "%s", kp->conf->handler);

        err = rd_kafka_producev(kp->rk, RD_KAFKA_V_TOPIC(kp->conf->dead_letter_topic),
                                RD_KAFKA_V_KEY(m->key, m->key_len),
                                /* copied (F_COPY): never written */
                                RD_KAFKA_V_VALUE((void *)m->value, m->len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (err) {
                rd_kafka_headers_destroy(h); /* not taken over on failure */
                *errp = err;                 /* the loop logs it, naming the record */
                return KT_ERR_KAFKA;
        }
        kp->outstanding++;
        return KT_OK;
}
