/*
 * DESIGN: the configuration is read in a child process, nginx-like (`nginx -t` / its
 * reload), so that reading it can never end the daemon or stall its loop.
 *
 * What reading involves is not all ours: libconfig 1.5's scanner calls exit(2) on an
 * @include of a directory, a file reference may name a FIFO or a hung NFS mount, librdkafka
 * validates the properties. config_load.c checks what it can first (regular files only, named
 * caps, no wrapping integers); this file makes whatever is left cost a child only:
 *
 *   parent (the loop, --check-config, start-up)        child (fork(), no exec)
 *   pipe(); fork() ----------------------------------> alarm(); kt_config_load_ex()
 *   poll the pipe, never block (kt_config_reader_step)   'O' + kt_config_render() text, or
 *   <------------------------------------------------   'E' + json flag + the errors; _exit(0)
 *   EOF: waitpid(); exit status 0 and a whole answer -> kt_config_from_render(), from memory
 *   deadline (KT_CONFIG_READ_TIMEOUT_MS): SIGKILL, waitpid -> "not read within ..."
 *
 * The child of a threaded process runs only this thread: it uses malloc (glibc makes fork
 * safe for it), libconfig, getenv, open/read and rd_kafka_conf_set, takes no lock another
 * thread could hold, and leaves through _exit() (no atexit handler, no stdio flushed twice).
 * The answer is capped (KT_MAX_RENDERED_BYTES); secrets cross only the pipe.
 */
#define _GNU_SOURCE
#include "config.h"
#include "config_int.h"

#include "../core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/** The largest answer a child may give (the file cap and expanded references fit). */
#define KT_MAX_RENDERED_BYTES (64 * 1024 * 1024)

/** The errors a child may report. */
#define KT_READER_ERRSTR_SIZE 16384

struct kt_config_reader {
        pid_t pid;
        int fd;
        int64_t deadline_ms;
        int timeout_ms;
        char *path; /**< for messages */
        char *buf;  /**< the answer so far */
        size_t len, cap;
};

static int write_all(int fd, const char *buf, size_t len) {
        while (len) {
                ssize_t n = write(fd, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

typedef struct load_args {
        const char *path;
        char *const *sets;
        size_t set_cnt;
} load_args_t;

/** The child: read, validate, answer, _exit. */
static void child_load(int fd, void *arg) {
        const load_args_t *la = arg;
        const char *path = la->path;
        char *const *sets = la->sets;
        size_t set_cnt = la->set_cnt;
        static char err[KT_READER_ERRSTR_SIZE];
        char *out = NULL;
        size_t len = 0;
        int log_json = 0, rc = 1;
        FILE *f;
        kt_config_t *conf;

        conf = kt_config_load_ex(path, sets, set_cnt, err, sizeof(err), &log_json);
        if ((f = open_memstream(&out, &len))) {
                if (conf) {
                        fputc('O', f);
                        kt_config_render(conf, f);
                } else
                        fprintf(f, "E%c%s", log_json ? 'j' : 't', err);
                if (!fclose(f) && !write_all(fd, out, len))
                        rc = 0;
        }
        _exit(rc);
}

kt_config_reader_t *kt_config_reader_start(const char *path, char *const *sets, size_t set_cnt,
                                           char *errstr, size_t errstr_size) {
        load_args_t la = {path, sets, set_cnt};
        return kt_config_reader_run(child_load, &la, path, KT_CONFIG_READ_TIMEOUT_MS, errstr,
                                    errstr_size);
}

kt_config_reader_t *kt_config_reader_run(void (*fn)(int fd, void *arg), void *arg, const char *path,
                                         int timeout_ms, char *errstr, size_t errstr_size) {
        kt_config_reader_t *kr = calloc(1, sizeof(*kr));
        int fds[2];

        if (!kr || (path && !(kr->path = strdup(path)))) {
                snprintf(errstr, errstr_size, "config: out of memory");
                goto fail;
        }
        if (pipe2(fds, O_CLOEXEC)) {
                snprintf(errstr, errstr_size, "config: pipe: %s", strerror(errno));
                goto fail;
        }
        fflush(NULL); /* the child must not write what the parent buffered */
        if ((kr->pid = fork()) == -1) {
                snprintf(errstr, errstr_size, "config: cannot start the reader: fork: %s",
                         strerror(errno));
                close(fds[0]);
                close(fds[1]);
                goto fail;
        }
        if (kr->pid == 0) {
                close(fds[0]);
                /* Never outlive the deadline or the parent, whatever blocks. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                alarm((unsigned)(timeout_ms / 1000 + 2));
                fn(fds[1], arg);
                _exit(1);
        }
        close(fds[1]);
        kr->fd = fds[0];
        kr->timeout_ms = timeout_ms;
        fcntl(kr->fd, F_SETFL, O_NONBLOCK);
        kr->deadline_ms = kt_now_ms() + timeout_ms;
        return kr;
fail:
        if (kr)
                free(kr->path);
        free(kr);
        return NULL;
}

int kt_config_reader_fd(const kt_config_reader_t *kr) {
        return kr->fd;
}

/** Kill the child if it still runs and reap it. @returns its wait status, -1 if unknown. */
static int child_reap(kt_config_reader_t *kr, int kill_it) {
        int st = -1;

        if (kr->pid <= 0)
                return -1;
        if (kill_it)
                kill(kr->pid, SIGKILL);
        while (waitpid(kr->pid, &st, 0) == -1 && errno == EINTR)
                ;
        kr->pid = 0;
        return st;
}

int kt_config_reader_step(kt_config_reader_t *kr, kt_config_t **confp, char *errstr,
                          size_t errstr_size, int *log_jsonp) {
        const char *what = kr->path ? kr->path : "config";
        int st;

        *confp = NULL;
        if (log_jsonp)
                *log_jsonp = 0;
        for (;;) {
                ssize_t n;

                if (kr->cap - kr->len < 65536 + 1) {
                        size_t ncap = kr->cap ? kr->cap * 2 : 65536 * 2;
                        char *nb;
                        if (ncap > KT_MAX_RENDERED_BYTES + 1)
                                ncap = KT_MAX_RENDERED_BYTES + 1;
                        if (kr->len >= ncap - 1) {
                                child_reap(kr, 1);
                                snprintf(errstr, errstr_size,
                                         "%s: cannot read: the resolved configuration is larger "
                                         "than %d bytes",
                                         what, KT_MAX_RENDERED_BYTES);
                                return 0;
                        }
                        if (!(nb = realloc(kr->buf, ncap))) {
                                child_reap(kr, 1);
                                snprintf(errstr, errstr_size, "%s: cannot read: out of memory",
                                         what);
                                return 0;
                        }
                        kr->buf = nb;
                        kr->cap = ncap;
                }
                n = read(kr->fd, kr->buf + kr->len, kr->cap - kr->len - 1);
                if (n > 0) {
                        kr->len += (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        if (kt_now_ms() < kr->deadline_ms)
                                return 1;
                        child_reap(kr, 1);
                        snprintf(errstr, errstr_size,
                                 "%s: cannot read: not read and checked within %d ms (a file "
                                 "that blocks, e.g. on a hung network mount?): the reader "
                                 "was stopped",
                                 what, kr->timeout_ms);
                        return 0;
                }
                break; /* EOF (the child is done) or a read error */
        }
        st = child_reap(kr, 0);
        kr->buf[kr->len] = '\0';
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || kr->len < 2 ||
            (kr->buf[0] != 'O' && kr->buf[0] != 'E')) {
                if (st != -1 && WIFSIGNALED(st))
                        snprintf(errstr, errstr_size,
                                 "%s: cannot read: reading it killed the reader (signal %d, "
                                 "%s): the file is not usable as it is",
                                 what, WTERMSIG(st), strsignal(WTERMSIG(st)));
                else
                        snprintf(errstr, errstr_size,
                                 "%s: cannot read: reading it ended the reader with exit status "
                                 "%d (libconfig exits on input it cannot read, e.g. an "
                                 "@include of a directory): the file is not usable as it is",
                                 what, st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
                return 0;
        }
        if (kr->buf[0] == 'E') {
                if (log_jsonp)
                        *log_jsonp = kr->buf[1] == 'j';
                snprintf(errstr, errstr_size, "%s", kr->buf + 2);
                return 0;
        }
        *confp = kt_config_from_render(kr->buf + 1, errstr, errstr_size);
        return 0;
}

void kt_config_reader_destroy(kt_config_reader_t *kr) {
        if (!kr)
                return;
        child_reap(kr, 1);
        close(kr->fd);
        free(kr->buf);
        free(kr->path);
        free(kr);
}

kt_config_t *kt_config_load_isolated(const char *path, char *const *sets, size_t set_cnt,
                                     char *errstr, size_t errstr_size, int *log_jsonp) {
        kt_config_reader_t *kr = kt_config_reader_start(path, sets, set_cnt, errstr, errstr_size);
        kt_config_t *conf = NULL;

        if (log_jsonp)
                *log_jsonp = 0;
        if (!kr)
                return NULL;
        while (kt_config_reader_step(kr, &conf, errstr, errstr_size, log_jsonp)) {
                struct pollfd pfd = {kr->fd, POLLIN, 0};
                int64_t left = kr->deadline_ms - kt_now_ms();
                poll(&pfd, 1, left < 0 ? 0 : (int)left + 1);
        }
        kt_config_reader_destroy(kr);
        return conf;
}
