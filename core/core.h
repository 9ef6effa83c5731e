/**
 * @file core.h
 * @brief ktrigger core: error codes, logging, clock, the event core, the event loop and the
 *        daemon's entry.
 *
 * Everything here is used by every other module; nothing here depends on another module
 * except the loop (kt_loop_run), which ties consumer/, dispatch/ and metrics/ together.
 */
#ifndef KT_CORE_H
#define KT_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define KT_VERSION "0.1.0"

/** Exit status for configuration errors (sysexits.h EX_CONFIG). */
#define KT_EXIT_CONFIG 78

typedef enum kt_err {
        KT_OK = 0,
        KT_ERR_NOMEM,    /**< allocation failed */
        KT_ERR_CONFIG,   /**< invalid setting */
        KT_ERR_KAFKA,    /**< librdkafka reported an error */
        KT_ERR_HTTP,     /**< libcurl reported an error */
        KT_ERR_SYS,      /**< a system call failed (see errno in the log) */
        KT_ERR_FULL,     /**< no free slot / buffer full: try again later */
        KT_ERR_TIMEDOUT, /**< a bounded wait ran out */
        KT_ERR_INVALID   /**< malformed input from outside (e.g. a broker registration) */
} kt_err_t;

/** @returns a static human-readable text for \p err. */
const char *kt_err2str(kt_err_t err);

/** Syslog levels. */
enum {
        KT_LOG_EMERG = 0,
        KT_LOG_ALERT,
        KT_LOG_CRIT,
        KT_LOG_ERR,
        KT_LOG_WARNING,
        KT_LOG_NOTICE,
        KT_LOG_INFO,
        KT_LOG_DEBUG
};

/**
 * @brief Log one line `time level FACILITY: message` to stderr if \p level is enabled.
 * @remark Thread-safe (one write(2) per line).
 */
void kt_log(int level, const char *fac, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** @brief Set the most verbose level that is printed (default KT_LOG_INFO). */
void kt_log_level_set(int level);

/** @brief Log one JSON object per line ({"time","level","facility","message"}) if \p json. */
void kt_log_json_set(int json);

/** @returns non-zero if \p level would be printed. */
int kt_log_enabled(int level);

/**
 * @brief Parse a level name (emerg..debug, also "warn", "error").
 * @returns the level, or -1 if \p name is not a level.
 */
int kt_log_level_parse(const char *name);

/** @returns the monotonic clock in milliseconds. */
int64_t kt_now_ms(void);

/** The period of the Kafka clients' error lines (kt_log_limits_t): one per code per 10 s. */
#define KT_LOG_REPEAT_MS 10000

/**
 * @brief A rate limit on one kind of log line: the first passes at once, the next ones within
 *        \p every_ms of the last that passed are counted and not logged, and the first one
 *        after that passes with the count. Zero-initialised; one owner thread.
 */
typedef struct kt_log_limit {
        int64_t next_ms;    /**< a line may pass from then on; 0: none has passed yet */
        unsigned long held; /**< lines left out since the last one that passed */
} kt_log_limit_t;

/**
 * @brief Whether a line may be logged at \p now_ms.
 * @param held set to how many lines were left out before this one (when 1).
 * @returns 1: log it now; 0: left out (counted).
 */
int kt_log_limit_pass(kt_log_limit_t *l, int64_t now_ms, int64_t every_ms, unsigned long *held);

/** How many error codes a kt_log_limits_t tells apart; the others share one more slot. */
#define KT_LOG_LIMIT_CODES 16

/** A kt_log_limit_t per error code. Zero-initialised; one owner thread. */
typedef struct kt_log_limits {
        struct {
                int code;
                kt_log_limit_t limit;
        } slot[KT_LOG_LIMIT_CODES + 1]; /**< the last: every code beyond the first 16 */
        int used;
} kt_log_limits_t;

/** @brief kt_log_limit_pass() on \p code's own limit. */
int kt_log_limits_pass(kt_log_limits_t *t, int code, int64_t now_ms, int64_t every_ms,
                       unsigned long *held);

/**
 * @brief Log `NAME: TEXT` at \p level unless a line about \p code was logged less than
 *        KT_LOG_REPEAT_MS ago (then only counted); a line after some were left out ends with
 *        `(+N like it since the last line, ...)`.
 */
void kt_log_repeated(kt_log_limits_t *t, int level, const char *fac, int code, const char *name,
                     const char *text);

/** @returns the wall clock in milliseconds since the epoch. */
int64_t kt_wallclock_ms(void);

struct kt_config;
struct kt_metrics;

/**
 * @brief Run the daemon until SIGTERM/SIGINT or a fatal error: consume, dispatch, commit.
 *
 * SIGTERM, SIGINT and SIGHUP must already be blocked in every thread (main does it before any
 * thread starts); the loop takes them through a signalfd.
 * @returns the process exit status: 0 after a clean shutdown, 1 after a fatal error.
 * @locality the calling thread becomes the loop thread.
 */
int kt_loop_run(struct kt_config **confp, struct kt_metrics *km);

/**
 * The close watchdog: the last line of defence against a shutdown that hangs for ever.
 *
 * Closing (leaving the group, destroying the Kafka handles) runs code of librdkafka's that
 * can wait for ever on a reply that never comes (seen: rd_kafka_incremental_unassign() inside
 * the final revoke). A watchdog is armed when the loop starts closing; if it is not disarmed
 * within its bound, a thread of its own logs an ERROR naming the stage that is stuck and ends
 * the process with _exit(status): nothing else is run, nothing waits.
 */
typedef struct kt_watchdog kt_watchdog_t;

/** @returns a text saying what is running now (static storage), or NULL. @locality any thread */
typedef const char *(kt_watchdog_detail_fn)(void);

/**
 * @brief Arm a watchdog: unless kt_watchdog_disarm() comes within \p bound_ms, log an ERROR
 *        naming the current stage (and \p detail's text, if any) and _exit(\p status).
 * @returns the watchdog, or NULL (logged) if its thread could not start: then nothing guards.
 * @remark \p what, every stage and every detail text must have static storage.
 */
kt_watchdog_t *kt_watchdog_arm(const char *what, int64_t bound_ms, int status,
                               kt_watchdog_detail_fn *detail);

/** @brief Name the stage running now (static storage) for the watchdog's ERROR. NULL: no-op. */
void kt_watchdog_stage_set(kt_watchdog_t *kw, const char *stage);

/** @brief Change the exit status a firing watchdog uses. NULL: no-op. */
void kt_watchdog_status_set(kt_watchdog_t *kw, int status);

/** @brief Disarm (the stages finished in time), stop the thread and free. NULL: no-op. */
void kt_watchdog_disarm(kt_watchdog_t *kw);

/* ---------------------------------------------------------------- the event core (core_event.c) */

/**
 * One epoll set, the fds registered in it and one-shot timers, and the wait on them (see the
 * DESIGN block of core_event.c). It knows nothing of what it wakes: the dispatcher registers
 * curl's sockets and curl's timer, the loop its own wake-up fds.
 *
 * @locality every function here runs on the thread that made it (the loop thread).
 */
typedef struct kt_event kt_event_t;

/** Interest and readiness bits (kt_event_fd_set, kt_event_fd_cb). */
#define KT_EVENT_READ  0x1 /**< readable (EPOLLIN) */
#define KT_EVENT_WRITE 0x2 /**< writable (EPOLLOUT) */
#define KT_EVENT_ERROR 0x4 /**< readiness only: an error or hang-up (EPOLLERR, EPOLLHUP) */
/** Registration only: while failed waits back off (see kt_event_wait) the fd is still watched
 *  for reading, so it wakes the sleep early. For fds a caller looks at after every wait (a
 *  signalfd, a wake-up pipe); not for sockets whose readiness nothing serves meanwhile. */
#define KT_EVENT_BACKOFF 0x8

/** Called from kt_event_wait() for a registered fd that is ready: \p mask is what it is
 *  (KT_EVENT_READ, _WRITE, _ERROR). */
typedef void(kt_event_fd_cb)(void *opaque, int fd, int mask);

/** Called from kt_event_wait() once a timer is due; the timer is gone by then. */
typedef void(kt_event_timer_cb)(void *opaque);

/** @returns a new event core, or NULL with the reason in \p errstr. */
kt_event_t *kt_event_new(char *errstr, size_t errstr_size);

/** @brief Free. Registered fds are not closed (their owners close them). NULL is a no-op. */
void kt_event_destroy(kt_event_t *ke);

/**
 * @brief Watch \p fd for \p mask (KT_EVENT_READ, _WRITE, _BACKOFF), replacing what it was
 *        registered with, if anything; \p cb (NULL: none, the fd only wakes the wait) is called
 *        with \p opaque when it is ready.
 * @returns KT_OK; KT_ERR_NOMEM (not registered); KT_ERR_SYS: epoll refused it (logged, rate
 *          limited): it stays registered and is tried again at each wait, which backs off while
 *          it fails (kt_event_fd_del() it if that is not wanted).
 * @remark Delete an fd before closing it: a new fd may get the same number.
 */
kt_err_t kt_event_fd_set(kt_event_t *ke, int fd, int mask, kt_event_fd_cb *cb, void *opaque);

/** @brief Stop watching \p fd (already closed: fine). Not registered: a no-op. */
void kt_event_fd_del(kt_event_t *ke, int fd);

/**
 * @brief Stop waiting on \p fd, which stays open, but keep it in the epoll set: a later
 *        kt_event_fd_set() with the same mask then costs no epoll_ctl. If it becomes ready
 *        meanwhile it is taken out (its event is not reported). Not registered: a no-op.
 * @remark Only for an fd whose owner sees every close of it: it must still be
 *         kt_event_fd_del()eted before it is closed (see the DESIGN block of core_event.c).
 */
void kt_event_fd_park(kt_event_t *ke, int fd);

/**
 * @brief Call \p cb with \p opaque once kt_now_ms() reaches \p at_ms (a wait no longer than
 *        that), once. Timers due together run in the order of \p at_ms, then of creation.
 * @returns the timer's id (never 0), or 0 out of memory.
 */
uint64_t kt_event_timer_add(kt_event_t *ke, int64_t at_ms, kt_event_timer_cb *cb, void *opaque);

/** @brief Forget timer \p id before it runs. 0, or one that ran already: a no-op. */
void kt_event_timer_del(kt_event_t *ke, uint64_t id);

/**
 * @brief Sleep until a registered fd is ready, the earliest timer is due, or \p timeout_ms
 *        (-1: no limit but the timers) passed; then call the callbacks of the ready fds and of
 *        the due timers.
 * @returns KT_OK (also when a signal cut the wait short), or KT_ERR_SYS when epoll failed
 *          (epoll_wait, or the registration of an fd): then it has slept a back-off (10 ms
 *          doubling to 1 s while it keeps failing, woken early only by KT_EVENT_BACKOFF fds)
 *          and logged it, at most once per 10 s, so a caller that just waits again never spins.
 */
kt_err_t kt_event_wait(kt_event_t *ke, int timeout_ms);

/**
 * @brief Test hook: the next \p cnt waits fail as if epoll_wait() failed with \p err.
 * @remark Unit tests only.
 */
void kt_event_wait_fail_inject(kt_event_t *ke, int err, int cnt);

/**
 * @brief Test hook: the next \p cnt epoll_ctl() calls of registrations (kt_event_fd_set(), the
 *        retries at each wait; not kt_event_fd_del()) fail with \p err, without being made.
 * @remark Unit tests only.
 */
void kt_event_ctl_fail_inject(kt_event_t *ke, int err, int cnt);

/**
 * @brief Test hook: the epoll_ctl() calls made so far (registrations, changes, deletions).
 * @remark Unit tests only.
 */
uint64_t kt_event_ctl_calls(const kt_event_t *ke);

#define KT_ERR(fac, ...)  kt_log(KT_LOG_ERR, fac, __VA_ARGS__)
#define KT_WARN(fac, ...) kt_log(KT_LOG_WARNING, fac, __VA_ARGS__)
#define KT_INFO(fac, ...) kt_log(KT_LOG_INFO, fac, __VA_ARGS__)
#define KT_DBG(fac, ...)                                                                           \
        do {                                                                                       \
                if (kt_log_enabled(KT_LOG_DEBUG))                                                  \
                        kt_log(KT_LOG_DEBUG, fac, __VA_ARGS__);                                    \
        } while (0)

#endif /* KT_CORE_H */
