/*
 * DESIGN: the close watchdog (see core.h). One thread per armed watchdog waits on a condition
 * variable (CLOCK_MONOTONIC) until the owner disarms it or the bound passes. It shares only
 * atomics (stage, status) and the mutex-guarded disarmed flag with its owner. When it fires it
 * logs one ERROR line (kt_log is one write(2)) and calls _exit(): no atexit handler, no
 * destructor, no flush of anything that might itself be what hangs.
 */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAC "WATCHDOG"

struct kt_watchdog {
        pthread_t thr;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int disarmed;            /**< under lock */
        struct timespec expires; /**< CLOCK_MONOTONIC */
        int64_t bound_ms;
        const char *what;
        _Atomic(const char *) stage;
        _Atomic int status;
        kt_watchdog_detail_fn *detail;
};

static void *watch(void *arg) {
        kt_watchdog_t *kw = arg;
        const char *stage, *detail;
        int rc = 0;

        pthread_mutex_lock(&kw->lock);
        while (!kw->disarmed && rc != ETIMEDOUT)
                rc = pthread_cond_timedwait(&kw->cond, &kw->lock, &kw->expires);
        if (kw->disarmed) {
                pthread_mutex_unlock(&kw->lock);
                return NULL;
        }
        pthread_mutex_unlock(&kw->lock);
        stage = atomic_load(&kw->stage);
        detail = kw->detail ? kw->detail() : NULL;
        KT_ERR(FAC, "%s: %s not finished after %lld ms%s%s%s: exiting with status %d", kw->what,
               stage ? stage : "(no stage)", (long long)kw->bound_ms, detail ? " (" : "",
               detail ? detail : "", detail ? ")" : "", atomic_load(&kw->status));
        _exit(atomic_load(&kw->status));
}

kt_watchdog_t *kt_watchdog_arm(const char *what, int64_t bound_ms, int status,
                               kt_watchdog_detail_fn *detail) {
        kt_watchdog_t *kw = calloc(1, sizeof(*kw));
        pthread_condattr_t ca;
        int err;

        if (!kw) {
                KT_ERR(FAC, "%s: out of memory: closing unguarded", what);
                return NULL;
        }
        kw->what = what;
        kw->bound_ms = bound_ms;
        kw->detail = detail;
        atomic_init(&kw->stage, NULL);
        atomic_init(&kw->status, status);
        clock_gettime(CLOCK_MONOTONIC, &kw->expires);
        kw->expires.tv_sec += (time_t)(bound_ms / 1000);
        kw->expires.tv_nsec += (long)(bound_ms % 1000) * 1000000L;
        if (kw->expires.tv_nsec >= 1000000000L) {
                kw->expires.tv_sec++;
                kw->expires.tv_nsec -= 1000000000L;
        }
        pthread_mutex_init(&kw->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&kw->cond, &ca);
        pthread_condattr_destroy(&ca);
        if ((err = pthread_create(&kw->thr, NULL, watch, kw))) {
                KT_ERR(FAC, "%s: cannot start the watchdog thread (%s): closing unguarded", what,
                       strerror(err));
                pthread_cond_destroy(&kw->cond);
                pthread_mutex_destroy(&kw->lock);
                free(kw);
                return NULL;
        }
        return kw;
}

void kt_watchdog_stage_set(kt_watchdog_t *kw, const char *stage) {
        if (kw)
                atomic_store(&kw->stage, stage);
}

void kt_watchdog_status_set(kt_watchdog_t *kw, int status) {
        if (kw)
                atomic_store(&kw->status, status);
}

void kt_watchdog_disarm(kt_watchdog_t *kw) {
        if (!kw)
                return;
        pthread_mutex_lock(&kw->lock);
        kw->disarmed = 1;
        pthread_cond_signal(&kw->cond);
        pthread_mutex_unlock(&kw->lock);
        pthread_join(kw->thr, NULL);
        pthread_cond_destroy(&kw->cond);
        pthread_mutex_destroy(&kw->lock);
        free(kw);
}
