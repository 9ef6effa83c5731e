/* Calls through real libcurl against a loopback listener run by the test itself (no network):
 * a request libcurl cannot build is reported as unbuildable, not as a call; responses cut off
 * in their header block are transport failures, a whole one is a success; curl's timer, on the
 * event core, ends a wait that nothing else would, so a call nobody answers times out; an idle
 * keep-alive connection is reused, and closed by the runtime while idle, does not spin. */
#define _GNU_SOURCE
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static kt_dispatch_result_t last;
static int done;

/* libcurl's allocator (curl_global_init_mem): fails every allocation while alloc_fail is set,
 * as malloc does under memory pressure. */
static int alloc_fail;

static void *t_malloc(size_t n) {
        return alloc_fail ? NULL : malloc(n);
}

static void t_free(void *p) {
        free(p);
}

static void *t_realloc(void *p, size_t n) {
        return alloc_fail ? NULL : realloc(p, n);
}

static char *t_strdup(const char *str) {
        return alloc_fail ? NULL : strdup(str);
}

static void *t_calloc(size_t n, size_t size) {
        return alloc_fail ? NULL : calloc(n, size);
}

static void done_cb(void *opaque, const kt_dispatch_result_t *res, void *cbarg) {
        (void)opaque;
        (void)cbarg;
        last = *res;
        free(res->body);
        last.body = NULL;
        last.error = ""; /* not kept past the callback */
        done = 1;
}

static void probe_cb(int up, void *cbarg) {
        (void)up;
        (void)cbarg;
}

/** The head of the last request serve_kept() answered, NUL-terminated. */
static char last_head[65536];

/** How many lines of \p head start with \p prefix. */
static int lines_with(const char *head, const char *prefix) {
        int n = 0;
        for (const char *p = head; (p = strstr(p, prefix)); p++)
                n += p == head || p[-1] == '\n';
        return n;
}

/* Serve one connection: read the request head (and a small body), answer \p answer, close. */
static void serve_one(int lfd, const char *answer) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        char buf[65536];
        size_t got = 0;

        if (fd < 0)
                return;
        for (int tries = 0; tries < 2000 && !memmem(buf, got, "\r\n\r\n", 4); tries++) {
                ssize_t n = recv(fd, buf + got, sizeof(buf) - got, 0);
                if (n > 0)
                        got += (size_t)n;
                else if (n == 0 || errno != EAGAIN)
                        break;
                else
                        usleep(1000);
        }
        usleep(20000); /* the 1-byte body */
        (void)!recv(fd, buf, sizeof(buf), 0);
        (void)!send(fd, answer, strlen(answer), MSG_NOSIGNAL);
        shutdown(fd, SHUT_RDWR);
        close(fd);
}

/** The event core the dispatcher runs on. */
static kt_event_t *ke;

/* The watchdog of test_timer_ends_wait: turns a wait nothing ends into a failure, not a hang
 * (the handler interrupts epoll_wait: EINTR, a normal wake-up). */
static volatile sig_atomic_t watchdog_rang;

static void watchdog(int sig) {
        (void)sig;
        watchdog_rang = 1;
}

/* A runtime that accepts the call and never answers, with waits that have no limit but the
 * event core's timers: only curl's timer, registered there (timer_cb), can end them and let
 * perform time the call out. Without it the first wait would sleep until the watchdog. A
 * bounded number of waits: no spin on a deadline in the past either. */
static void test_timer_ends_wait(kt_dispatch_t *kd, kt_config_t *conf, int lfd) {
        struct sigaction sa = {0}, old;
        void *c = NULL;
        kt_dispatch_notes_t nt = {0, 0};
        kt_dispatch_req_t req = {"t", 0,   1, -1, 0, NULL, 0, "x", 1, NULL, KT_EVENT_KUBELESS,
                                 0,   NULL};
        int fd = -1, waits = 0;
        int64_t t0;

        sa.sa_handler = watchdog; /* no SA_RESTART: the wait returns */
        sigaction(SIGALRM, &sa, &old);
        conf->timeout_s = 1;
        kt_dispatch_conf_set(kd, conf);
        KT_CHECK(kt_dispatch_request_submit(kd, &req, NULL, &c, &nt) == KT_OK, "submit");
        done = 0;
        watchdog_rang = 0;
        alarm(30);
        t0 = kt_now_ms();
        kt_dispatch_perform(kd); /* starts the call (curl's 0 ms timeout) */
        while (!done && !watchdog_rang && waits < 1000) {
                kt_event_wait(ke, -1);
                waits++;
                kt_dispatch_perform(kd);
                if (fd < 0)
                        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK); /* and never answer */
        }
        alarm(0);
        sigaction(SIGALRM, &old, NULL);
        printf("timer ends the wait: %d waits, %lld ms\n", waits, (long long)(kt_now_ms() - t0));
        KT_CHECK(!watchdog_rang, "curl's timer ended the waits, not the watchdog (%d waits)",
                 waits);
        KT_CHECK(done && last.timed_out && last.outcome == KT_OUTCOME_RETRIABLE,
                 "timed out: done %d timed_out %d outcome %d", done, last.timed_out,
                 (int)last.outcome);
        KT_CHECK(waits <= 20, "no spin: %d waits", waits);
        if (fd >= 0)
                close(fd);
        conf->timeout_s = 5;
        kt_dispatch_conf_set(kd, conf);
}

static void call(kt_dispatch_t *kd, int lfd, const kt_dispatch_req_t *req, const char *answer) {
        void *c = NULL;
        kt_dispatch_notes_t nt = {0, 0};
        kt_err_t err = kt_dispatch_request_submit(kd, req, NULL, &c, &nt);

        KT_CHECK(err == KT_OK, "submit: %d", (int)err);
        done = 0;
        for (int i = 0; !err && !done && i < 500; i++) {
                kt_event_wait(ke, 10);
                kt_dispatch_perform(kd);
                if (answer)
                        serve_one(lfd, answer);
        }
        KT_CHECK(done, "the call ended");
}

/* Answer the call submitted on a keep-alive connection the test keeps: *cfd is the
 * connection (-1: accept one). @returns the number of connections accepted for it. */
static int serve_kept(kt_dispatch_t *kd, int lfd, int *cfd) {
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        char buf[65536];
        size_t got = 0;
        int accepted = 0;
        char *head;

        done = 0;
        for (int i = 0; !done && i < 500; i++) {
                int fd;
                ssize_t n;
                kt_event_wait(ke, 10);
                kt_dispatch_perform(kd);
                if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                        if (*cfd >= 0)
                                close(*cfd); /* curl gave the old one up */
                        *cfd = fd;
                        got = 0;
                        accepted++;
                }
                if (*cfd < 0)
                        continue;
                if ((n = recv(*cfd, buf + got, sizeof(buf) - got, 0)) > 0)
                        got += (size_t)n;
                /* The head and its 1-byte body: answer, and keep the connection open. */
                if ((head = memmem(buf, got, "\r\n\r\n", 4)) && (size_t)(head - buf) + 5 <= got) {
                        memcpy(last_head, buf, (size_t)(head - buf) + 2);
                        last_head[head - buf + 2] = '\0';
                        (void)!send(*cfd, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
                        got = 0;
                }
        }
        KT_CHECK(done && last.outcome == KT_OUTCOME_SUCCESS && last.status == 200,
                 "kept-alive call: done %d outcome %d status %ld", done, (int)last.outcome,
                 last.status);
        return accepted;
}

/* One record's call answered on the kept connection *cfd (serve_kept()). */
static int call_kept(kt_dispatch_t *kd, int lfd, int *cfd, const kt_dispatch_req_t *req) {
        void *c = NULL;
        kt_dispatch_notes_t nt = {0, 0};

        KT_CHECK(kt_dispatch_request_submit(kd, req, NULL, &c, &nt) == KT_OK, "submit");
        return serve_kept(kd, lfd, cfd);
}

/* Between calls curl's idle keep-alive connection is parked in the event core, not deleted
 * (dispatch_http.c DESIGN): the next call reuses it; closed by the runtime while idle, it is
 * taken out of the epoll set at its first readiness (no wait returns at once after that: no
 * spin on readiness nobody serves), and the next call opens a new connection. */
static void test_keepalive_parked(kt_dispatch_t *kd, int lfd) {
        kt_dispatch_req_t req = {"t", 0,   1, -1, 0, NULL, 0, "x", 1, NULL, KT_EVENT_KUBELESS,
                                 0,   NULL};
        int cfd = -1, early = 0, accepted;

        uint64_t ctl;

        call_kept(kd, lfd, &cfd, &req);
        ctl = kt_event_ctl_calls(ke);
        accepted = call_kept(kd, lfd, &cfd, &req);
        KT_CHECK(accepted == 0, "second call: the kept connection reused (%d accepted)", accepted);
        ctl = kt_event_ctl_calls(ke) - ctl;
        KT_CHECK(ctl == 0, "second call on the parked connection: %llu epoll_ctl, want 0",
                 (unsigned long long)ctl);
        close(cfd); /* the runtime closes the idle connection */
        cfd = -1;
        for (int i = 0; i < 20; i++) {
                int64_t t0 = kt_now_ms();
                kt_event_wait(ke, 20);
                kt_dispatch_perform(kd);
                early += kt_now_ms() - t0 < 5;
        }
        KT_CHECK(early <= 2, "closed while idle: %d of 20 waits returned at once (a spin)", early);
        accepted = call_kept(kd, lfd, &cfd, &req);
        KT_CHECK(accepted == 1, "after the close: a new connection (%d accepted)", accepted);
        if (cfd >= 0)
                close(cfd);
}

int main(void) {
        struct sockaddr_in sa = {0};
        socklen_t sl = sizeof(sa);
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        char url[64], health[64], errstr[256];
        kt_config_t conf = {0};
        kt_dispatch_t *kd;
        size_t big = 1100 * 1024;
        char *topic = malloc(big + 1);
        kt_dispatch_req_t req = {"t", 0,   1, -1, 0, NULL, 0, "x", 1, NULL, KT_EVENT_KUBELESS,
                                 0,   NULL};
        static const struct {
                const char *answer;
                kt_outcome_t want;
                long status;
        } answers[] = {
            {"HTTP/1.1 200 OK\r\nContent-Ty", KT_OUTCOME_RETRIABLE, 0},
            {"HTTP/1.1 200 OK\r\n", KT_OUTCOME_RETRIABLE, 0},
            {"HTTP/1.1 100 Continue\r\n\r\n", KT_OUTCOME_RETRIABLE, 0},
            {"HTTP/1.1 204 No Content\r\n\r\n", KT_OUTCOME_SUCCESS, 204},
            {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
             KT_OUTCOME_SUCCESS, 200},
            {"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", KT_OUTCOME_RETRIABLE, 503},
            /* Whole answers, however bare: never refused as cut off. */
            {"HTTP/1.0 200 OK\r\n\r\n", KT_OUTCOME_SUCCESS, 200},
            {"HTTP/1.0 200 OK\r\n\r\nbody until close", KT_OUTCOME_SUCCESS, 200},
            {"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", KT_OUTCOME_SUCCESS, 200},
            {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
             "X-Trailer: 1\r\n\r\n",
             KT_OUTCOME_SUCCESS, 200},
            {"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 202 Accepted\r\n"
             "Content-Length: 0\r\n\r\n",
             KT_OUTCOME_SUCCESS, 202},
            {"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", KT_OUTCOME_PERMANENT, 304},
        };

        curl_global_init_mem(CURL_GLOBAL_ALL, t_malloc, t_free, t_realloc, t_strdup, t_calloc);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        KT_CHECK(lfd >= 0 && !bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(lfd, 8) &&
                     !getsockname(lfd, (struct sockaddr *)&sa, &sl) && topic,
                 "listener: %s", strerror(errno));
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
        snprintf(health, sizeof(health), "http://127.0.0.1:%d/healthz", ntohs(sa.sin_port));
        conf.runtime_url = url;
        conf.runtime_health_url = health;
        conf.timeout_s = 5;
        conf.max_in_flight = 1;
        ke = kt_event_new(errstr, sizeof(errstr));
        KT_CHECK(ke != NULL, "kt_event_new: %s", errstr);
        kd =
            ke ? kt_dispatch_new(&conf, ke, done_cb, probe_cb, NULL, errstr, sizeof(errstr)) : NULL;
        KT_CHECK(kd != NULL, "kt_dispatch_new: %s", errstr);
        if (!kd || !topic)
                return kt_test_done("test_http");

        for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
                call(kd, lfd, &req, answers[i].answer);
                KT_CHECK(last.outcome == answers[i].want && last.status == answers[i].status &&
                             !last.unbuildable,
                         "answer %zu: outcome %d status %ld unbuildable %d", i, (int)last.outcome,
                         last.status, last.unbuildable);
        }

        /* libcurl out of memory before it sent anything, for a request well under the header
         * builder's cap: the allocator failed, not the request. Transient: a retriable transport
         * failure, never "unbuildable" (which dispatch.on_failure = block would skip). */
        {
                void *c = NULL;
                kt_dispatch_notes_t nt = {0, 0};
                KT_CHECK(kt_dispatch_request_submit(kd, &req, NULL, &c, &nt) == KT_OK, "submit");
                alloc_fail = 1;
                done = 0;
                for (int i = 0; !done && i < 500; i++) {
                        kt_event_wait(ke, 10);
                        kt_dispatch_perform(kd);
                }
                alloc_fail = 0;
                KT_CHECK(done, "the call ended");
                KT_CHECK(!last.unbuildable && last.outcome == KT_OUTCOME_RETRIABLE &&
                             last.status == 0 && last.sends == 0,
                         "out of memory: unbuildable %d outcome %d status %ld sends %d",
                         last.unbuildable, (int)last.outcome, last.status, last.sends);
                /* And the next call goes through again. */
                call(kd, lfd, &req, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                KT_CHECK(last.outcome == KT_OUTCOME_SUCCESS && last.status == 200,
                         "after out of memory: outcome %d status %ld", (int)last.outcome,
                         last.status);
        }

        /* One User-Agent line a request, ktrigger's: a record's call and a batch's. */
        {
                int cfd = -1;
                void *c = NULL;
                char *body = strdup("[]");

                call_kept(kd, lfd, &cfd, &req);
                KT_CHECK(lines_with(last_head, "User-Agent:") == 1 &&
                             lines_with(last_head, KT_USER_AGENT_LINE "\r\n") == 1,
                         "a record's call: one User-Agent line, " KT_USER_AGENT_LINE ":\n%s",
                         last_head);
                KT_CHECK(body && kt_dispatch_batch_submit(kd, body, 2, NULL, &c) == KT_OK,
                         "batch submit");
                serve_kept(kd, lfd, &cfd);
                KT_CHECK(strstr(last_head, "Content-Type: " KT_BATCH_CONTENT_TYPE "\r\n") &&
                             lines_with(last_head, "User-Agent:") == 1 &&
                             lines_with(last_head, KT_USER_AGENT_LINE "\r\n") == 1,
                         "a batch's call: one User-Agent line, " KT_USER_AGENT_LINE ":\n%s",
                         last_head);
                if (cfd >= 0)
                        close(cfd);
        }

        test_keepalive_parked(kd, lfd);
        test_timer_ends_wait(kd, &conf, lfd);

        /* Fixed lines over libcurl's ~1 MiB request buffer (a topic name no broker allows, the
         * only way past the builder's own cap): libcurl refuses it before sending a byte. */
        memset(topic, 't', big);
        topic[big] = '\0';
        req.topic = topic;
        call(kd, lfd, &req, NULL);
        KT_CHECK(last.unbuildable == 1 && last.sends == 0 && last.outcome == KT_OUTCOME_PERMANENT &&
                     !last.runtime_down,
                 "unbuildable %d sends %d outcome %d", last.unbuildable, last.sends,
                 (int)last.outcome);

        kt_dispatch_destroy(kd);
        kt_event_destroy(ke);
        close(lfd);
        free(topic);
        curl_global_cleanup();
        return kt_test_done("test_http");
}
