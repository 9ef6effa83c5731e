/**
 * @file dispatch.h
 * @brief HTTP out: builds the Kubeless event request for a record, sends it through libcurl's
 *        multi interface (keep-alive, bounded concurrency) and classifies the outcome.
 *
 * @locality every function here runs on the loop thread.
 */
#ifndef KT_DISPATCH_H
#define KT_DISPATCH_H

#include "../config/config.h"
#include "../consumer/consumer.h"
#include "../core/core.h"

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/** What the call is about: plain data borrowed for the duration of the call. */
typedef struct kt_dispatch_req {
        const char *topic;
        int32_t partition;
        int64_t offset;
        int64_t timestamp_ms; /**< record timestamp, -1 if none */
        int timestamp_type;   /**< rd_kafka_timestamp_type_t */
        const void *key;      /**< NULL if the record has none */
        size_t key_len;
        const void *value; /**< body, NULL for a tombstone; must stay valid until the call ends */
        size_t len;
        const rd_kafka_headers_t *headers; /**< record headers, may be NULL */
        kt_event_format_t format;
} kt_dispatch_req_t;

typedef enum kt_outcome {
        KT_OUTCOME_SUCCESS,   /**< 2xx */
        KT_OUTCOME_RETRIABLE, /**< connection failure, timeout, 408, 429, 5xx */
        KT_OUTCOME_PERMANENT  /**< any other status */
} kt_outcome_t;

typedef struct kt_dispatch_result {
        kt_outcome_t outcome;
        long status;            /**< HTTP status, 0 if none was received */
        int runtime_down;       /**< nothing listens, no request was sent: not the record's
                                     fault */
        int timed_out;          /**< runtime.timeout_s + timeout_grace_ms passed, no answer */
        int sends;              /**< requests sent: 0 if none, 2 when curl re-sent it on a fresh
                                     connection after a reused one died before any answer */
        int64_t retry_after_ms; /**< from Retry-After, -1 if absent */
        const char *error;      /**< transfer error text, "" if none */
        double seconds;         /**< call duration */
        char *body;             /**< response body, only with dispatch.reply_topic; NULL if
                                     empty; owned by the callback (free it) */
        size_t body_len;
        int body_too_big;         /**< the body was over KT_MAX_RESPONSE_BYTES (body is NULL) */
        const char *content_type; /**< response Content-Type, NULL if none */
} kt_dispatch_result_t;

/* KT_MAX_RESPONSE_BYTES, the largest response body kept for a reply, is in config.h: the
 * configuration checks a producer's message.max.bytes against it. */

/** Called once per finished call with the \p opaque given at submit. */
typedef void(kt_dispatch_done_cb)(void *opaque, const kt_dispatch_result_t *res, void *cbarg);

/** Called when a health probe of the runtime finishes: \p up is non-zero on 2xx. */
typedef void(kt_dispatch_probe_cb)(int up, void *cbarg);

typedef struct kt_dispatch kt_dispatch_t;

/**
 * @brief Create the dispatcher with conf->max_in_flight call slots.
 * @returns NULL on failure with the reason in \p errstr.
 * @remark curl_global_init() must have run. \p conf must outlive the dispatcher.
 */
kt_dispatch_t *kt_dispatch_new(const kt_config_t *conf, kt_dispatch_done_cb *cb,
                               kt_dispatch_probe_cb *probe_cb, void *cbarg, char *errstr,
                               size_t errstr_size);

/** @brief Abort all calls (no callbacks) and free everything. NULL is a no-op. */
void kt_dispatch_destroy(kt_dispatch_t *kd);

/**
 * @brief Start a call for \p req.
 * @param callp receives a handle for kt_dispatch_request_cancel().
 * @param droppedp receives the number of record headers that could not be forwarded.
 * @param droppedp receives the number of record headers that could not be forwarded.
 * @returns KT_OK, KT_ERR_FULL when every slot is busy, KT_ERR_NOMEM.
 */
kt_err_t kt_dispatch_request_submit(kt_dispatch_t *kd, const kt_dispatch_req_t *req, void *opaque,
                                    void **callp, int *droppedp);

/**
 * @brief GET the runtime's health path once; the probe callback reports the answer.
 * @returns 0 if the probe runs (or already ran), -1 if it could not start (try later).
 */
int kt_dispatch_probe_start(kt_dispatch_t *kd);

/** @brief Abort a call started by submit; its callback will not run. */
void kt_dispatch_request_cancel(kt_dispatch_t *kd, void *call);

/** @returns the number of calls in flight. */
int kt_dispatch_in_flight(const kt_dispatch_t *kd);

/** @returns the number of free call slots. */
int kt_dispatch_slots_free(const kt_dispatch_t *kd);

/** @brief Move transfers forward and run the callback of each finished call. */
void kt_dispatch_perform(kt_dispatch_t *kd);

/**
 * @brief Forget the extra fds registered by earlier waits: call after closing any of them (a
 *        new one may reuse the number, and epoll dropped the old one when it was closed).
 */
void kt_dispatch_wait_reset(kt_dispatch_t *kd);

/**
 * @brief Sleep until a transfer, one of \p extra fds, or \p timeout_ms (capped by curl's own
 *        timers) wants attention.
 */
kt_err_t kt_dispatch_wait(kt_dispatch_t *kd, struct curl_waitfd *extra, unsigned extra_cnt,
                          int timeout_ms);

/**
 * @brief Back-off before attempt number \p attempts + 1: full jitter, uniform in
 *        [initial, min(max, initial * 2^(attempts-1))].
 */
int64_t kt_dispatch_backoff_ms(const kt_config_t *conf, int attempts);

/**
 * @brief Switch to a reloaded \p conf: max_in_flight (slots are added when it grows), the
 *        runtime URL, timeout and reply mode apply from each slot's next call.
 * @returns KT_OK, or KT_ERR_NOMEM: \p conf applies, with fewer slots than max_in_flight.
 * @remark \p conf must outlive the dispatcher (or the next call of this); the previous one is
 *         no longer read.
 */
kt_err_t kt_dispatch_conf_set(kt_dispatch_t *kd, const kt_config_t *conf);

/** @returns the outcome class of an HTTP \p status (0 = no response, a transfer error). */
kt_outcome_t kt_dispatch_outcome_classify(long status);

/** Caps on what a record may put into a request. */
#define KT_MAX_HEADER_NAME_BYTES  128
#define KT_MAX_HEADER_VALUE_BYTES 8192
#define KT_MAX_KEY_PLAIN_BYTES    4096

/**
 * Storage for one request's header lines, reused call after call, so that building them
 * allocates nothing once it has grown to the usual size. Plain data, owned by its user.
 * \p list is what CURLOPT_HTTPHEADER takes; its nodes and strings live here (never pass it
 * to curl_slist_free_all()). Zero-initialize before first use.
 */
typedef struct kt_dispatch_hdrs {
        struct curl_slist *list; /**< the first line, NULL if none */
        struct curl_slist *nodes;
        size_t cnt, cap;
        char *buf; /**< the lines, NUL-terminated, one after another */
        size_t len, size;
} kt_dispatch_hdrs_t;

/** Storage a kt_dispatch_hdrs_t keeps between calls; more is freed by kt_dispatch_hdrs_reset(). */
#define KT_HDRS_KEEP_BYTES (16 * 1024)

/**
 * @brief Build the request headers for \p req (the event contract: Kubeless event headers,
 *        key, partition, offset, timestamp, record headers) into \p h, replacing what it held.
 *        Nothing from the record reaches a header line unless it is safe to; unsafe values
 *        are base64-encoded, names that are not HTTP tokens and oversized values are dropped.
 * @param droppedp incremented for every record header dropped.
 * @returns KT_OK or KT_ERR_NOMEM (then \p h->list is NULL).
 */
kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, kt_dispatch_hdrs_t *h,
                                   int *droppedp);

/** @brief Forget the lines of \p h; keep its storage unless it grew over KT_HDRS_KEEP_BYTES. */
void kt_dispatch_hdrs_reset(kt_dispatch_hdrs_t *h);

/** @brief Free the storage of \p h (it may be used again, empty). */
void kt_dispatch_hdrs_free(kt_dispatch_hdrs_t *h);

/** @returns non-zero if \p value is one whole JSON object or array. */
int kt_dispatch_value_is_json(const void *value, size_t len);

/** @returns non-zero if \p s[0..len) is valid UTF-8. */
int kt_dispatch_utf8_valid(const unsigned char *s, size_t len);

/* ---------------------------------------------------------------- scheduler (dispatch_sched.c) */

/** Which record goes next: lanes per ordering mode, a ready FIFO, a retry heap. */
typedef struct kt_sched kt_sched_t;

/** @returns a new scheduler, NULL on allocation failure. */
kt_sched_t *kt_sched_new(const kt_config_t *conf);

/** @brief Switch to a reloaded \p conf with the same dispatch.ordering. */
void kt_sched_conf_set(kt_sched_t *ks, const kt_config_t *conf);

/** @brief Free. Records are not touched (the consumer owns them). NULL is a no-op. */
void kt_sched_destroy(kt_sched_t *ks);

/**
 * @brief Learn the size of a reply \p len of partition \p p (0: the call answered nothing),
 *        for the reply bound: see kt_sched_next().
 */
void kt_sched_reply_observe(kt_partition_t *p, size_t len);

/** @brief Take a newly buffered record: startable now if its lane is free, else queued. */
void kt_sched_record_add(kt_sched_t *ks, kt_record_t *rec);

/**
 * @returns the next record that may start (removed from the ready queue), or NULL.
 * @remark With dispatch.reply_topic, a record whose partition holds replies (p->reply_bytes)
 *         which, with the replies expected from its calls in flight, reach
 *         dispatch.partition_buffer_bytes does not start: it is parked until they are under
 *         again. A partition with no call in flight may always start one.
 */
kt_record_t *kt_sched_next(kt_sched_t *ks);

/** @returns non-zero if a record may start (a parked one included, once it may). */
int kt_sched_has_ready(const kt_sched_t *ks);

/** @brief \p rec is finished with (done, skipped, or dead-lettering): free its lane. */
void kt_sched_resolved(kt_sched_t *ks, kt_record_t *rec);

/** @brief Put a started record back at the front without it counting as an attempt. */
void kt_sched_requeue(kt_sched_t *ks, kt_record_t *rec);

/** @brief Start \p rec again at \p at_ms (it keeps its lane). */
kt_err_t kt_sched_retry_at(kt_sched_t *ks, kt_record_t *rec, int64_t at_ms);

/**
 * @brief Move retries due at \p now_ms to the front of the ready queue.
 * @returns the due time of the next retry, INT64_MAX if none.
 */
int64_t kt_sched_due(kt_sched_t *ks, int64_t now_ms);

/** @brief Forget every record of \p p (being revoked). */
void kt_sched_partition_drop(kt_sched_t *ks, kt_partition_t *p);

/* ---------------------------------------------------------------- dead letters
 * (dispatch_produce.c) */

typedef struct kt_produce kt_produce_t;

/** Called for each reply or dead letter with Kafka's verdict (RD_KAFKA_RESP_ERR_NO_ERROR:
 *  written). */
typedef void(kt_produce_done_cb)(void *opaque, rd_kafka_resp_err_t err, void *cbarg);

/**
 * @brief Create the idempotent dead-letter producer (acks=all) on conf->brokers.
 *        Unless kafka.producer_properties sets message.max.bytes, it is sized so that any
 *        record the consumer can hand over (its receive.message.max.bytes) and any reply
 *        (KT_MAX_RESPONSE_BYTES) fit with KT_PRODUCE_HEADER_ROOM: the topic's own
 *        max.message.bytes is then what decides.
 * @returns NULL on failure with the reason in \p errstr.
 */
kt_produce_t *kt_produce_new(const kt_config_t *conf, kt_produce_done_cb *cb, void *cbarg,
                             char *errstr, size_t errstr_size);

/** @brief Switch to a reloaded \p conf (dead-letter and reply topics; the producer's own
 *         properties and brokers need a new producer). */
void kt_produce_conf_set(kt_produce_t *kp, const kt_config_t *conf);

/** @brief Flush (at most 5 s, unless kt_produce_flush() was called: then what is left is
 *         purged at once) and free. NULL is a no-op. */
void kt_produce_destroy(kt_produce_t *kp);

/**
 * @brief Wait up to \p timeout_ms for what is still being produced (rd_kafka_flush: serves the
 *        delivery reports). The loop calls it in short steps with a heartbeat between them.
 * @returns the messages still not delivered (0: flushed).
 */
int kt_produce_flush(kt_produce_t *kp, int timeout_ms);

/** @returns a file descriptor readable when delivery reports are waiting. */
int kt_produce_wakeup_fd(const kt_produce_t *kp);

/** @brief Serve delivery reports (runs the callback). */
void kt_produce_poll(kt_produce_t *kp);

/** @returns non-zero once the producer hit a fatal error (the loop must stop). */
int kt_produce_fatal(const kt_produce_t *kp);

/**
 * @brief Add bootstrap brokers at run time (rd_kafka_brokers_add), e.g. found in ZooKeeper.
 * @returns the number of brokers librdkafka added.
 */
int kt_produce_brokers_add(kt_produce_t *kp, const char *brokers);

/** @returns dead letters produced and not yet reported. */
int kt_produce_outstanding(const kt_produce_t *kp);

/**
 * @brief Whether Kafka refusing a reply or dead letter with \p err is for good: trying the
 *        same message again cannot succeed until an operator changes something (the topic,
 *        its max.message.bytes, the ACLs). Permanent: MSG_SIZE_TOO_LARGE (the broker's or
 * librdkafka's), RECORD_LIST_TOO_LARGE, INVALID_RECORD, UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC,
 *        _UNKNOWN_PARTITION, TOPIC_EXCEPTION, TOPIC_AUTHORIZATION_FAILED,
 *        CLUSTER_AUTHORIZATION_FAILED, POLICY_VIOLATION, UNSUPPORTED_FOR_MESSAGE_FORMAT,
 *        INVALID_REQUIRED_ACKS, _INVALID_ARG. Everything else
 *        (timeouts, the broker down, queue full, leader changes, purges, INVALID_MSG (a corrupt
 * batch), authentication) is transient.
 * @returns non-zero if permanent.
 */
int kt_produce_err_permanent(rd_kafka_resp_err_t err);

/**
 * @brief Produce \p rec with its key, value, headers and the error headers
 *        (ktrigger-original-topic/-partition/-offset/-timestamp, ktrigger-attempts,
 *        ktrigger-last-status, ktrigger-last-error, ktrigger-function, and
 *        ktrigger-reply-error when Kafka refused its reply for good).
 * @param errp receives librdkafka's error when KT_ERR_KAFKA is returned.
 * @returns KT_OK (the callback will run with \p opaque) or KT_ERR_KAFKA (refused at once:
 *          classify *errp with kt_produce_err_permanent()).
 */
kt_err_t kt_produce_dead_letter(kt_produce_t *kp, const kt_record_t *rec, void *opaque,
                                rd_kafka_resp_err_t *errp);

/**
 * @brief Produce the function's answer to \p rec (rec->reply) to dispatch.reply_topic with the
 *        record's key and the headers content-type, ktrigger-original-topic/-partition/-offset,
 *        ktrigger-function.
 * @param errp receives librdkafka's error when KT_ERR_KAFKA is returned.
 * @returns KT_OK (the callback will run with \p opaque) or KT_ERR_KAFKA (refused at once:
 *          classify *errp with kt_produce_err_permanent()).
 * @remark Not copied: librdkafka borrows rec->reply, which must stay valid (and unchanged)
 *         until the callback ran, even if the record is dropped meanwhile: the caller hands
 *         it to its \p opaque.
 */
kt_err_t kt_produce_reply(kt_produce_t *kp, const kt_record_t *rec, void *opaque,
                          rd_kafka_resp_err_t *errp);

#endif /* KT_DISPATCH_H */
