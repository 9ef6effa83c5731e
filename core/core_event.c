/*
 * DESIGN: the event core, as redis' ae.c: one epoll set, the fds registered in it, one-shot
 * timers, and the wait on them. It knows nothing of what it wakes.
 *
 * - Who owns what: the event core owns the epoll fd, its table of registrations (indexed by
 *   fd, like ae's events[]) and its timers; never the fds themselves. Whoever registers an fd
 *   owns it, deletes it here before closing it (a new fd may get the number) and closes it.
 *   The dispatcher registers curl's sockets (CURLMOPT_SOCKETFUNCTION) and curl's timer
 *   (CURLMOPT_TIMERFUNCTION); the loop its own wake-up fds (Kafka, the producer, ZooKeeper,
 *   the signalfd, a reload's child). The event core must outlive them all.
 * - Which thread: the loop thread, and only it, makes, changes, waits on and destroys it.
 *   Callbacks run inside kt_event_wait() on that thread. Nothing here is shared with another
 *   thread, which is why nothing here is locked: other threads (librdkafka's, ZooKeeper's,
 *   libmicrohttpd's) reach the loop only by making one of its fds readable.
 * - Level-triggered: a ready fd whose callback did not consume what is there is reported
 *   again by the next wait; a callback may just note the fd and let its owner serve it after
 *   the wait (the dispatcher does: curl is driven by kt_dispatch_perform()). A callback may
 *   register, change or delete fds and timers; an event of an fd deleted meanwhile is dropped.
 * - Parked fds: an owner that stops waiting on an fd it keeps open, and may soon wait on again
 *   for the same events (curl's keep-alive connections between two calls: about one
 *   EPOLL_CTL_DEL and one EPOLL_CTL_ADD a call otherwise), parks it instead of deleting it.
 *   A parked fd stays in the epoll set, its callback not called: its owner setting it again
 *   with the same mask (and callback) costs no epoll_ctl; one that becomes ready meanwhile
 *   (the peer closed an idle connection) is taken out of the set then (one EPOLL_CTL_DEL, its
 *   event dropped, so level-triggered readiness nobody serves cannot make the loop spin), and
 *   a later set adds it again. The owner still deletes it before closing it: only an fd whose
 *   close the owner always sees (curl's CURLOPT_CLOSESOCKETFUNCTION) may be parked, else a
 *   new fd with the same number would be taken for the parked one and never added.
 * - Timers are one-shot: a due timer is removed before its callback runs, so no stale
 *   deadline in the past can make every later wait return at once (a loop that spins). A
 *   timer added by a callback runs at the next wait at the earliest. There are a handful
 *   (curl's one), so they are a small array scanned in full.
 * - A wait that fails (epoll_wait, or epoll_ctl of a registered fd; EINTR is a normal
 *   wake-up) would make the loop spin: the loop asks to sleep, comes straight back, asks again.
 *   So a failed wait sleeps instead, in poll(2) on the KT_EVENT_BACKOFF fds (signals, Kafka,
 *   the producer still wake it), for a back-off that doubles from KT_EVENT_BACKOFF_MIN_MS to
 *   KT_EVENT_BACKOFF_MAX_MS and is reset by the next wait that works; other fds (curl's
 *   sockets) are then served only by their owners' timers. A registration epoll refused is
 *   kept and tried again at each wait. One ERROR per KT_EVENT_LOG_MS says so, with the count
 *   of the failures not logged.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/** Ready events taken from epoll per wait (more stay pending: epoll is level-triggered). */
#define KT_EVENT_MAX_EVENTS 128
/** The most KT_EVENT_BACKOFF fds a failed wait's poll(2) watches. */
#define KT_EVENT_MAX_BACKOFF_FDS 8
/** A failed wait sleeps this long, doubled at each failure in a row up to the max. */
#define KT_EVENT_BACKOFF_MIN_MS 10
#define KT_EVENT_BACKOFF_MAX_MS 1000
/** At most one ERROR about failing waits (or registrations) this often. */
#define KT_EVENT_LOG_MS 10000

/* The facility these lines had when the wait lived in the dispatcher: log readers keep it. */
#define FAC "DISPATCH"

typedef struct file_ev {
        int mask; /**< KT_EVENT_READ|_WRITE|_BACKOFF; 0: not registered */
        int in_epoll;
        int parked; /**< in the epoll set with mask, nobody waiting (see DESIGN); in_epoll 1 */
        kt_event_fd_cb *cb;
        void *opaque;
} file_ev_t;

typedef struct time_ev {
        uint64_t id;
        int64_t at_ms;
        kt_event_timer_cb *cb;
        void *opaque;
} time_ev_t;

struct kt_event {
        int epfd;
        file_ev_t *fds; /**< indexed by fd; grows to the largest fd registered (the process's
                            fd limit bounds it) */
        int fd_cap;
        int pending; /**< registered fds not in the epoll set (epoll_ctl failed) */
        time_ev_t *timers;
        size_t timer_cnt, timer_cap;
        uint64_t timer_last_id;
        int backoff_ms;         /**< the last failed wait's sleep; 0 after one that worked */
        kt_log_limit_t err_log; /**< its ERROR lines: one per KT_EVENT_LOG_MS, with a count */
        int inject_errno;       /**< test hook: the next inject_cnt waits fail with it */
        int inject_cnt;
        int inject_ctl_errno; /**< test hook: the next inject_ctl_cnt registrations fail */
        int inject_ctl_cnt;
        uint64_t ctl_calls; /**< epoll_ctl() calls made (kt_event_ctl_calls(), for tests) */
};

/** Log a failed epoll call, at most once per KT_EVENT_LOG_MS (see DESIGN). */
static void err_log(kt_event_t *ke, const char *what, int fd, int err) {
        unsigned long held;

        if (!kt_log_limit_pass(&ke->err_log, kt_now_ms(), KT_EVENT_LOG_MS, &held))
                return;
        KT_ERR(FAC,
               "%s(%d): %s: waiting with a back-off of up to %d ms (%lu more failures since "
               "the last such message)",
               what, fd, strerror(err), KT_EVENT_BACKOFF_MAX_MS, held);
}

kt_event_t *kt_event_new(char *errstr, size_t errstr_size) {
        kt_event_t *ke = calloc(1, sizeof(*ke));

        if (!ke) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        if ((ke->epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
                snprintf(errstr, errstr_size, "epoll_create1: %s", strerror(errno));
                free(ke);
                return NULL;
        }
        return ke;
}

void kt_event_destroy(kt_event_t *ke) {
        if (!ke)
                return;
        close(ke->epfd);
        free(ke->fds);
        free(ke->timers);
        free(ke);
}

/** epoll_ctl(), or the failure kt_event_ctl_fail_inject() asked for (nothing done). */
static int ctl(kt_event_t *ke, int op, int fd, struct epoll_event *ev) {
        if (ke->inject_ctl_cnt > 0) {
                ke->inject_ctl_cnt--;
                errno = ke->inject_ctl_errno;
                return -1;
        }
        ke->ctl_calls++;
        return epoll_ctl(ke->epfd, op, fd, ev);
}

/** Make the epoll set say what ke->fds[fd] says. @returns 0, -1 (logged). */
static int fd_sync(kt_event_t *ke, int fd) {
        file_ev_t *f = &ke->fds[fd];
        struct epoll_event ev = {0};
        int op = f->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

        ev.events =
            (f->mask & KT_EVENT_READ ? EPOLLIN : 0U) | (f->mask & KT_EVENT_WRITE ? EPOLLOUT : 0U);
        ev.data.fd = fd;
        /* Gone from the set (closed and reopened under us), or still in it after a failure. */
        if (ctl(ke, op, fd, &ev) == -1 &&
            !(op == EPOLL_CTL_MOD && errno == ENOENT && ctl(ke, EPOLL_CTL_ADD, fd, &ev) == 0) &&
            !(op == EPOLL_CTL_ADD && errno == EEXIST && ctl(ke, EPOLL_CTL_MOD, fd, &ev) == 0)) {
                err_log(ke, "epoll_ctl", fd, errno);
                /* A failed MOD may leave the kernel's registration as it was: in_epoll 0 only
                 * means "not known to match"; kt_event_fd_del() removes it regardless. */
                if (f->in_epoll) {
                        f->in_epoll = 0;
                        ke->pending++;
                }
                return -1;
        }
        if (!f->in_epoll) {
                f->in_epoll = 1;
                ke->pending--;
        }
        return 0;
}

kt_err_t kt_event_fd_set(kt_event_t *ke, int fd, int mask, kt_event_fd_cb *cb, void *opaque) {
        file_ev_t *f;

        if (fd < 0 || !(mask & (KT_EVENT_READ | KT_EVENT_WRITE)))
                return KT_ERR_INVALID;
        if (fd >= ke->fd_cap) {
                int cap = ke->fd_cap ? ke->fd_cap : 64;
                file_ev_t *fds;
                while (cap <= fd)
                        cap *= 2;
                if (!(fds = realloc(ke->fds, (size_t)cap * sizeof(*fds))))
                        return KT_ERR_NOMEM;
                memset(fds + ke->fd_cap, 0, (size_t)(cap - ke->fd_cap) * sizeof(*fds));
                ke->fds = fds;
                ke->fd_cap = cap;
        }
        f = &ke->fds[fd];
        if (!f->mask)
                ke->pending++; /* until it is in the epoll set */
        if (f->parked) {
                /* Its owner back for the same events: still in the set (see DESIGN). Anyone
                 * else (an fd closed behind the owner's back, its number taken): synced. */
                int same = f->mask == mask && f->cb == cb && f->opaque == opaque;
                f->parked = 0;
                if (same)
                        return KT_OK;
        }
        f->mask = mask;
        f->cb = cb;
        f->opaque = opaque;
        return fd_sync(ke, fd) ? KT_ERR_SYS : KT_OK;
}

void kt_event_fd_park(kt_event_t *ke, int fd) {
        file_ev_t *f;

        if (fd < 0 || fd >= ke->fd_cap || !(f = &ke->fds[fd])->mask)
                return;
        if (!f->in_epoll) {
                kt_event_fd_del(ke, fd); /* not known to be in the set: nothing to keep */
                return;
        }
        f->parked = 1; /* cb and opaque kept: they say whose it is (kt_event_fd_set) */
}

void kt_event_fd_del(kt_event_t *ke, int fd) {
        file_ev_t *f;

        if (fd < 0 || fd >= ke->fd_cap || !(f = &ke->fds[fd])->mask)
                return;
        /* Always, also when not known to be in the set (a failed MOD may have left the old
         * registration there, which would wake every wait for an fd nobody serves). Not in it
         * (ENOENT) or closed already (EBADF): fine. */
        ke->ctl_calls++;
        epoll_ctl(ke->epfd, EPOLL_CTL_DEL, fd, NULL);
        if (!f->in_epoll)
                ke->pending--;
        memset(f, 0, sizeof(*f));
}

uint64_t kt_event_timer_add(kt_event_t *ke, int64_t at_ms, kt_event_timer_cb *cb, void *opaque) {
        if (ke->timer_cnt == ke->timer_cap) {
                size_t cap = ke->timer_cap ? ke->timer_cap * 2 : 4;
                time_ev_t *t = realloc(ke->timers, cap * sizeof(*t));
                if (!t)
                        return 0;
                ke->timers = t;
                ke->timer_cap = cap;
        }
        ke->timers[ke->timer_cnt++] = (time_ev_t){++ke->timer_last_id, at_ms, cb, opaque};
        return ke->timer_last_id;
}

void kt_event_timer_del(kt_event_t *ke, uint64_t id) {
        for (size_t i = 0; id && i < ke->timer_cnt; i++)
                if (ke->timers[i].id == id) {
                        ke->timers[i] = ke->timers[--ke->timer_cnt];
                        return;
                }
}

/** @returns the index of the earliest timer (ties: the oldest) with an id up to \p max_id,
 *           or -1 if none. */
static ssize_t timer_first(const kt_event_t *ke, uint64_t max_id) {
        ssize_t first = -1;

        for (size_t i = 0; i < ke->timer_cnt; i++) {
                const time_ev_t *t = &ke->timers[i];
                if (t->id > max_id)
                        continue;
                if (first < 0 || t->at_ms < ke->timers[first].at_ms ||
                    (t->at_ms == ke->timers[first].at_ms && t->id < ke->timers[first].id))
                        first = (ssize_t)i;
        }
        return first;
}

/** Run the timers due now, in order; not those their callbacks add (see DESIGN). */
static void timers_run(kt_event_t *ke) {
        uint64_t max_id = ke->timer_last_id;
        int64_t now = kt_now_ms();
        ssize_t i;

        while ((i = timer_first(ke, max_id)) >= 0 && ke->timers[i].at_ms <= now) {
                time_ev_t t = ke->timers[i];
                ke->timers[i] = ke->timers[--ke->timer_cnt];
                t.cb(t.opaque);
        }
}

/** Retry the registrations epoll refused. @returns 0 once none is left, -1. */
static int pending_sync(kt_event_t *ke) {
        for (int fd = 0; ke->pending && fd < ke->fd_cap; fd++)
                if (ke->fds[fd].mask && !ke->fds[fd].in_epoll && fd_sync(ke, fd))
                        return -1;
        return 0;
}

/** A wait failed: sleep the back-off in poll(2) on the KT_EVENT_BACKOFF fds, never less (see
 *  DESIGN). @returns KT_ERR_SYS. */
static kt_err_t wait_backoff(kt_event_t *ke) {
        struct pollfd pfd[KT_EVENT_MAX_BACKOFF_FDS];
        nfds_t n = 0;

        ke->backoff_ms = ke->backoff_ms ? ke->backoff_ms * 2 : KT_EVENT_BACKOFF_MIN_MS;
        if (ke->backoff_ms > KT_EVENT_BACKOFF_MAX_MS)
                ke->backoff_ms = KT_EVENT_BACKOFF_MAX_MS;
        for (int fd = 0; fd < ke->fd_cap && n < KT_EVENT_MAX_BACKOFF_FDS; fd++)
                if (ke->fds[fd].mask & KT_EVENT_BACKOFF)
                        pfd[n++] = (struct pollfd){fd, POLLIN, 0};
        if (poll(pfd, n, ke->backoff_ms) > 0)
                for (nfds_t i = 0; i < n; i++) {
                        file_ev_t *f = &ke->fds[pfd[i].fd];
                        /* Still registered with a callback (an earlier one may have changed
                         * it), and waited on (not parked). */
                        if ((pfd[i].revents & POLLIN) && (f->mask & KT_EVENT_BACKOFF) && f->cb &&
                            !f->parked)
                                f->cb(f->opaque, pfd[i].fd, KT_EVENT_READ);
                }
        timers_run(ke);
        return KT_ERR_SYS;
}

void kt_event_wait_fail_inject(kt_event_t *ke, int err, int cnt) {
        ke->inject_errno = err;
        ke->inject_cnt = cnt;
}

uint64_t kt_event_ctl_calls(const kt_event_t *ke) {
        return ke->ctl_calls;
}

void kt_event_ctl_fail_inject(kt_event_t *ke, int err, int cnt) {
        ke->inject_ctl_errno = err;
        ke->inject_ctl_cnt = cnt;
}

kt_err_t kt_event_wait(kt_event_t *ke, int timeout_ms) {
        struct epoll_event evs[KT_EVENT_MAX_EVENTS];
        ssize_t first;
        int n;

        if (ke->pending && pending_sync(ke))
                return wait_backoff(ke);
        if (timeout_ms != 0 && (first = timer_first(ke, UINT64_MAX)) >= 0) {
                int64_t ms = ke->timers[first].at_ms - kt_now_ms();
                if (ms < 0)
                        ms = 0;
                if (timeout_ms < 0 || ms < timeout_ms)
                        timeout_ms = (int)ms;
        }
        if (ke->inject_cnt > 0) {
                ke->inject_cnt--;
                errno = ke->inject_errno;
                n = -1;
        } else
                n = epoll_wait(ke->epfd, evs, KT_EVENT_MAX_EVENTS, timeout_ms);
        if (n == -1) {
                if (errno == EINTR) {
                        timers_run(ke);
                        return KT_OK; /* a signal: the loop looks at the signalfd */
                }
                err_log(ke, "epoll_wait", ke->epfd, errno);
                return wait_backoff(ke);
        }
        ke->backoff_ms = 0;
        for (int i = 0; i < n; i++) {
                int fd = evs[i].data.fd;
                uint32_t e = evs[i].events;
                file_ev_t *f;

                /* Deleted (or changed) by an earlier callback of this wait: not reported. */
                if (fd >= ke->fd_cap || !(f = &ke->fds[fd])->mask)
                        continue;
                if (f->parked) {
                        kt_event_fd_del(ke, fd); /* ready, and nobody waits on it (DESIGN) */
                        continue;
                }
                if (!f->cb)
                        continue;
                f->cb(f->opaque, fd,
                      (e & EPOLLIN ? KT_EVENT_READ : 0) | (e & EPOLLOUT ? KT_EVENT_WRITE : 0) |
                          (e & (EPOLLERR | EPOLLHUP) ? KT_EVENT_ERROR : 0));
        }
        timers_run(ke);
        return KT_OK;
}
