/*
 * DESIGN: C11 threads on pthreads, for ThreadSanitizer builds only (make SANITIZE=thread).
 *
 * Debian 12's librdkafka 2.0.2 starts its threads with C11 thrd_create() and locks with
 * mtx_*() / cnd_*(). glibc implements those on its internal pthread functions, which GCC 12's
 * libtsan does not intercept: a thread librdkafka starts has no TSan thread state, and TSan
 * crashes (SIGSEGV in its allocator) on that thread's first malloc; its locks would be
 * invisible too. Defining the C11 functions here, in terms of pthread_*(), routes every call
 * through TSan's pthread interceptors.
 *
 * Linked into the TSan binaries (ktrigger-tsan and the unit tests built with SANITIZE=thread),
 * never into the release or ASan builds. The executable defines the symbols librdkafka.so
 * references, so the linker exports them and the dynamic linker binds librdkafka to them
 * before glibc's: no LD_PRELOAD needed. Built as a shared object the same file also works as
 * an LD_PRELOAD shim for a TSan binary built without it.
 *
 * glibc (>= 2.28) defines thrd_t as pthread_t, and mtx_t, cnd_t and once_flag with the size
 * and layout of pthread_mutex_t, pthread_cond_t and pthread_once_t (glibc's own C11 functions
 * cast them the same way); the _Static_asserts hold us to that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>
#include <time.h>

_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is pthread_t");
_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

/* The C11 start function returns int, pthread's returns void *. */
struct start {
        thrd_start_t func;
        void *arg;
};

static void *trampoline(void *p) {
        struct start st = *(struct start *)p;
        free(p);
        return (void *)(intptr_t)st.func(st.arg);
}

static int result(int err) {
        switch (err) {
        case 0:
                return thrd_success;
        case EBUSY:
                return thrd_busy;
        case ETIMEDOUT:
                return thrd_timedout;
        case ENOMEM:
                return thrd_nomem;
        default:
                return thrd_error;
        }
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
        struct start *st = malloc(sizeof(*st));
        pthread_t pt;
        int err;

        if (!st)
                return thrd_nomem;
        st->func = func;
        st->arg = arg;
        err = pthread_create(&pt, NULL, trampoline, st);
        if (err) {
                free(st);
                return result(err);
        }
        *thr = (thrd_t)pt;
        return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
        void *ret = NULL;
        int err = pthread_join((pthread_t)thr, &ret);

        if (err)
                return result(err);
        if (res)
                *res = (int)(intptr_t)ret;
        return thrd_success;
}

int thrd_detach(thrd_t thr) {
        return result(pthread_detach((pthread_t)thr));
}

thrd_t thrd_current(void) {
        return (thrd_t)pthread_self();
}

int thrd_equal(thrd_t a, thrd_t b) {
        return pthread_equal((pthread_t)a, (pthread_t)b);
}

_Noreturn void thrd_exit(int res) {
        pthread_exit((void *)(intptr_t)res);
}

int mtx_init(mtx_t *mtx, int type) {
        pthread_mutexattr_t attr;
        int err = pthread_mutexattr_init(&attr);

        if (err)
                return result(err);
        if (type & mtx_recursive)
                err = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
        if (!err)
                err = pthread_mutex_init((pthread_mutex_t *)(void *)mtx, &attr);
        pthread_mutexattr_destroy(&attr);
        return result(err);
}

int mtx_lock(mtx_t *mtx) {
        return result(pthread_mutex_lock((pthread_mutex_t *)(void *)mtx));
}

int mtx_trylock(mtx_t *mtx) {
        return result(pthread_mutex_trylock((pthread_mutex_t *)(void *)mtx));
}

int mtx_timedlock(mtx_t *restrict mtx, const struct timespec *restrict ts) {
        return result(pthread_mutex_timedlock((pthread_mutex_t *)(void *)mtx, ts));
}

int mtx_unlock(mtx_t *mtx) {
        return result(pthread_mutex_unlock((pthread_mutex_t *)(void *)mtx));
}

void mtx_destroy(mtx_t *mtx) {
        pthread_mutex_destroy((pthread_mutex_t *)(void *)mtx);
}

int cnd_init(cnd_t *cnd) {
        return result(pthread_cond_init((pthread_cond_t *)(void *)cnd, NULL));
}

int cnd_signal(cnd_t *cnd) {
        return result(pthread_cond_signal((pthread_cond_t *)(void *)cnd));
}

int cnd_broadcast(cnd_t *cnd) {
        return result(pthread_cond_broadcast((pthread_cond_t *)(void *)cnd));
}

int cnd_wait(cnd_t *cnd, mtx_t *mtx) {
        return result(
            pthread_cond_wait((pthread_cond_t *)(void *)cnd, (pthread_mutex_t *)(void *)mtx));
}

/* C11 and pthread's default condition clock are both CLOCK_REALTIME (TIME_UTC). */
int cnd_timedwait(cnd_t *restrict cnd, mtx_t *restrict mtx, const struct timespec *restrict ts) {
        return result(pthread_cond_timedwait((pthread_cond_t *)(void *)cnd,
                                             (pthread_mutex_t *)(void *)mtx, ts));
}

void cnd_destroy(cnd_t *cnd) {
        pthread_cond_destroy((pthread_cond_t *)(void *)cnd);
}

void call_once(once_flag *flag, void (*func)(void)) {
        pthread_once((pthread_once_t *)(void *)flag, func);
}
