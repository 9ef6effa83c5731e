/*
 * DESIGN: calls through one libcurl multi handle, driven by the loop thread.
 *
 * - A pool of max_in_flight slots, each with its own easy handle that is reused call after
 *   call, so the multi's connection cache keeps keep-alive connections to the runtime open
 *   (CURLMOPT_MAXCONNECTS = slots). No call ever waits for a free slot: submit answers
 *   KT_ERR_FULL and the record stays buffered.
 * - A reload (kt_dispatch_conf_set) may raise the limit (new slots are added; slots are
 *   allocated one by one so curl's CURLOPT_PRIVATE pointers stay valid) or lower it (idle
 *   slots beyond it stay unused), and change the URL or timeout: each slot re-applies the
 *   settings at its next call when its generation is older than the dispatcher's.
 * - The body points at the record's value (no copy); the consumer keeps the record alive until
 *   the callback ran or the call was cancelled.
 * - Response bodies are read and thrown away (the reply feature will keep them, capped).
 * - "Nothing listens" (connection refused) is reported as runtime_down, not as a failure of the
 *   record: the loop stops calling and probes the runtime's health path with a separate easy
 *   handle (not a slot) until it answers.
 */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "DISPATCH"

typedef struct slot {
        CURL *easy;
        struct curl_slist *headers;
        void *opaque;
        int busy;
        char error[CURL_ERROR_SIZE];
        char *body; /**< response body (reply mode only), at most KT_MAX_RESPONSE_BYTES */
        size_t body_len, body_cap;
        int body_too_big;
        int idx; /**< in kt_dispatch.slots */
        int gen; /**< the settings' generation applied to easy */
} slot_t;

struct kt_dispatch {
        const kt_config_t *conf;
        CURLM *multi;
        slot_t **slots;
        int slot_cnt;
        int limit;       /**< conf->max_in_flight: calls in flight at most */
        int gen;         /**< bumped by kt_dispatch_conf_set() */
        int probe_gen;   /**< the generation of the probe's URL */
        int *free_stack; /**< indexes of free slots */
        int free_cnt;
        kt_dispatch_done_cb *cb;
        kt_dispatch_probe_cb *probe_cb;
        void *cbarg;
        CURL *probe; /**< health probe, in the multi while probe_busy */
        int probe_busy;
};

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        (void)ptr;
        (void)userdata;
        return size * nmemb;
}

/** Keep the response body for a reply, up to KT_MAX_RESPONSE_BYTES. */
static size_t keep_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        slot_t *s = userdata;
        size_t n = size * nmemb;

        if (s->body_too_big || s->body_len + n > KT_MAX_RESPONSE_BYTES) {
                s->body_too_big = 1; /* read on, keep nothing */
                return n;
        }
        if (s->body_len + n > s->body_cap) {
                size_t cap = s->body_cap ? s->body_cap : 4096;
                char *b;
                while (cap < s->body_len + n)
                        cap *= 2;
                if (!(b = realloc(s->body, cap)))
                        return 0; /* aborts the transfer: reported as an error, retried */
                s->body = b;
                s->body_cap = cap;
        }
        memcpy(s->body + s->body_len, ptr, n);
        s->body_len += n;
        return n;
}

kt_outcome_t kt_dispatch_outcome_classify(long status) {
        if (status >= 200 && status <= 299)
                return KT_OUTCOME_SUCCESS;
        if (status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599))
                return KT_OUTCOME_RETRIABLE;
        return KT_OUTCOME_PERMANENT;
}

int64_t kt_dispatch_backoff_ms(const kt_config_t *conf, int attempts) {
        int64_t lo = conf->retry_initial_backoff_ms, hi = lo;

        for (int i = 1; i < attempts && hi < conf->retry_max_backoff_ms; i++)
                hi *= 2;
        if (hi > conf->retry_max_backoff_ms)
                hi = conf->retry_max_backoff_ms;
        /* Full jitter, so replicas that failed together do not retry together. */
        return lo + (int64_t)((uint64_t)rand() % (uint64_t)(hi - lo + 1));
}

/** The settings a reload may change. */
static void slot_apply(kt_dispatch_t *kd, slot_t *s) {
        curl_easy_setopt(s->easy, CURLOPT_URL, kd->conf->runtime_url);
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)kd->conf->timeout_s * 1000L);
        if (kd->conf->reply_topic) {
                curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, keep_cb);
                curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        } else
                curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, discard_cb);
        s->gen = kd->gen;
}

static int slot_setup(kt_dispatch_t *kd, slot_t *s) {
        if (!(s->easy = curl_easy_init()))
                return -1;
        slot_apply(kd, s);
        curl_easy_setopt(s->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(s->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->error);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(s->easy, CURLOPT_USERAGENT, "ktrigger/" KT_VERSION);
        return 0;
}

/** Have \p cnt slots (more if there are already). @returns 0, -1 out of memory. */
static int slots_grow(kt_dispatch_t *kd, int cnt) {
        slot_t **slots;
        int *stack;

        if (cnt <= kd->slot_cnt)
                return 0;
        if (!(slots = realloc(kd->slots, (size_t)cnt * sizeof(*slots))))
                return -1;
        kd->slots = slots;
        if (!(stack = realloc(kd->free_stack, (size_t)cnt * sizeof(*stack))))
                return -1;
        kd->free_stack = stack;
        /* Slots are pushed highest first, so the lowest (longest-lived) are used first. */
        for (int i = cnt - 1; i >= kd->slot_cnt; i--) {
                if (!(slots[i] = calloc(1, sizeof(*slots[i]))) || slot_setup(kd, slots[i])) {
                        if (slots[i]) {
                                if (slots[i]->easy)
                                        curl_easy_cleanup(slots[i]->easy);
                                free(slots[i]);
                        }
                        /* Forget the ones made so far in this round. */
                        for (int j = i + 1; j < cnt; j++) {
                                curl_easy_cleanup(slots[j]->easy);
                                free(slots[j]);
                        }
                        kd->free_cnt -= cnt - 1 - i;
                        return -1;
                }
                slots[i]->idx = i;
                stack[kd->free_cnt++] = i;
        }
        kd->slot_cnt = cnt;
        curl_multi_setopt(kd->multi, CURLMOPT_MAXCONNECTS, (long)cnt);
        return 0;
}

kt_err_t kt_dispatch_conf_set(kt_dispatch_t *kd, const kt_config_t *conf) {
        kt_err_t err = KT_OK;

        kd->conf = conf; /* the old one may be freed after this call */
        kd->gen++;
        if (slots_grow(kd, conf->max_in_flight))
                err = KT_ERR_NOMEM;
        kd->limit = conf->max_in_flight < kd->slot_cnt ? conf->max_in_flight : kd->slot_cnt;
        return err;
}

kt_dispatch_t *kt_dispatch_new(const kt_config_t *conf, kt_dispatch_done_cb *cb,
                               kt_dispatch_probe_cb *probe_cb, void *cbarg, char *errstr,
                               size_t errstr_size) {
        kt_dispatch_t *kd = calloc(1, sizeof(*kd));

        if (!kd)
                goto nomem;
        kd->conf = conf;
        kd->cb = cb;
        kd->probe_cb = probe_cb;
        kd->cbarg = cbarg;
        if (!(kd->multi = curl_multi_init()) || slots_grow(kd, conf->max_in_flight))
                goto nomem;
        kd->limit = conf->max_in_flight;
        if (!(kd->probe = curl_easy_init()))
                goto nomem;
        curl_easy_setopt(kd->probe, CURLOPT_URL, conf->runtime_health_url);
        curl_easy_setopt(kd->probe, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(kd->probe, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_setopt(kd->probe, CURLOPT_WRITEFUNCTION, discard_cb);
        curl_easy_setopt(kd->probe, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(kd->probe, CURLOPT_USERAGENT, "ktrigger/" KT_VERSION);
        return kd;

nomem:
        snprintf(errstr, errstr_size, "out of memory creating %d call slots", conf->max_in_flight);
        kt_dispatch_destroy(kd);
        return NULL;
}

static void slot_release(kt_dispatch_t *kd, slot_t *s) {
        curl_multi_remove_handle(kd->multi, s->easy);
        curl_slist_free_all(s->headers);
        s->headers = NULL;
        s->opaque = NULL;
        s->busy = 0;
        free(s->body);
        s->body = NULL;
        s->body_len = s->body_cap = 0;
        s->body_too_big = 0;
        kd->free_stack[kd->free_cnt++] = s->idx;
}

void kt_dispatch_destroy(kt_dispatch_t *kd) {
        if (!kd)
                return;
        for (int i = 0; kd->slots && i < kd->slot_cnt; i++) {
                slot_t *s = kd->slots[i];
                if (s->busy)
                        slot_release(kd, s);
                if (s->easy)
                        curl_easy_cleanup(s->easy);
                free(s);
        }
        if (kd->probe) {
                if (kd->probe_busy)
                        curl_multi_remove_handle(kd->multi, kd->probe);
                curl_easy_cleanup(kd->probe);
        }
        if (kd->multi)
                curl_multi_cleanup(kd->multi);
        free(kd->slots);
        free(kd->free_stack);
        free(kd);
}

kt_err_t kt_dispatch_request_submit(kt_dispatch_t *kd, const kt_dispatch_req_t *req, void *opaque,
                                    void **callp, int *droppedp) {
        slot_t *s;
        kt_err_t err;
        CURLMcode mc;

        if (!kd->free_cnt || kd->slot_cnt - kd->free_cnt >= kd->limit)
                return KT_ERR_FULL;
        s = kd->slots[kd->free_stack[kd->free_cnt - 1]];
        if (s->gen != kd->gen)
                slot_apply(kd, s);
        s->headers = NULL;
        if ((err = kt_dispatch_headers_build(req, &s->headers, droppedp))) {
                curl_slist_free_all(s->headers);
                s->headers = NULL;
                return err;
        }
        s->error[0] = '\0';
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->len);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, req->value ? (const char *)req->value : "");
        if ((mc = curl_multi_add_handle(kd->multi, s->easy)) != CURLM_OK) {
                KT_ERR(FAC, "cannot start call: %s", curl_multi_strerror(mc));
                curl_slist_free_all(s->headers);
                s->headers = NULL;
                return KT_ERR_HTTP;
        }
        kd->free_cnt--;
        s->busy = 1;
        s->opaque = opaque;
        *callp = s;
        return KT_OK;
}

int kt_dispatch_probe_start(kt_dispatch_t *kd) {
        if (kd->probe_busy)
                return 0;
        if (kd->probe_gen != kd->gen) {
                /* Not while a probe runs: options apply to forthcoming transfers. */
                curl_easy_setopt(kd->probe, CURLOPT_URL, kd->conf->runtime_health_url);
                kd->probe_gen = kd->gen;
        }
        if (curl_multi_add_handle(kd->multi, kd->probe) != CURLM_OK)
                return -1;
        kd->probe_busy = 1;
        return 0;
}

void kt_dispatch_request_cancel(kt_dispatch_t *kd, void *call) {
        slot_t *s = call;

        if (s && s->busy)
                slot_release(kd, s);
}

int kt_dispatch_in_flight(const kt_dispatch_t *kd) {
        return kd->slot_cnt - kd->free_cnt;
}

int kt_dispatch_slots_free(const kt_dispatch_t *kd) {
        int busy = kd->slot_cnt - kd->free_cnt;
        return busy < kd->limit ? kd->limit - busy : 0;
}

void kt_dispatch_perform(kt_dispatch_t *kd) {
        CURLMsg *msg;
        int running, left;

        curl_multi_perform(kd->multi, &running);
        while ((msg = curl_multi_info_read(kd->multi, &left))) {
                slot_t *s = NULL;
                kt_dispatch_result_t res = {0};
                char error[CURL_ERROR_SIZE], ctype[256];
                const char *ct = NULL;
                void *opaque;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                if (msg->easy_handle == kd->probe) {
                        long status = 0;
                        CURLcode rc = msg->data.result;
                        if (rc == CURLE_OK)
                                curl_easy_getinfo(kd->probe, CURLINFO_RESPONSE_CODE, &status);
                        curl_multi_remove_handle(kd->multi, kd->probe);
                        kd->probe_busy = 0;
                        kd->probe_cb(status >= 200 && status <= 299, kd->cbarg);
                        continue;
                }
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
                curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME, &res.seconds);
                res.retry_after_ms = -1;
                if (msg->data.result == CURLE_OK) {
                        curl_off_t retry_after = 0;
                        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &res.status);
                        /* Seconds or an HTTP date, both turned into seconds by curl. */
                        if (!curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after) &&
                            retry_after > 0)
                                /* Capped before multiplying: a huge value must not overflow. */
                                res.retry_after_ms =
                                    (int64_t)(retry_after < 86400 ? retry_after : 86400) * 1000;
                        res.error = "";
                        if (!curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ct) && ct) {
                                snprintf(ctype, sizeof(ctype), "%s", ct);
                                res.content_type = ctype;
                        }
                        /* The body goes to the callback (the slot is released first). */
                        res.body_too_big = s->body_too_big;
                        if (!s->body_too_big && s->body_len) {
                                res.body = s->body;
                                res.body_len = s->body_len;
                                s->body = NULL;
                        }
                } else {
                        res.status = 0;
                        res.timed_out = msg->data.result == CURLE_OPERATION_TIMEDOUT;
                        res.runtime_down = msg->data.result == CURLE_COULDNT_CONNECT ||
                                           msg->data.result == CURLE_COULDNT_RESOLVE_HOST;
                        /* Copied: the callback may reuse this slot for its next call. */
                        snprintf(error, sizeof(error), "%s",
                                 s->error[0] ? s->error : curl_easy_strerror(msg->data.result));
                        res.error = error;
                }
                res.outcome = kt_dispatch_outcome_classify(res.status);
                opaque = s->opaque;
                /* Free the slot first so the callback can submit the next record into it. */
                slot_release(kd, s);
                kd->cb(opaque, &res, kd->cbarg);
        }
}

kt_err_t kt_dispatch_wait(kt_dispatch_t *kd, struct curl_waitfd *extra, unsigned extra_cnt,
                          int timeout_ms) {
        CURLMcode mc = curl_multi_poll(kd->multi, extra, extra_cnt, timeout_ms, NULL);

        if (mc != CURLM_OK) {
                KT_ERR(FAC, "curl_multi_poll: %s", curl_multi_strerror(mc));
                return KT_ERR_HTTP;
        }
        return KT_OK;
}
