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
#include "../core/core.h"

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

/** What the call is about: plain data borrowed for the duration of the call. */
typedef struct kt_dispatch_req {
        const char *topic;
        int32_t partition;
        int64_t offset;
        int64_t timestamp_ms; /**< record timestamp, -1 if none */
        const void *value;    /**< body; must stay valid until the call finishes */
        size_t len;
} kt_dispatch_req_t;

typedef enum kt_outcome {
        KT_OUTCOME_SUCCESS,   /**< 2xx */
        KT_OUTCOME_RETRIABLE, /**< connection failure, timeout, 408, 429, 5xx */
        KT_OUTCOME_PERMANENT  /**< any other status */
} kt_outcome_t;

typedef struct kt_dispatch_result {
        kt_outcome_t outcome;
        long status;       /**< HTTP status, 0 if none was received */
        const char *error; /**< transfer error text, "" if none */
        double seconds;    /**< call duration */
} kt_dispatch_result_t;

/** Called once per finished call with the \p opaque given at submit. */
typedef void(kt_dispatch_done_cb)(void *opaque, const kt_dispatch_result_t *res, void *cbarg);

typedef struct kt_dispatch kt_dispatch_t;

/**
 * @brief Create the dispatcher with conf->max_in_flight call slots.
 * @returns NULL on failure with the reason in \p errstr.
 * @remark curl_global_init() must have run. \p conf must outlive the dispatcher.
 */
kt_dispatch_t *kt_dispatch_new(const kt_config_t *conf, kt_dispatch_done_cb *cb, void *cbarg,
                               char *errstr, size_t errstr_size);

/** @brief Abort all calls (no callbacks) and free everything. NULL is a no-op. */
void kt_dispatch_destroy(kt_dispatch_t *kd);

/**
 * @brief Start a call for \p req.
 * @param callp receives a handle for kt_dispatch_request_cancel().
 * @returns KT_OK, KT_ERR_FULL when every slot is busy, KT_ERR_NOMEM.
 */
kt_err_t kt_dispatch_request_submit(kt_dispatch_t *kd, const kt_dispatch_req_t *req, void *opaque,
                                    void **callp);

/** @brief Abort a call started by submit; its callback will not run. */
void kt_dispatch_request_cancel(kt_dispatch_t *kd, void *call);

/** @returns the number of calls in flight. */
int kt_dispatch_in_flight(const kt_dispatch_t *kd);

/** @returns the number of free call slots. */
int kt_dispatch_slots_free(const kt_dispatch_t *kd);

/** @brief Move transfers forward and run the callback of each finished call. */
void kt_dispatch_perform(kt_dispatch_t *kd);

/**
 * @brief Sleep until a transfer, one of \p extra fds, or \p timeout_ms (capped by curl's own
 *        timers) wants attention.
 */
kt_err_t kt_dispatch_wait(kt_dispatch_t *kd, struct curl_waitfd *extra, unsigned extra_cnt,
                          int timeout_ms);

/**
 * @brief Back-off before attempt number \p attempts + 1: exponential from
 *        retry_backoff_ms, capped at retry_max_backoff_ms, with jitter in [half, full].
 */
int64_t kt_dispatch_backoff_ms(const kt_config_t *conf, int attempts);

/** @returns the outcome class of an HTTP \p status (0 = no response, a transfer error). */
kt_outcome_t kt_dispatch_outcome_classify(long status);

/**
 * @brief Build the request headers for \p req (Kubeless event headers plus partition and
 *        offset), appended to \p *headersp.
 * @returns KT_OK or KT_ERR_NOMEM (then \p *headersp may hold a partial list to free).
 */
kt_err_t kt_dispatch_headers_build(const kt_dispatch_req_t *req, struct curl_slist **headersp);

/** @returns non-zero if \p value is one whole JSON object (Kubeless' test for JSON events). */
int kt_dispatch_value_is_json_object(const void *value, size_t len);

#endif /* KT_DISPATCH_H */
