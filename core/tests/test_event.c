/* The event core: a ready fd runs its callback and ends the wait, a deleted one does not;
 * timers run once, in deadline order, and cut the wait short; a failing wait (epoll_wait, or
 * a registration epoll refuses) sleeps a growing, bounded back-off (never a spin) woken early
 * only by KT_EVENT_BACKOFF fds, is logged at most once per 10 s, and a wait that works
 * resets it. EINTR is a normal wake-up. Deleting an fd whose last change epoll refused takes
 * it out of the epoll set all the same. A parked fd is kept in the set until it is ready. */
#define _POSIX_C_SOURCE 200809L
#include "../core.h"
#include "kt_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
        int calls, fd, mask;
} seen_t;

static void fd_cb(void *opaque, int fd, int mask) {
        seen_t *s = opaque;

        s->calls++;
        s->fd = fd;
        s->mask = mask;
}

/** Run one wait with stderr captured in \p log (NULL: not captured); @returns its result. */
static kt_err_t wait_logged(kt_event_t *ke, int ms, FILE *log, int64_t *took_ms) {
        int saved = dup(STDERR_FILENO);
        int64_t t0 = kt_now_ms();
        kt_err_t err;

        fflush(stderr);
        if (log)
                dup2(fileno(log), STDERR_FILENO);
        err = kt_event_wait(ke, ms);
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

static void test_fd_ready(kt_event_t *ke) {
        int p[2];
        seen_t s = {0, -1, 0};
        int64_t took;
        char c;

        KT_CHECK(pipe(p) == 0, "pipe");
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "register");
        KT_CHECK(kt_event_wait(ke, 0) == KT_OK && s.calls == 0, "nothing ready: no callback");
        wait_logged(ke, 50, NULL, &took);
        KT_CHECK(s.calls == 0 && took >= 45, "nothing ready: slept the timeout, %lld ms",
                 (long long)took);
        KT_CHECK(write(p[1], "x", 1) == 1, "write");
        wait_logged(ke, 5000, NULL, &took);
        KT_CHECK(s.calls == 1 && s.fd == p[0] && s.mask == KT_EVENT_READ,
                 "readable: one callback (%d, fd %d, mask %d)", s.calls, s.fd, s.mask);
        KT_CHECK(took < 1000, "readable: woken at once, %lld ms", (long long)took);
        kt_event_wait(ke, 0);
        KT_CHECK(s.calls == 2, "level-triggered: reported again until read (%d)", s.calls);
        KT_CHECK(read(p[0], &c, 1) == 1, "read");
        kt_event_wait(ke, 0);
        KT_CHECK(s.calls == 2, "read: not reported again (%d)", s.calls);
        /* The write end is writable at once; read interest only on it is not. */
        KT_CHECK(kt_event_fd_set(ke, p[1], KT_EVENT_WRITE, fd_cb, &s) == KT_OK, "register w");
        kt_event_wait(ke, 1000);
        KT_CHECK(s.calls == 3 && s.fd == p[1] && (s.mask & KT_EVENT_WRITE), "writable reported");
        kt_event_fd_del(ke, p[1]);
        KT_CHECK(write(p[1], "x", 1) == 1, "write");
        kt_event_fd_del(ke, p[0]);
        kt_event_fd_del(ke, p[0]); /* twice: a no-op */
        wait_logged(ke, 50, NULL, &took);
        KT_CHECK(s.calls == 3 && took >= 45, "deleted: not reported, slept %lld ms",
                 (long long)took);
        KT_CHECK(kt_event_fd_set(ke, -1, KT_EVENT_READ, fd_cb, &s) == KT_ERR_INVALID, "fd -1");
        close(p[0]);
        close(p[1]);
}

static int order[8], order_cnt;

static void timer_cb(void *opaque) {
        if (order_cnt < 8)
                order[order_cnt++] = (int)(intptr_t)opaque;
}

static kt_event_t *readd_ke;

/** Adds a timer due at once from inside a callback: it runs at the next wait, not in this one. */
static void timer_readd_cb(void *opaque) {
        timer_cb(opaque);
        kt_event_timer_add(readd_ke, kt_now_ms(), timer_cb, (void *)(intptr_t)9);
}

static void test_timer_order(kt_event_t *ke) {
        static const struct {
                int in_ms, tag;
        } timers[] = {{60, 3}, {20, 1}, {40, 2}, {40, 5}, {200, 4}};
        int64_t t0 = kt_now_ms(), took;
        uint64_t del;

        order_cnt = 0;
        for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
                KT_CHECK(kt_event_timer_add(ke, t0 + timers[i].in_ms, timer_cb,
                                            (void *)(intptr_t)timers[i].tag) != 0,
                         "timer_add");
        del = kt_event_timer_add(ke, t0 + 30, timer_cb, (void *)(intptr_t)7);
        kt_event_timer_del(ke, del);
        kt_event_timer_del(ke, del); /* twice: a no-op */
        kt_event_timer_del(ke, 0);
        wait_logged(ke, 5000, NULL, &took);
        KT_CHECK(order_cnt == 1 && order[0] == 1, "the first wait ends at the first timer (%d)",
                 order_cnt);
        KT_CHECK(took >= 15 && took < 1000, "and no later: %lld ms", (long long)took);
        while (order_cnt < 4 && kt_now_ms() - t0 < 5000)
                kt_event_wait(ke, 5000);
        KT_CHECK(order_cnt == 4 && order[1] == 2 && order[2] == 5 && order[3] == 3,
                 "deadline order, ties by creation: %d %d %d (of %d)", order[1], order[2], order[3],
                 order_cnt);
        /* A timer does not hold a wait longer than the caller's timeout. */
        wait_logged(ke, 10, NULL, &took);
        KT_CHECK(order_cnt == 4 && took < 150, "timeout 10 before the 200 ms timer: %lld ms",
                 (long long)took);
        while (order_cnt < 5 && kt_now_ms() - t0 < 5000)
                kt_event_wait(ke, -1);
        KT_CHECK(order_cnt == 5 && order[4] == 4 && kt_now_ms() - t0 >= 195,
                 "the last one, once, on time");
        wait_logged(ke, 30, NULL, &took);
        KT_CHECK(order_cnt == 5 && took >= 25, "each ran once; none left: slept %lld ms",
                 (long long)took);

        readd_ke = ke;
        order_cnt = 0;
        kt_event_timer_add(ke, kt_now_ms(), timer_readd_cb, (void *)(intptr_t)8);
        kt_event_wait(ke, 0);
        KT_CHECK(order_cnt == 1 && order[0] == 8, "added by a callback: not in the same wait");
        kt_event_wait(ke, 1000);
        KT_CHECK(order_cnt == 2 && order[1] == 9, "but in the next one (%d)", order_cnt);
}

static void test_wait_failures(kt_event_t *ke) {
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
        int pipefd[2] = {-1, -1}, other[2] = {-1, -1}, file = -1;
        seen_t s = {0, -1, 0}, so = {0, -1, 0};
        FILE *log = tmpfile();
        int64_t took;
        kt_err_t err;

        KT_CHECK(log != NULL, "tmpfile");
        KT_CHECK(pipe(pipefd) == 0 && pipe(other) == 0, "pipe");
        if (!log || pipefd[0] < 0 || other[0] < 0)
                goto out;
        KT_CHECK(kt_event_fd_set(ke, pipefd[0], KT_EVENT_READ | KT_EVENT_BACKOFF, fd_cb, &s) ==
                     KT_OK,
                 "register");
        /* Readable all along, not KT_EVENT_BACKOFF: must not end a back-off early. */
        KT_CHECK(kt_event_fd_set(ke, other[0], KT_EVENT_READ, fd_cb, &so) == KT_OK, "register");
        KT_CHECK(write(other[1], "x", 1) == 1, "write");

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                if (cases[i].err)
                        kt_event_wait_fail_inject(ke, cases[i].err, 1);
                err = wait_logged(ke, cases[i].timeout_ms, log, &took);
                KT_CHECK(err == cases[i].want, "%s: result %d", cases[i].why, (int)err);
                KT_CHECK(took >= cases[i].min_ms && took <= cases[i].max_ms, "%s: took %lld ms",
                         cases[i].why, (long long)took);
                KT_CHECK(log_lines(log, "epoll_wait") == cases[i].logged, "%s: %d lines logged",
                         cases[i].why, log_lines(log, "epoll_wait"));
        }

        /* The back-off is bounded: many failures in a row sleep at most 1 s each. */
        kt_event_wait_fail_inject(ke, EBADF, 8);
        for (int i = 0; i < 8; i++) {
                wait_logged(ke, 0, log, &took);
                KT_CHECK(took <= 1500, "failure %d in a row slept %lld ms", i + 2, (long long)took);
                if (i == 7)
                        KT_CHECK(took >= 1000, "the 8th in a row sleeps the cap, %lld ms",
                                 (long long)took);
        }

        /* The KT_EVENT_BACKOFF fds still wake a failed wait early (a signal, Kafka). */
        kt_event_wait_fail_inject(ke, EBADF, 1);
        KT_CHECK(write(pipefd[1], "x", 1) == 1, "write");
        s.calls = 0;
        err = wait_logged(ke, 0, log, &took);
        KT_CHECK(err == KT_ERR_SYS, "failed wait with a readable fd: %d", (int)err);
        KT_CHECK(took < 500, "woken by the readable fd, took %lld ms", (long long)took);
        KT_CHECK(s.calls == 1 && s.mask == KT_EVENT_READ, "the readable fd is reported");
        KT_CHECK(log_lines(log, "epoll_wait") == 1, "still one ERROR line in 10 s: %d",
                 log_lines(log, "epoll_wait"));
        {
                char c;
                KT_CHECK(read(pipefd[0], &c, 1) == 1, "read");
        }
        kt_event_wait(ke, 0); /* resets the back-off */

        /* epoll refuses a regular file (EPERM): kept, and every wait backs off until it is
         * deleted; never a spin. */
        file = fileno(log);
        KT_CHECK(kt_event_fd_set(ke, file, KT_EVENT_READ, fd_cb, &so) == KT_ERR_SYS,
                 "a regular file is refused");
        for (int i = 0; i < 3; i++) {
                err = wait_logged(ke, 0, log, &took);
                KT_CHECK(err == KT_ERR_SYS && took >= 10 << i,
                         "refused registration %d: backs off %lld ms", i, (long long)took);
        }
        kt_event_fd_del(ke, file);
        err = wait_logged(ke, 0, log, &took);
        KT_CHECK(err == KT_OK && took < 500, "deleted: waits work again (%d)", (int)err);
        KT_CHECK(log_lines(log, "epoll_ctl") == 0, "one ERROR per 10 s covers epoll_ctl too");
out:
        if (pipefd[0] >= 0) {
                kt_event_fd_del(ke, pipefd[0]);
                close(pipefd[0]);
                close(pipefd[1]);
        }
        if (other[0] >= 0) {
                kt_event_fd_del(ke, other[0]);
                close(other[0]);
                close(other[1]);
        }
        if (log)
                fclose(log);
}

static int stale_timer_ran;

static void stale_timer_cb(void *opaque) {
        (void)opaque;
        stale_timer_ran = 1;
}

/* A registration change epoll refused (MOD failing) leaves the kernel's old registration in
 * place; deleting the fd must still remove it, or that fd, ready and served by nobody, ends
 * every later wait at once (counted in waits: a spin takes hundreds before a 50 ms timer). */
static void test_del_after_failed_mod(kt_event_t *ke) {
        int p[2], waits = 0;
        seen_t s = {0, -1, 0};
        kt_err_t err;

        KT_CHECK(pipe(p) == 0, "pipe");
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "register");
        KT_CHECK(write(p[1], "x", 1) == 1, "write"); /* readable from now on */
        kt_event_ctl_fail_inject(ke, ENOMEM, 1);
        err = kt_event_fd_set(ke, p[0], KT_EVENT_READ | KT_EVENT_BACKOFF, fd_cb, &s);
        KT_CHECK(err == KT_ERR_SYS, "the MOD is refused: %d", (int)err);
        kt_event_fd_del(ke, p[0]);
        stale_timer_ran = 0;
        KT_CHECK(kt_event_timer_add(ke, kt_now_ms() + 50, stale_timer_cb, NULL) != 0, "timer");
        while (!stale_timer_ran && waits < 1000) {
                kt_event_wait(ke, -1);
                waits++;
        }
        KT_CHECK(stale_timer_ran && waits <= 5 && s.calls == 0,
                 "deleted after a failed MOD: gone from epoll too (%d waits, %d callbacks)", waits,
                 s.calls);
        close(p[0]);
        close(p[1]);
}

/* A parked fd (see core_event.c's DESIGN): set again with its mask without an epoll_ctl,
 * still in the set; ready while parked: not reported, taken out of the set (the wait sleeps,
 * no spin), and added again by the next set; with another mask, or deleted: as any fd. */
static void test_park(kt_event_t *ke) {
        int p[2];
        seen_t s = {0, -1, 0};
        int64_t took;
        kt_err_t err;
        char c;

        KT_CHECK(pipe(p) == 0, "pipe");
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "register");
        kt_event_fd_park(ke, p[0]);
        /* Same mask again: no epoll_ctl, so a failure injected for the next one stays unused. */
        kt_event_ctl_fail_inject(ke, EBADF, 1);
        err = kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s);
        kt_event_ctl_fail_inject(ke, 0, 0);
        KT_CHECK(err == KT_OK, "parked, set with its mask: no epoll_ctl (%d)", (int)err);
        KT_CHECK(write(p[1], "x", 1) == 1, "write");
        wait_logged(ke, 5000, NULL, &took);
        KT_CHECK(s.calls == 1 && s.fd == p[0] && took < 1000,
                 "unparked: still in the epoll set, reported (%d calls, %lld ms)", s.calls,
                 (long long)took);

        /* Ready while parked: dropped and taken out; the wait then sleeps its timeout. */
        kt_event_fd_park(ke, p[0]);
        kt_event_wait(ke, 0);
        KT_CHECK(s.calls == 1, "parked and ready: not reported (%d)", s.calls);
        wait_logged(ke, 50, NULL, &took);
        KT_CHECK(s.calls == 1 && took >= 45,
                 "parked and ready: out of the epoll set, no spin (slept %lld ms)",
                 (long long)took);
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "set again");
        wait_logged(ke, 5000, NULL, &took);
        KT_CHECK(s.calls == 2 && took < 1000, "set after being taken out: added, reported (%d)",
                 s.calls);
        KT_CHECK(read(p[0], &c, 1) == 1, "read");

        /* Parked, then set by someone else (another callback) with the same mask: synced. */
        kt_event_fd_park(ke, p[0]);
        kt_event_ctl_fail_inject(ke, EBADF, 1);
        err = kt_event_fd_set(ke, p[0], KT_EVENT_READ, NULL, NULL);
        kt_event_ctl_fail_inject(ke, 0, 0);
        KT_CHECK(err == KT_ERR_SYS, "parked, set with another callback: an epoll_ctl (%d)",
                 (int)err);
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "set back");

        /* Parked, then another mask: a real change. */
        kt_event_fd_park(ke, p[0]);
        KT_CHECK(kt_event_fd_set(ke, p[1], KT_EVENT_WRITE, fd_cb, &s) == KT_OK, "register w");
        kt_event_fd_park(ke, p[1]);
        kt_event_ctl_fail_inject(ke, EBADF, 1);
        err = kt_event_fd_set(ke, p[1], KT_EVENT_READ | KT_EVENT_WRITE, fd_cb, &s);
        kt_event_ctl_fail_inject(ke, 0, 0);
        KT_CHECK(err == KT_ERR_SYS, "parked, set with another mask: an epoll_ctl (%d)", (int)err);
        kt_event_fd_del(ke, p[1]);

        /* Parked, deleted, closed; a new fd with the same number is added, not taken for it. */
        kt_event_fd_del(ke, p[0]);
        close(p[0]);
        close(p[1]);
        KT_CHECK(pipe(p) == 0, "pipe 2");
        KT_CHECK(kt_event_fd_set(ke, p[0], KT_EVENT_READ, fd_cb, &s) == KT_OK, "register 2");
        KT_CHECK(write(p[1], "x", 1) == 1, "write 2");
        wait_logged(ke, 5000, NULL, &took);
        KT_CHECK(s.calls == 3 && s.fd == p[0], "the new fd is watched (%d)", s.calls);
        kt_event_fd_park(ke, -1); /* no-ops */
        kt_event_fd_park(ke, 1 << 20);
        kt_event_fd_del(ke, p[0]);
        close(p[0]);
        close(p[1]);
}

int main(void) {
        char errstr[256];
        kt_event_t *ke = kt_event_new(errstr, sizeof(errstr));

        KT_CHECK(ke != NULL, "kt_event_new: %s", errstr);
        if (ke) {
                test_fd_ready(ke);
                test_timer_order(ke);
                test_wait_failures(ke);
                test_del_after_failed_mod(ke);
                test_park(ke);
        }
        kt_event_destroy(ke);
        kt_event_destroy(NULL);
        return kt_test_done("test_event");
}
