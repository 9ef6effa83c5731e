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
 *   settings at its next call when its generation is older than the dispatcher's. A replaced
 *   parsed URL is kept until the end (a call in flight may still read it).
 * - The body points at the record's value (no copy); the consumer keeps the record alive until
 *   the callback ran or the call was cancelled.
 * - Response bodies are read and thrown away (the reply feature will keep them, capped).
 * - A response is an answer only once its header block is complete: CURLOPT_HEADERFUNCTION
 *   watches for the blank line after a final (non-1xx) status line. libcurl 7.88 reports
 *   CURLE_OK for a response cut off inside its header block; that is a transport failure here.
 * - A request libcurl refuses to build (CURLE_OUT_OF_MEMORY past its ~1 MiB request header
 *   buffer) with no byte sent (CURLINFO_REQUEST_SIZE 0) is "unbuildable": not a call, and
 *   permanent. Only a request that big: a smaller one's CURLE_OUT_OF_MEMORY is malloc failing,
 *   a transient transport failure (else block would skip, i.e. lose, the record).
 * CURLOPT_PREREQFUNCTION has run by then, so sends is reset to 0. The header builder's own cap
 * (KT_MAX_REQUEST_HEADER_BYTES) keeps this from happening in practice.
 * - "Nothing listens" (connection refused before any request was sent) is reported as
 *   runtime_down, not as a failure of the record: the loop stops calling and probes the
 *   runtime's health path with a separate easy handle (not a slot) until it answers. A
 *   request that was sent and then lost its connection is an attempt, also when curl's own
 *   re-send of it then finds nothing listening (a runtime that exits after a 408).
 * - curl re-sends a request by itself, once, when a reused keep-alive connection dies before
 *   any answer: CURLOPT_PREREQFUNCTION counts the requests really sent (res.sends), so each
 *   one counts as a call and an attempt.
 * - The call timeout is runtime.timeout_s plus runtime.timeout_grace_ms: a Kubeless runtime
 *   answers 408 at FUNC_TIMEOUT, and that answer should arrive before we give up.
 * - Event-driven, as in curl's docs/examples/ephiperfifo.c, on the loop's event core
 *   (core/core_event.c): curl tells us its sockets (CURLMOPT_SOCKETFUNCTION) and its next
 *   timeout (CURLMOPT_TIMERFUNCTION), which are registered there beside the loop's own fds. A
 *   ready socket is only noted during the wait; kt_dispatch_perform() hands curl the ones that
 *   were (curl_multi_socket_action), so calls finish where the loop drives them, not inside its
 *   sleep. curl_multi_perform() would instead visit every transfer on every call and poll()
 *   each one's socket: with 64 calls in flight that was about 3.4 poll() calls and a walk over
 *   64 handles per record.
 * - Between two calls a keep-alive connection leaves curl's socket set (CURL_POLL_REMOVE) and
 *   comes back for the next call (CURL_POLL_IN): an EPOLL_CTL_DEL and an EPOLL_CTL_ADD per call
 *   (0.6-1.0 each per call measured with 64 in flight). So the connections curl opens through
 *   us (CURLOPT_OPENSOCKETFUNCTION, SOCK_CLOEXEC) are parked in the event core instead of
 *   deleted (see its DESIGN): no epoll_ctl when they come back. They are deleted from it in
 *   CURLOPT_CLOSESOCKETFUNCTION, before the close, as the event core requires; sockets curl
 *   opens and closes by itself (the threaded resolver's socketpair) are never parked.
 * - curl's timer is a one-shot timer of the event core: it caps the wait, and once it ran (it
 *   is gone then, so no stale deadline in the past can make the loop spin with wait 0) perform
 *   runs curl's timeouts, which makes curl announce its next one. Perform also runs them when
 *   curl_multi_timeout() says one is due, so a call just added (due at once) starts in the same
 *   pass. While the event core's waits fail (see its DESIGN block) curl's sockets are served
 *   only by these timeouts.
 */
#define _GNU_SOURCE
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/** curl sockets noted ready between two performs (more stay ready: the event core is
 *  level-triggered, the next wait reports them again). */
#define KT_DISPATCH_MAX_READY 128

#define FAC "DISPATCH"

typedef struct slot {
        CURL *easy;
        kt_dispatch_hdrs_t hdrs; /**< request header lines, storage reused call after call */
        void *opaque;
        int busy;
        char error[CURL_ERROR_SIZE];
        int sends; /**< requests sent for this call (curl re-sends on a dead reused connection) */
        int head_done;    /**< the final (non-1xx) response's header block ended (blank line) */
        long head_status; /**< the status line of the response being read, 0 before one */
        char *body;       /**< response body (reply mode only), at most KT_MAX_RESPONSE_BYTES */
        size_t body_len, body_cap;
        int body_too_big;
        int keeping;    /**< the write callback keeps the body (reply mode, or a batch) */
        int batch;      /**< this call carries a batch (kt_dispatch_batch_submit) */
        char *req_body; /**< a batch's body, owned while the call runs */
        int idx;        /**< in kt_dispatch.slots */
        int gen;        /**< the settings' generation applied to easy */
} slot_t;

struct kt_dispatch {
        const kt_config_t *conf;
        CURLM *multi;
        slot_t **slots;
        int slot_cnt;
        int limit;        /**< conf->max_in_flight (or fewer, out of memory): in flight at most */
        int gen;          /**< bumped by kt_dispatch_conf_set() */
        int probe_gen;    /**< the generation of the probe's URL */
        CURLU **old_urls; /**< replaced by reloads, freed at the end */
        size_t old_url_cnt;
        int *free_stack; /**< indexes of free slots */
        int free_cnt;
        kt_dispatch_done_cb *cb;
        kt_dispatch_probe_cb *probe_cb;
        void *cbarg;
        CURLU *url;  /**< runtime_url parsed once, shared read-only by the slots */
        CURL *probe; /**< health probe, in the multi while probe_busy */
        int probe_busy;
        kt_event_t *ke; /**< the loop's event core (borrowed): curl's sockets and timer */
        struct {
                int fd, mask;           /**< KT_EVENT_* */
        } ready[KT_DISPATCH_MAX_READY]; /**< curl sockets ready, for perform */
        int ready_cnt;
        uint64_t timer;          /**< curl's timer in the event core, 0 if none */
        int timer_fired;         /**< it ran: perform runs curl's timeouts */
        unsigned char *conn_fds; /**< by fd: 1 for a connection opened by socket_open() (ours
                                    to see closed: it may be parked, see DESIGN) */
        int conn_fd_cap;
};

/** kt_event_fd_cb of a curl socket: noted for perform (see DESIGN). */
static void socket_ready(void *opaque, int fd, int mask) {
        kt_dispatch_t *kd = opaque;
        int i;

        for (i = 0; i < kd->ready_cnt && kd->ready[i].fd != fd; i++)
                ;
        if (i == kd->ready_cnt) {
                if (i == KT_DISPATCH_MAX_READY)
                        return; /* reported again by the next wait */
                kd->ready_cnt++;
        }
        kd->ready[i].fd = fd;
        kd->ready[i].mask = mask;
}

static int conn_fd(const kt_dispatch_t *kd, int fd) {
        return fd >= 0 && fd < kd->conn_fd_cap && kd->conn_fds[fd];
}

/** CURLOPT_OPENSOCKETFUNCTION: curl's own socket(2) call, close-on-exec, remembered as a
 *  connection that socket_close() will see closed. Out of memory for the table: still opened,
 *  just never parked. */
static curl_socket_t socket_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr) {
        kt_dispatch_t *kd = clientp;
        int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);

        (void)purpose;
        if (fd < 0)
                return CURL_SOCKET_BAD;
        /* A registration under a number socket() just returned is stale (an fd closed without
         * being deleted): never let it pass for this one. Nothing registered: a lookup. */
        kt_event_fd_del(kd->ke, fd);
        if (fd >= kd->conn_fd_cap) {
                int cap = kd->conn_fd_cap ? kd->conn_fd_cap : 64;
                unsigned char *t;
                while (cap <= fd)
                        cap *= 2;
                if (!(t = realloc(kd->conn_fds, (size_t)cap)))
                        return fd;
                memset(t + kd->conn_fd_cap, 0, (size_t)(cap - kd->conn_fd_cap));
                kd->conn_fds = t;
                kd->conn_fd_cap = cap;
        }
        kd->conn_fds[fd] = 1;
        return fd;
}

/** CURLOPT_CLOSESOCKETFUNCTION: out of the event core (parked or not), then closed. */
static int socket_close(void *clientp, curl_socket_t fd) {
        kt_dispatch_t *kd = clientp;

        kt_event_fd_del(kd->ke, fd);
        if (conn_fd(kd, fd))
                kd->conn_fds[fd] = 0;
        return close(fd);
}

/** Every easy handle opens and closes its connections through us (see DESIGN). */
static void socket_opts_set(kt_dispatch_t *kd, CURL *easy) {
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, socket_open);
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, kd);
        curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, socket_close);
        curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, kd);
}

/** CURLMOPT_SOCKETFUNCTION: keep the event core's registrations equal to what curl waits
 *  for. Never returns -1: in libcurl 7.88.1 that marks the whole multi handle dead (every
 *  later call answers CURLM_ABORTED_BY_CALLBACK: all calls and the probe), not one transfer.
 *  A registration that fails is recoverable without it: epoll refusing it (KT_ERR_SYS) keeps
 *  it registered and the event core tries it again at each wait; out of memory growing the
 *  fd table (KT_ERR_NOMEM, a new fd) is logged and the socket left unwatched, so curl's timer
 *  still ends that transfer at its timeout (and curl's next change for it tries again). */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        kt_dispatch_t *kd = userp;
        int mask =
            (what & CURL_POLL_IN ? KT_EVENT_READ : 0) | (what & CURL_POLL_OUT ? KT_EVENT_WRITE : 0);

        (void)easy;
        if (what == CURL_POLL_REMOVE || !mask) {
                /* Removed (curl forgets socketp with the socket), or CURL_POLL_NONE: nothing to
                 * wait for yet. No socketp: never registered by us. A connection of ours is
                 * parked: it is likely back for the next call (see DESIGN). */
                if (socketp && conn_fd(kd, fd))
                        kt_event_fd_park(kd->ke, fd);
                else if (socketp)
                        kt_event_fd_del(kd->ke, fd);
                return 0;
        }
        /* New to curl and not a connection of ours (the resolver's socketpair): never parked,
         * so anything registered under its number is stale (as in socket_open()). */
        if (!socketp && !conn_fd(kd, fd))
                kt_event_fd_del(kd->ke, fd);
        if (kt_event_fd_set(kd->ke, fd, mask, socket_ready, kd) == KT_ERR_NOMEM) {
                KT_ERR(FAC,
                       "out of memory registering curl's socket %d: its call ends at its "
                       "timeout",
                       (int)fd);
                return 0;
        }
        if (!socketp)
                curl_multi_assign(kd->multi, fd, kd); /* any non-NULL: registered */
        return 0;
}

/** kt_event_timer_cb of curl's timer. */
static void timer_ran(void *opaque) {
        kt_dispatch_t *kd = opaque;

        kd->timer = 0;
        kd->timer_fired = 1;
}

/** CURLMOPT_TIMERFUNCTION: curl's next timeout changed (-1: none). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        kt_dispatch_t *kd = userp;

        (void)multi;
        kt_event_timer_del(kd->ke, kd->timer);
        kd->timer = 0;
        /* Out of memory: perform still runs a timeout curl_multi_timeout() says is due, and the
         * loop wakes at least once a second. */
        /* +1: kt_now_ms() rounds down, so now + timeout_ms can be up to 1 ms before curl's
         * deadline. Run that early, curl runs nothing and, its deadline unchanged, does not
         * announce it again (Curl_update_timer() skips an unchanged one): the wait would then
         * sleep until something else woke it. One ms late, never early. */
        if (timeout_ms >= 0)
                kd->timer = kt_event_timer_add(kd->ke, kt_now_ms() + timeout_ms + 1, timer_ran, kd);
        return 0;
}

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

/** CURLOPT_HEADERFUNCTION: see where the response's header block ends. libcurl 7.88 reports
 *  CURLE_OK for a response cut off inside it (even after the status line alone). */
static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        slot_t *s = userdata;
        size_t n = size * nmemb;

        if (n >= 5 && !memcmp(ptr, "HTTP/", 5)) {
                /* A status line, "HTTP/1.1 200 OK": a new response (after a 1xx). */
                const char *sp = memchr(ptr, ' ', n);
                long st = 0;
                if (sp && ptr + n - sp > 3)
                        for (int i = 1; i <= 3; i++)
                                st = sp[i] >= '0' && sp[i] <= '9' ? st * 10 + (sp[i] - '0') : -1000;
                s->head_status = st > 0 ? st : 1; /* 1: unreadable, not a final answer */
                s->head_done = 0;
        } else if ((n == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (n == 1 && ptr[0] == '\n')) {
                /* The blank line: a 1xx block ends and another response follows. */
                if (s->head_status >= 200)
                        s->head_done = 1;
        }
        return n;
}

int kt_dispatch_transfer_unbuildable(CURLcode rc, long request_bytes, size_t header_bytes) {
        return (rc == CURLE_OUT_OF_MEMORY || rc == CURLE_BAD_FUNCTION_ARGUMENT) &&
               request_bytes == 0 && header_bytes >= KT_MIN_UNBUILDABLE_HEADER_BYTES;
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

/** Keep the response body (a reply, a batch's answer) or throw it away. */
static void slot_keep(slot_t *s, int keep) {
        if (keep) {
                curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, keep_cb);
                curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        } else
                curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, discard_cb);
        s->keeping = keep;
}

/** The settings a reload may change. */
static void slot_apply(kt_dispatch_t *kd, slot_t *s) {
        /* Parsed once: with CURLOPT_URL curl parses the string again for every call. */
        if (kd->url)
                curl_easy_setopt(s->easy, CURLOPT_CURLU, kd->url);
        else {
                curl_easy_setopt(s->easy, CURLOPT_CURLU, NULL);
                curl_easy_setopt(s->easy, CURLOPT_URL, kd->conf->runtime_url);
        }
        /* Past the runtime's own FUNC_TIMEOUT, so its 408 is what we see, not our timeout. */
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS,
                         (long)kd->conf->timeout_s * 1000L + kd->conf->timeout_grace_ms);
        slot_keep(s, kd->conf->reply_topic != NULL);
        s->gen = kd->gen;
}

/** Parse conf->runtime_url into kd->url (NULL if curl cannot: CURLOPT_URL then reports what
 *  is wrong with it, call by call). */
static void url_parse(kt_dispatch_t *kd) {
        if ((kd->url = curl_url()) &&
            curl_url_set(kd->url, CURLUPART_URL, kd->conf->runtime_url, 0) != CURLUE_OK) {
                curl_url_cleanup(kd->url);
                kd->url = NULL;
        }
}

/** CURLOPT_PREREQFUNCTION: runs once per request sent, also for curl's own re-send of a
 *  request whose reused keep-alive connection died before any answer. */
static int prereq_cb(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port) {
        slot_t *s = clientp;

        (void)primary_ip;
        (void)local_ip;
        (void)primary_port;
        (void)local_port;
        s->sends++;
        return CURL_PREREQFUNC_OK;
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
        /* The runtime is beside us: never through an http_proxy/HTTP_PROXY from the pod's
         * environment ("" overrides the variables). */
        curl_easy_setopt(s->easy, CURLOPT_PROXY, "");
        curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->error);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        socket_opts_set(kd, s->easy);
        curl_easy_setopt(s->easy, CURLOPT_PREREQFUNCTION, prereq_cb);
        curl_easy_setopt(s->easy, CURLOPT_PREREQDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        /* No CURLOPT_USERAGENT: the header lines carry KT_USER_AGENT_LINE. */
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
                                kt_dispatch_hdrs_free(&slots[j]->hdrs);
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
        int url_changed = strcmp(conf->runtime_url, kd->conf->runtime_url) != 0;

        kd->conf = conf; /* the old one may be freed after this call */
        kd->gen++;
        if (url_changed) {
                CURLU **old = realloc(kd->old_urls, (kd->old_url_cnt + 1) * sizeof(*old));
                if (old) {
                        kd->old_urls = old;
                        if (kd->url)
                                old[kd->old_url_cnt++] = kd->url;
                        url_parse(kd);
                } else {
                        err = KT_ERR_NOMEM;
                        kd->url = NULL; /* leaked rather than freed under a running call */
                }
        }
        if (slots_grow(kd, conf->max_in_flight))
                err = KT_ERR_NOMEM;
        kd->limit = conf->max_in_flight < kd->slot_cnt ? conf->max_in_flight : kd->slot_cnt;
        return err;
}

kt_dispatch_t *kt_dispatch_new(const kt_config_t *conf, kt_event_t *ke, kt_dispatch_done_cb *cb,
                               kt_dispatch_probe_cb *probe_cb, void *cbarg, char *errstr,
                               size_t errstr_size) {
        kt_dispatch_t *kd = calloc(1, sizeof(*kd));

        if (!kd)
                goto nomem;
        kd->conf = conf;
        kd->cb = cb;
        kd->probe_cb = probe_cb;
        kd->cbarg = cbarg;
        kd->ke = ke;
        if (!(kd->multi = curl_multi_init()))
                goto nomem;
        curl_multi_setopt(kd->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        curl_multi_setopt(kd->multi, CURLMOPT_SOCKETDATA, kd);
        curl_multi_setopt(kd->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        curl_multi_setopt(kd->multi, CURLMOPT_TIMERDATA, kd);
        url_parse(kd);
        if (slots_grow(kd, conf->max_in_flight))
                goto nomem;
        kd->limit = conf->max_in_flight;
        if (!(kd->probe = curl_easy_init()))
                goto nomem;
        curl_easy_setopt(kd->probe, CURLOPT_URL, conf->runtime_health_url);
        curl_easy_setopt(kd->probe, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(kd->probe, CURLOPT_PROXY, "");
        curl_easy_setopt(kd->probe, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_setopt(kd->probe, CURLOPT_WRITEFUNCTION, discard_cb);
        curl_easy_setopt(kd->probe, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(kd->probe, CURLOPT_USERAGENT, "ktrigger/" KT_VERSION);
        socket_opts_set(kd, kd->probe);
        return kd;

nomem:
        snprintf(errstr, errstr_size, "out of memory creating %d call slots", conf->max_in_flight);
        kt_dispatch_destroy(kd);
        return NULL;
}

static void slot_release(kt_dispatch_t *kd, slot_t *s) {
        curl_multi_remove_handle(kd->multi, s->easy);
        kt_dispatch_hdrs_reset(&s->hdrs);
        s->opaque = NULL;
        s->busy = 0;
        free(s->body);
        s->body = NULL;
        s->body_len = s->body_cap = 0;
        s->body_too_big = 0;
        free(s->req_body);
        s->req_body = NULL;
        s->batch = 0;
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
                kt_dispatch_hdrs_free(&s->hdrs);
                free(s);
        }
        if (kd->probe) {
                if (kd->probe_busy)
                        curl_multi_remove_handle(kd->multi, kd->probe);
                curl_easy_cleanup(kd->probe);
        }
        if (kd->multi) /* closes the connections: socket_close() takes them out of the event
                        * core, so kd and the event core must still be there */
                curl_multi_cleanup(kd->multi);
        kt_event_timer_del(kd->ke, kd->timer);
        curl_url_cleanup(kd->url); /* after the easy handles that used it */
        for (size_t i = 0; i < kd->old_url_cnt; i++)
                curl_url_cleanup(kd->old_urls[i]);
        free(kd->old_urls);
        free(kd->slots);
        free(kd->free_stack);
        free(kd->conn_fds);
        free(kd);
}

kt_err_t kt_dispatch_request_submit(kt_dispatch_t *kd, const kt_dispatch_req_t *req, void *opaque,
                                    void **callp, kt_dispatch_notes_t *notes) {
        slot_t *s;
        kt_err_t err;
        CURLMcode mc;

        if (!kd->free_cnt || kd->slot_cnt - kd->free_cnt >= kd->limit)
                return KT_ERR_FULL;
        s = kd->slots[kd->free_stack[kd->free_cnt - 1]];
        if (s->gen != kd->gen)
                slot_apply(kd, s);
        if (s->keeping != (kd->conf->reply_topic != NULL))
                slot_keep(s, kd->conf->reply_topic != NULL); /* after a batch */
        if ((err = kt_dispatch_headers_build(req, &s->hdrs, notes)))
                return err;
        s->error[0] = '\0';
        s->sends = 0;
        s->head_done = 0;
        s->head_status = 0;
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs.list);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->len);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, req->value ? (const char *)req->value : "");
        if ((mc = curl_multi_add_handle(kd->multi, s->easy)) != CURLM_OK) {
                KT_ERR(FAC, "cannot start call: %s", curl_multi_strerror(mc));
                kt_dispatch_hdrs_reset(&s->hdrs);
                return KT_ERR_HTTP;
        }
        kd->free_cnt--;
        s->busy = 1;
        s->opaque = opaque;
        *callp = s;
        return KT_OK;
}

/* A batch's header lines: constant, so one list serves every slot (curl only reads it). */
static char batch_ct_line[] = "Content-Type: " KT_BATCH_CONTENT_TYPE;
static char batch_ua_line[] = KT_USER_AGENT_LINE;
static char batch_expect_line[] = "Expect:";
static struct curl_slist batch_hdr_expect = {batch_expect_line, NULL};
static struct curl_slist batch_hdr_ua = {batch_ua_line, &batch_hdr_expect};
static struct curl_slist batch_hdrs = {batch_ct_line, &batch_hdr_ua};

kt_err_t kt_dispatch_batch_submit(kt_dispatch_t *kd, char *body, size_t len, void *opaque,
                                  void **callp) {
        slot_t *s;
        CURLMcode mc;

        if (!kd->free_cnt || kd->slot_cnt - kd->free_cnt >= kd->limit) {
                free(body);
                return KT_ERR_FULL;
        }
        s = kd->slots[kd->free_stack[kd->free_cnt - 1]];
        if (s->gen != kd->gen)
                slot_apply(kd, s);
        if (!s->keeping)
                slot_keep(s, 1); /* the per-entry answer */
        s->error[0] = '\0';
        s->sends = 0;
        s->head_done = 0;
        s->head_status = 0;
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, &batch_hdrs);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body);
        if ((mc = curl_multi_add_handle(kd->multi, s->easy)) != CURLM_OK) {
                KT_ERR(FAC, "cannot start call: %s", curl_multi_strerror(mc));
                free(body);
                return KT_ERR_HTTP;
        }
        kd->free_cnt--;
        s->busy = 1;
        s->batch = 1;
        s->req_body = body;
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
        long timeout_ms;

        /* Only the sockets that are ready, then curl's timeouts (a call just added is started
         * by its 0 ms timeout). */
        for (int i = 0; i < kd->ready_cnt; i++) {
                int e = kd->ready[i].mask;
                int mask = (e & KT_EVENT_READ ? CURL_CSELECT_IN : 0) |
                           (e & KT_EVENT_WRITE ? CURL_CSELECT_OUT : 0) |
                           (e & KT_EVENT_ERROR ? CURL_CSELECT_ERR : 0);
                curl_multi_socket_action(kd->multi, kd->ready[i].fd, mask, &running);
        }
        kd->ready_cnt = 0;
        /* curl's timer ran, or curl says a timeout is due (it rounds a partial millisecond up:
         * 0 only once one is). Never run early (see timer_cb): curl would run nothing and not
         * announce its unchanged deadline again. */
        if (kd->timer_fired ||
            (curl_multi_timeout(kd->multi, &timeout_ms) == CURLM_OK && timeout_ms == 0)) {
                kd->timer_fired = 0;
                curl_multi_socket_action(kd->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        while ((msg = curl_multi_info_read(kd->multi, &left))) {
                slot_t *s = NULL;
                kt_dispatch_result_t res = {0};
                char error[CURL_ERROR_SIZE + 96], ctype[256];
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
                res.sends = s->sends;
                if (msg->data.result == CURLE_OK && !s->head_done) {
                        /* Cut off inside the header block, or only 1xx answers: no answer
                         * at all. A transport failure, retriable (the function may have run). */
                        res.status = 0;
                        if (s->head_status >= 200)
                                snprintf(error, sizeof(error),
                                         "response cut off in its header block (after status "
                                         "%ld)",
                                         s->head_status);
                        else if (s->head_status)
                                snprintf(error, sizeof(error),
                                         "connection closed after an interim %ld response, "
                                         "before the final one",
                                         s->head_status);
                        else
                                snprintf(error, sizeof(error), "no response status line");
                        res.error = error;
                } else if (msg->data.result == CURLE_OK) {
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
                        long request_bytes = 0;
                        res.status = 0;
                        curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &request_bytes);
                        /* The lines on the wire: each with CRLF for the NUL kept here. */
                        if (kt_dispatch_transfer_unbuildable(msg->data.result, request_bytes,
                                                             s->hdrs.len + s->hdrs.cnt)) {
                                /* Nothing was sent, so no call: CURLOPT_PREREQFUNCTION ran
                                 * before libcurl built (and refused) the request. */
                                res.unbuildable = 1;
                                res.sends = 0;
                        }
                        res.timed_out = msg->data.result == CURLE_OPERATION_TIMEDOUT;
                        /* Only if no request went out: a connection that died after one was
                         * sent (curl's re-send then found nothing listening) ran the handler,
                         * maybe, and is an attempt. */
                        res.runtime_down =
                            s->sends == 0 && (msg->data.result == CURLE_COULDNT_CONNECT ||
                                              msg->data.result == CURLE_COULDNT_RESOLVE_HOST);
                        /* Copied: the callback may reuse this slot for its next call. */
                        /* curl keeps its first error: with a re-send, how the sent request
                         * was lost. */
                        snprintf(error, sizeof(error), "%s%s",
                                 s->error[0] ? s->error : curl_easy_strerror(msg->data.result),
                                 s->sends && (msg->data.result == CURLE_COULDNT_CONNECT ||
                                              msg->data.result == CURLE_COULDNT_RESOLVE_HOST)
                                     ? " (after the request was sent; its re-send found "
                                       "nothing listening)"
                                 : msg->data.result == CURLE_OUT_OF_MEMORY && request_bytes > 0
                                     /* libcurl 7.88's answer to a response header block over
                                      * its 100 KiB limit */
                                     ? " (reading the response: its header block may be over "
                                       "libcurl's 100 KiB limit)"
                                     : msg->data.result == CURLE_OUT_OF_MEMORY
                                           ? " (building the request: its header block may be over "
                                             "libcurl's ~1 MiB limit)"
                                           : "");
                        res.error = error;
                }
                res.batch = s->batch;
                res.outcome = res.unbuildable ? KT_OUTCOME_PERMANENT
                                              : kt_dispatch_outcome_classify(res.status);
                opaque = s->opaque;
                /* Free the slot first so the callback can submit the next record into it. */
                slot_release(kd, s);
                kd->cb(opaque, &res, kd->cbarg);
        }
}
