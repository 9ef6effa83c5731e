/* kt_dispatch_wait: EINTR is a normal wake-up; any other epoll failure sleeps a growing,
 * bounded back-off (never a spin), is logged at most once per 10 s, and a wait that works
 * resets it. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void done_cb(void *opaque, const kt_dispatch_result_t *res, void *arg) {
        (void)opaque;
        (void)res;
        (void)arg;
}

static void probe_cb(int healthy, void *arg) {
        (void)healthy;
        (void)arg;
}

/** Run one wait with stderr captured in \p log; @returns the wait's result. */
static kt_err_t wait_logged(kt_dispatch_t *kd, struct curl_waitfd *fds, unsigned cnt, int ms,
                            FILE *log, int64_t *took_ms) {
        int saved = dup(STDERR_FILENO);
        int64_t t0 = kt_now_ms();
        kt_err_t err;

        fflush(stderr);
        dup2(fileno(log), STDERR_FILENO);
        err = kt_dispatch_wait(kd, fds, cnt, ms);
        dup2(saved, STDERR_FILENO);
        close(saved);
        *took_ms = kt_now_ms() - t0;
        return err;
}

static int log_lines(FILE *log, const char *needle) {
        char line[4096];
        int n = 0;

        fflush(log);
        rewind(log);
        while (fgets(line, sizeof(line), log))
                n += strstr(line, needle) != NULL;
        return n;
}

static void test_wait_failures(void) {
        static kt_config_t conf;
        static const struct {
                int err;         /* injected errno, 0: none */
                int timeout_ms;  /* asked for */
                kt_err_t want;   /* result */
                int64_t min_ms;  /* it slept at least (a spin would take ~0 ms) */
                int64_t max_ms;  /* and at most (the back-off is bounded) */
                int logged;      /* ERROR lines about epoll_wait so far */
                const char *why; /* the case */
        } cases[] = {
            {EINTR, 5000, KT_OK, 0, 1000, 0, "EINTR: a normal wake-up, not logged, no sleep"},
            {EBADF, 0, KT_ERR_SYS, 10, 1000, 1, "first failure: 10 ms, even for timeout 0"},
            {EBADF, 0, KT_ERR_SYS, 20, 1000, 1, "second in a row: 20 ms, not logged again"},
            {ENOMEM, 0, KT_ERR_SYS, 40, 1000, 1, "third: 40 ms, still one line"},
            {0, 0, KT_OK, 0, 1000, 1, "a wait that works resets the back-off"},
            {EBADF, 0, KT_ERR_SYS, 10, 1000, 1, "after the reset: 10 ms again"},
        };
        struct curl_waitfd fds[2];
        int pipefd[2] = {-1, -1};
        char errstr[256];
        kt_dispatch_t *kd;
        FILE *log = tmpfile();

        conf.max_in_flight = 1;
        conf.timeout_s = 1;
        conf.runtime_url = "http://127.0.0.1:9/";
        conf.runtime_health_url = "http://127.0.0.1:9/healthz";
        kd = kt_dispatch_new(&conf, done_cb, probe_cb, NULL, errstr, sizeof(errstr));
        KT_CHECK(kd != NULL, "kt_dispatch_new: %s", errstr);
        KT_CHECK(log != NULL, "tmpfile");
        KT_CHECK(pipe(pipefd) == 0, "pipe");
        if (!kd || !log || pipefd[0] < 0)
                goto out;
        fds[0] = (struct curl_waitfd){pipefd[0], CURL_WAIT_POLLIN, 0};
        fds[1] = (struct curl_waitfd){-1, CURL_WAIT_POLLIN, 0};

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int64_t took;
                kt_err_t err;

                if (cases[i].err)
                        kt_dispatch_wait_fail_inject(kd, cases[i].err, 1);
                err = wait_logged(kd, fds, 2, cases[i].timeout_ms, log, &took);
                KT_CHECK(err == cases[i].want, "%s: result %d", cases[i].why, (int)err);
                KT_CHECK(took >= cases[i].min_ms && took <= cases[i].max_ms, "%s: took %lld ms",
                         cases[i].why, (long long)took);
                KT_CHECK(log_lines(log, "epoll_wait") == cases[i].logged, "%s: %d lines logged",
                         cases[i].why, log_lines(log, "epoll_wait"));
        }

        /* The back-off is bounded: many failures in a row sleep at most 1 s each. */
        kt_dispatch_wait_fail_inject(kd, EBADF, 8);
        for (int i = 0; i < 8; i++) {
                int64_t took;
                wait_logged(kd, fds, 2, 0, log, &took);
                KT_CHECK(took <= 1500, "failure %d in a row slept %lld ms", i + 2, (long long)took);
                if (i == 7)
                        KT_CHECK(took >= 1000, "the 8th in a row sleeps the cap, %lld ms",
                                 (long long)took);
        }

        /* The loop's own fds still wake a failed wait early (a signal, Kafka). */
        kt_dispatch_wait_fail_inject(kd, EBADF, 1);
        KT_CHECK(write(pipefd[1], "x", 1) == 1, "write");
        {
                int64_t took;
                kt_err_t err = wait_logged(kd, fds, 2, 0, log, &took);
                KT_CHECK(err == KT_ERR_SYS, "failed wait with a readable fd: %d", (int)err);
                KT_CHECK(took < 500, "woken by the readable fd, took %lld ms", (long long)took);
                KT_CHECK(fds[0].revents & CURL_WAIT_POLLIN, "the readable fd is reported");
        }
        KT_CHECK(log_lines(log, "epoll_wait") == 1, "still one ERROR line in 10 s: %d",
                 log_lines(log, "epoll_wait"));
out:
        if (log)
                fclose(log);
        if (pipefd[0] >= 0) {
                close(pipefd[0]);
                close(pipefd[1]);
        }
        kt_dispatch_destroy(kd);
}

int main(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        test_wait_failures();
        curl_global_cleanup();
        return kt_test_done("test_wait");
}
