/* The close watchdog: a close that hangs (an injected hook that never returns, as
 * rd_kafka_incremental_unassign() did in the final revoke) ends the process with the status
 * it was armed with and one ERROR naming the stage; one that finishes in time is left alone. */
#define _POSIX_C_SOURCE 200809L
#include "../core.h"
#include "kt_test.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *detail_unassign(void) {
        return "rd_kafka_incremental_unassign() in the final revoke";
}

/** The injected hang: what a reply that never comes looks like from the caller. */
static void hang_hook(void) {
        for (;;)
                pause();
}

typedef struct {
        const char *name;
        int64_t bound_ms;
        int work_ms;     /**< how long the closing takes, -1: hangs for ever (hang_hook) */
        int status;      /**< armed with */
        int status_late; /**< -1, or kt_watchdog_status_set() to this after arming */
        int with_detail;
        int want_exit;
        const char *want_text; /**< in stderr, NULL: no ERROR line at all */
} wd_case_t;

static const wd_case_t cases[] = {
    {"hang after the final commit", 300, -1, 0, -1, 1, 0,
     "ERROR WATCHDOG: shutdown: closing the consumer not finished after 300 ms "
     "(rd_kafka_incremental_unassign() in the final revoke): exiting with status 0"},
    {"hang, final commit not done", 300, -1, 1, -1, 1, 1,
     "closing the consumer not finished after 300 ms (rd_kafka_incremental_unassign() in the "
     "final revoke): exiting with status 1"},
    {"hang, no detail", 200, -1, 1, -1, 0, 1,
     "shutdown: closing the consumer not finished after 200 ms: exiting with status 1"},
    {"hang, status changed after arming", 200, -1, 0, 1, 0, 1, "exiting with status 1"},
    {"finishes in time", 3000, 50, 0, -1, 1, 42, NULL},
};

/** Run \p c in a child; @returns its exit status (-1: killed or still running after 20 s),
 *  with its stderr in \p out. */
static int run_case(const wd_case_t *c, char *out, size_t out_size, int64_t *elapsed_ms) {
        int fds[2], st = 0;
        size_t len = 0;
        int64_t t0 = kt_now_ms(), deadline = t0 + 20000;
        pid_t pid;

        *out = '\0';
        if (pipe(fds))
                return -1;
        if ((pid = fork()) == 0) {
                kt_watchdog_t *kw;
                dup2(fds[1], 2);
                close(fds[0]);
                kw = kt_watchdog_arm("shutdown", c->bound_ms, c->status,
                                     c->with_detail ? detail_unassign : NULL);
                kt_watchdog_stage_set(kw, "closing the consumer");
                if (c->status_late >= 0)
                        kt_watchdog_status_set(kw, c->status_late);
                if (c->work_ms < 0)
                        hang_hook();
                {
                        struct timespec ts = {0, c->work_ms * 1000000L};
                        nanosleep(&ts, NULL);
                }
                kt_watchdog_disarm(kw);
                _exit(42);
        }
        close(fds[1]);
        if (pid < 0) {
                close(fds[0]);
                return -1;
        }
        for (;;) {
                struct pollfd pfd = {fds[0], POLLIN, 0};
                ssize_t n;
                if (kt_now_ms() >= deadline)
                        break;
                if (poll(&pfd, 1, 100) <= 0)
                        continue;
                if ((n = read(fds[0], out + len, out_size - 1 - len)) <= 0)
                        break; /* EOF: the child is gone */
                len += (size_t)n;
                out[len] = '\0';
                if (len + 1 >= out_size)
                        break;
        }
        close(fds[0]);
        while (waitpid(pid, &st, WNOHANG) == 0) {
                struct timespec ts = {0, 10000000L};
                if (kt_now_ms() >= deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        return -1;
                }
                nanosleep(&ts, NULL);
        }
        *elapsed_ms = kt_now_ms() - t0;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const wd_case_t *c = &cases[i];
                char out[4096];
                int64_t elapsed = 0;
                int rc = run_case(c, out, sizeof(out), &elapsed);

                KT_CHECK(rc == c->want_exit, "%s: exit %d, want %d (stderr: %s)", c->name, rc,
                         c->want_exit, out);
                if (c->want_text)
                        KT_CHECK(strstr(out, c->want_text) != NULL,
                                 "%s: stderr \"%s\" lacks \"%s\"", c->name, out, c->want_text);
                else
                        KT_CHECK(!strstr(out, "WATCHDOG"), "%s: unexpected \"%s\"", c->name, out);
                if (c->work_ms < 0)
                        KT_CHECK(elapsed >= c->bound_ms && elapsed < c->bound_ms + 5000,
                                 "%s: fired after %lld ms, bound %lld", c->name, (long long)elapsed,
                                 (long long)c->bound_ms);
                else
                        KT_CHECK(elapsed < c->bound_ms, "%s: took %lld ms, bound %lld", c->name,
                                 (long long)elapsed, (long long)c->bound_ms);
        }
        return kt_test_done("test_watchdog");
}
