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
        int json_ct_exact; /**< dispatch.json_content_type_exact */
        int *value_kind;   /**< the record's content-type detection, kept between attempts
                                (KT_VALUE_*, 0 until detected); NULL: detect every time */
} kt_dispatch_req_t;

/** What a record's value was detected as (kt_dispatch_req_t.value_kind). */
#define KT_VALUE_UNKNOWN 0
#define KT_VALUE_JSON    1
#define KT_VALUE_TEXT    2
#define KT_VALUE_BINARY  3

/** What building a record's request found, for the caller's log and metrics. */
typedef struct kt_dispatch_notes {
        int dropped;       /**< record headers (and keys) not forwarded */
        int trace_invalid; /**< traceparent/tracestate present but not valid: not propagated */
} kt_dispatch_notes_t;

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
        int unbuildable;        /**< libcurl could not build the request (nothing was sent):
                                     not a call; permanent for this record */
        int64_t retry_after_ms; /**< from Retry-After, -1 if absent */
        const char *error;      /**< transfer error text, "" if none */
        double seconds;         /**< call duration */
        char *body;             /**< response body, only with dispatch.reply_topic; NULL if
                                     empty; owned by the callback (free it) */
        size_t body_len;
        int body_too_big;         /**< the body was over KT_MAX_RESPONSE_BYTES (body is NULL) */
        const char *content_type; /**< response Content-Type, NULL if none */
        int batch;                /**< the call was a batch (kt_dispatch_batch_submit): the
                                       body is kept whatever dispatch.reply_topic says */
} kt_dispatch_result_t;

/* KT_MAX_RESPONSE_BYTES, the largest response body kept for a reply, is in config.h: the
 * configuration checks a producer's message.max.bytes against it. */

/** Called once per finished call with the \p opaque given at submit. */
typedef void(kt_dispatch_done_cb)(void *opaque, const kt_dispatch_result_t *res, void *cbarg);

/** Called when a health probe of the runtime finishes: \p up is non-zero on 2xx. */
typedef void(kt_dispatch_probe_cb)(int up, void *cbarg);

typedef struct kt_dispatch kt_dispatch_t;

/**
 * @brief Create the dispatcher with conf->max_in_flight call slots, driving curl on the event
 *        core \p ke (curl's sockets and timer are registered there; a wait on \p ke notes
 *        what is ready, kt_dispatch_perform() serves it).
 * @returns NULL on failure with the reason in \p errstr.
 * @remark curl_global_init() must have run. \p conf and \p ke (borrowed) must outlive the
 *         dispatcher.
 */
kt_dispatch_t *kt_dispatch_new(const kt_config_t *conf, kt_event_t *ke, kt_dispatch_done_cb *cb,
                               kt_dispatch_probe_cb *probe_cb, void *cbarg, char *errstr,
                               size_t errstr_size);

/** @brief Abort all calls (no callbacks) and free everything. NULL is a no-op. */
void kt_dispatch_destroy(kt_dispatch_t *kd);

/**
 * @brief Start a call for \p req.
 * @param callp receives a handle for kt_dispatch_request_cancel().
 * @param notes receives what building the request found (headers dropped, trace context).
 * @returns KT_OK, KT_ERR_FULL when every slot is busy, KT_ERR_NOMEM.
 */
kt_err_t kt_dispatch_request_submit(kt_dispatch_t *kd, const kt_dispatch_req_t *req, void *opaque,
                                    void **callp, kt_dispatch_notes_t *notes);

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

/**
 * @brief Whether a transfer that ended with \p rc failed because libcurl could not build the
 *        request (CURLE_OUT_OF_MEMORY: libcurl 7.88 refuses a request header block over
 *        ~1 MiB; CURLE_BAD_FUNCTION_ARGUMENT) before any byte of it was sent
 *        (\p request_bytes, CURLINFO_REQUEST_SIZE, is 0) and its header lines
 *        (\p header_bytes) are at least KT_MIN_UNBUILDABLE_HEADER_BYTES. Such a record can
 *        never be delivered as it is: no call was made, and trying again cannot help. A
 *        smaller request libcurl always builds: its CURLE_OUT_OF_MEMORY is the allocator's,
 *        transient, and not "unbuildable" (dispatch.on_failure = block would skip the record).
 */
int kt_dispatch_transfer_unbuildable(CURLcode rc, long request_bytes, size_t header_bytes);

/** Caps on what a record may put into a request. */
#define KT_MAX_HEADER_NAME_BYTES  128
#define KT_MAX_HEADER_VALUE_BYTES 8192
#define KT_MAX_KEY_PLAIN_BYTES    4096
/** The most header bytes one request carries (lines plus CRLF): record headers that would go
 *  over are dropped and counted. A quarter of what libcurl 7.88 accepts (~1 MiB). */
#define KT_MAX_REQUEST_HEADER_BYTES (256 * 1024)
/** Header lines under this (twice the builder's cap, half of libcurl 7.88's ~1 MiB request
 *  buffer, which also holds the request line, curl's own headers and a body under 64 KiB)
 *  libcurl always builds: failing to is not the request's fault. */
#define KT_MIN_UNBUILDABLE_HEADER_BYTES (2 * KT_MAX_REQUEST_HEADER_BYTES)
/** The most record headers looked at per record; the rest are dropped and counted. */
#define KT_MAX_RECORD_HEADERS 1024
/** W3C trace context: the longest tracestate propagated, and its most list members. */
#define KT_MAX_TRACESTATE_BYTES   512
#define KT_MAX_TRACESTATE_MEMBERS 32

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
 *        key, partition, offset, timestamp, record headers, W3C trace context) into \p h,
 *        replacing what it held. Nothing from the record reaches a header line unless it is
 *        safe to; unsafe values are base64-encoded; names that are not HTTP tokens (checked
 *        with their real length: a NUL inside is not a token), oversized values, headers past
 *        KT_MAX_RECORD_HEADERS and headers that would take the request over
 *        KT_MAX_REQUEST_HEADER_BYTES are dropped.
 * @param notes dropped and trace_invalid are incremented (not reset).
 * @returns KT_OK or KT_ERR_NOMEM (then \p h->list is NULL).
 */
kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, kt_dispatch_hdrs_t *h,
                                   kt_dispatch_notes_t *notes);

/**
 * @returns non-zero if \p v[0..len) is a valid W3C traceparent: version-traceid-parentid-flags
 *          in lowercase hex, ids not all zero, version not ff; version 00 exactly 55 chars, a
 *          later version at least that, followed by '-' if longer.
 */
int kt_dispatch_traceparent_valid(const char *v, size_t len);

/**
 * @returns non-zero if \p v[0..len) is a valid W3C tracestate of at most
 *          KT_MAX_TRACESTATE_BYTES and KT_MAX_TRACESTATE_MEMBERS list members.
 */
int kt_dispatch_tracestate_valid(const char *v, size_t len);

/** @brief Forget the lines of \p h; keep its storage unless it grew over KT_HDRS_KEEP_BYTES. */
void kt_dispatch_hdrs_reset(kt_dispatch_hdrs_t *h);

/** @brief Free the storage of \p h (it may be used again, empty). */
void kt_dispatch_hdrs_free(kt_dispatch_hdrs_t *h);

/**
 * @returns non-zero if \p value is one whole JSON object or array (RFC 8259, white space
 *          around it allowed, nesting up to KT_JSON_MAX_DEPTH), checked by a validating scan
 *          that builds nothing; over KT_MAX_JSON_SCAN_BYTES only its first and last non-space
 *          characters are looked at ({...} or [...]).
 */
int kt_dispatch_value_is_json(const void *value, size_t len);

/** The largest value scanned in full for the content type. */
#define KT_MAX_JSON_SCAN_BYTES (1024 * 1024)
/** The deepest nesting a value detected as JSON may have (cJSON's limit is 1000 too). */
#define KT_JSON_MAX_DEPTH 1000

/** @returns non-zero if \p s[0..len) is valid UTF-8. */
int kt_dispatch_utf8_valid(const unsigned char *s, size_t len);

/** Room kt_dispatch_fmt_i64() needs: "-9223372036854775808" and a NUL. */
#define KT_FMT_I64_BYTES 24
/** Room kt_dispatch_rfc3339() needs. */
#define KT_RFC3339_BYTES 64

/**
 * @brief \p v in decimal into \p buf (at least KT_FMT_I64_BYTES), NUL-terminated, without
 *        printf: the request headers and the batch body put several numbers per record.
 * @returns the number of characters, NUL not counted.
 */
size_t kt_dispatch_fmt_i64(char *buf, int64_t v);

/**
 * @brief \p ms (Unix time in milliseconds) as RFC 3339 UTC with milliseconds,
 *        2023-11-14T22:13:20.123Z, into \p buf (KT_RFC3339_BYTES; left untouched if \p size is
 *        too small). The date and time part of the last second formatted is kept: records of
 *        one fetch mostly share it. Loop thread only (that cache is not locked).
 */
void kt_dispatch_rfc3339(int64_t ms, char *buf, size_t size);

/* ---------------------------------------------------------------- batches (dispatch_batch.c) */

/** Content-Type of a batch request: the CloudEvents JSON batch format. */
#define KT_BATCH_CONTENT_TYPE "application/cloudevents-batch+json"
/** Every call's User-Agent line. One of ktrigger's own header lines, not CURLOPT_USERAGENT:
 *  libcurl 7.88 formats that one twice a request through its byte-at-a-time printf (aprintf,
 *  then the request head); as a header line of ours the loop ran 2.6k fewer instructions a
 *  record (callgrind, bench/profile.py). */
#define KT_USER_AGENT_LINE "User-Agent: ktrigger/" KT_VERSION

/**
 * A batch body being built: a JSON array of structured-mode CloudEvents, one per record (see
 * the DESIGN block of dispatch_batch.c). Plain data, owned by its user; zero-initialize.
 */
typedef struct kt_dispatch_batch {
        char *buf; /**< the body, not NUL-terminated */
        size_t len, cap;
        size_t cnt; /**< events in it */
} kt_dispatch_batch_t;

/** One entry's result in a batch answer (Dapr bulk subscribe statuses). */
typedef enum kt_batch_status {
        KT_BATCH_SUCCESS, /**< done */
        KT_BATCH_RETRY,   /**< failed, retriable */
        KT_BATCH_DROP     /**< failed for good: dispatch.on_failure applies */
} kt_batch_status_t;

/** @brief Empty \p b, keeping its storage. */
void kt_dispatch_batch_reset(kt_dispatch_batch_t *b);

/** @brief Free the storage of \p b (it may be used again, empty). */
void kt_dispatch_batch_free(kt_dispatch_batch_t *b);

/**
 * @brief Append \p req's event. The first event always goes in; a later one that would take
 *        the finished body over \p max_bytes does not (\p b is left as it was).
 * @param notes dropped is incremented by the record headers not carried.
 * @returns KT_OK, KT_ERR_FULL (did not fit), KT_ERR_NOMEM (\p b as it was).
 */
kt_err_t kt_dispatch_batch_add(kt_dispatch_batch_t *b, const kt_dispatch_req_t *req,
                               size_t max_bytes, kt_dispatch_notes_t *notes);

/** @brief Close the array. @returns KT_OK, KT_ERR_NOMEM, KT_ERR_INVALID if it is empty. */
kt_err_t kt_dispatch_batch_finish(kt_dispatch_batch_t *b);

/**
 * @brief Read a 2xx answer to a batch of \p cnt entries \p reqs (in the order sent) into
 *        \p st: an empty body is all SUCCESS; {"statuses":[{"entryId","status"}]} gives each
 *        listed entry its status, an unlisted one RETRY.
 * @returns KT_OK, or KT_ERR_INVALID (unreadable: every \p st is RETRY, the reason is in
 *          \p errstr), KT_ERR_NOMEM.
 */
kt_err_t kt_dispatch_batch_parse(const char *body, size_t len, const kt_dispatch_req_t *reqs,
                                 size_t cnt, kt_batch_status_t *st, char *errstr,
                                 size_t errstr_size);

/**
 * @brief Start one call carrying the finished batch body \p body (taken over: freed by the
 *        dispatcher when the call ends or is cancelled, also on failure). The answer's body is
 *        kept (up to KT_MAX_RESPONSE_BYTES) and the result has batch set.
 * @returns KT_OK, KT_ERR_FULL when every slot is busy, KT_ERR_HTTP.
 */
kt_err_t kt_dispatch_batch_submit(kt_dispatch_t *kd, char *body, size_t len, void *opaque,
                                  void **callp);

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

/**
 * @brief Hold lane head \p rec out of the ready queue (a batch waiting to fill up:
 * dispatch.batch.max_wait_ms), so the loop sleeps instead of taking it again at once.
 */
void kt_sched_hold(kt_sched_t *ks, kt_record_t *rec);

/** @brief Put every held record back at the front of the ready queue, in their order. */
void kt_sched_unhold(kt_sched_t *ks);

/** @brief Start \p rec again at \p at_ms (it keeps its lane). */
kt_err_t kt_sched_retry_at(kt_sched_t *ks, kt_record_t *rec, int64_t at_ms);

/**
 * @brief Move retries due at \p now_ms to the front of the ready queue, and records PRODUCING
 *        (a refused reply or dead letter) due to be written again to kt_sched_next_write()'s.
 * @returns the due time of the next retry, INT64_MAX if none.
 */
int64_t kt_sched_due(kt_sched_t *ks, int64_t now_ms);

/**
 * @returns the next PRODUCING record due to be written again (removed from its queue), or
 *          NULL. It needs no call slot and no runtime: take these whatever the runtime does.
 */
kt_record_t *kt_sched_next_write(kt_sched_t *ks);

/** @brief Forget every record of \p p (being revoked), held ones included. */
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

/**
 * @brief The producer's librdkafka configuration, as kt_produce_new() uses it (its callbacks
 *        and opaque not yet set); separate so that the tests can read what wins.
 * @returns a new configuration (the caller's), or NULL with the reason in \p errstr.
 */
rd_kafka_conf_t *kt_produce_rkconf(const kt_config_t *conf, char *errstr, size_t errstr_size);

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

/** @brief Times the producer's bootstrap brokers were added again (kt_rebootstrap_t): 0 for
 *  NULL (no producer). */
uint64_t kt_produce_rebootstraps(const kt_produce_t *kp);

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
 * What a reply or a dead letter is made of: plain data borrowed for the call (the record's,
 * copied out by the loop), so the producer never sees the record itself.
 */
typedef struct kt_produce_msg {
        const char *topic; /**< the record's topic, partition and offset */
        int32_t partition;
        int64_t offset;
        int64_t timestamp_ms; /**< the record's timestamp, -1 if none */
        const void *key;      /**< the record's key, NULL if none */
        size_t key_len;
        const void *value; /**< dead letter: the record's value (copied); reply: the function's
                                answer (borrowed, see kt_produce_reply()) */
        size_t len;
        const rd_kafka_headers_t *headers; /**< dead letter: the record's headers, may be NULL */
        const char *content_type;          /**< reply: the answer's Content-Type, may be NULL */
        int attempts;                      /**< dead letter: calls made */
        long last_status;                  /**< dead letter: last HTTP status, 0 if none */
        const char *last_error;            /**< dead letter: last transfer error, may be NULL */
        int reply_refused; /**< dead letter: rd_kafka_resp_err_t Kafka refused its reply with
                                for good, 0 if none */
} kt_produce_msg_t;

/**
 * @brief Produce the record \p m describes with its key, value, headers and the error headers
 *        (ktrigger-original-topic/-partition/-offset/-timestamp, ktrigger-attempts,
 *        ktrigger-last-status, ktrigger-last-error, ktrigger-function, and
 *        ktrigger-reply-error when Kafka refused its reply for good).
 * @param errp receives librdkafka's error when KT_ERR_KAFKA is returned.
 * @returns KT_OK (the callback will run with \p opaque) or KT_ERR_KAFKA (refused at once:
 *          classify *errp with kt_produce_err_permanent()).
 */
kt_err_t kt_produce_dead_letter(kt_produce_t *kp, const kt_produce_msg_t *m, void *opaque,
                                rd_kafka_resp_err_t *errp);

/**
 * @brief Produce the function's answer (\p m->value) to the record \p m describes to
 *        dispatch.reply_topic with the record's key and the headers content-type,
 *        ktrigger-original-topic/-partition/-offset, ktrigger-function.
 * @param errp receives librdkafka's error when KT_ERR_KAFKA is returned.
 * @returns KT_OK (the callback will run with \p opaque) or KT_ERR_KAFKA (refused at once:
 *          classify *errp with kt_produce_err_permanent()).
 * @remark Not copied: librdkafka borrows m->value, which must stay valid (and unchanged)
 *         until the callback ran, even if the record is dropped meanwhile: the caller hands
 *         it to its \p opaque.
 */
kt_err_t kt_produce_reply(kt_produce_t *kp, const kt_produce_msg_t *m, void *opaque,
                          rd_kafka_resp_err_t *errp);

#endif /* KT_DISPATCH_H */
