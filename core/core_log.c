/* Logging, error texts and clocks. */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include <cjson/cJSON.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = KT_LOG_INFO;
static _Atomic int log_json;

static const char *const level_names[] = {"EMERG", "ALERT",  "CRIT", "ERROR",
                                          "WARN",  "NOTICE", "INFO", "DEBUG"};

const char *kt_err2str(kt_err_t err) {
        switch (err) {
        case KT_OK:
                return "success";
        case KT_ERR_NOMEM:
                return "out of memory";
        case KT_ERR_CONFIG:
                return "invalid configuration";
        case KT_ERR_KAFKA:
                return "Kafka error";
        case KT_ERR_HTTP:
                return "HTTP error";
        case KT_ERR_SYS:
                return "system error";
        case KT_ERR_FULL:
                return "no free slot";
        case KT_ERR_TIMEDOUT:
                return "timed out";
        case KT_ERR_INVALID:
                return "invalid data";
        }
        return "unknown error";
}

void kt_log_level_set(int level) {
        atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

void kt_log_json_set(int json) {
        atomic_store_explicit(&log_json, json, memory_order_relaxed);
}

int kt_log_enabled(int level) {
        return level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int kt_log_level_parse(const char *name) {
        static const struct {
                const char *name;
                int level;
        } names[] = {{"emerg", KT_LOG_EMERG},  {"alert", KT_LOG_ALERT},
                     {"crit", KT_LOG_CRIT},    {"err", KT_LOG_ERR},
                     {"error", KT_LOG_ERR},    {"warning", KT_LOG_WARNING},
                     {"warn", KT_LOG_WARNING}, {"notice", KT_LOG_NOTICE},
                     {"info", KT_LOG_INFO},    {"debug", KT_LOG_DEBUG}};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (!strcasecmp(name, names[i].name))
                        return names[i].level;
        return -1;
}

void kt_log(int level, const char *fac, const char *fmt, ...) {
        char line[2048];
        struct timespec ts;
        struct tm tm;
        size_t len;
        int n;
        va_list ap;

        if (!kt_log_enabled(level))
                return;
        if (level < 0)
                level = 0;
        if (level > KT_LOG_DEBUG)
                level = KT_LOG_DEBUG;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line + len, sizeof(line) - len, ".%03ldZ", ts.tv_nsec / 1000000L);
        if (n > 0)
                len += (size_t)n;

        if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
                char msg[2048];
                cJSON *o = cJSON_CreateObject();
                char *text;

                va_start(ap, fmt);
                vsnprintf(msg, sizeof(msg), fmt, ap);
                va_end(ap);
                line[len] = '\0';
                cJSON_AddStringToObject(o, "time", line);
                cJSON_AddStringToObject(o, "level", level_names[level]);
                cJSON_AddStringToObject(o, "facility", fac);
                cJSON_AddStringToObject(o, "message", msg);
                /* cJSON escapes control characters, so the object stays on one line. */
                text = cJSON_PrintUnformatted(o);
                cJSON_Delete(o);
                if (text) {
                        size_t tl = strlen(text);
                        text[tl] = '\n';
                        if (write(STDERR_FILENO, text, tl + 1) < 0) {
                                /* nowhere left to report it */
                        }
                        text[tl] = '\0';
                        cJSON_free(text);
                }
                return;
        }

        n = snprintf(line + len, sizeof(line) - len, " %s %s: ", level_names[level], fac);
        if (n > 0)
                len += (size_t)n;
        if (len >= sizeof(line) - 1)
                len = sizeof(line) - 2;

        va_start(ap, fmt);
        n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        va_end(ap);
        if (n > 0)
                len += (size_t)n;
        if (len > sizeof(line) - 2)
                len = sizeof(line) - 2;
        /* One event, one line: a message must not break the line structure. */
        for (size_t i = 0; i < len; i++)
                if (line[i] == '\n' || line[i] == '\r')
                        line[i] = ' ';
        line[len++] = '\n';
        if (write(STDERR_FILENO, line, len) < 0) {
                /* nowhere left to report it */
        }
}

int64_t kt_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kt_log_limit_pass(kt_log_limit_t *l, int64_t now_ms, int64_t every_ms, unsigned long *held) {
        if (l->next_ms && now_ms < l->next_ms) {
                l->held++;
                return 0;
        }
        *held = l->held;
        l->held = 0;
        l->next_ms = now_ms + (every_ms > 0 ? every_ms : 1);
        return 1;
}

int kt_log_limits_pass(kt_log_limits_t *t, int code, int64_t now_ms, int64_t every_ms,
                       unsigned long *held) {
        int i;

        for (i = 0; i < t->used && t->slot[i].code != code; i++)
                ;
        if (i == t->used && t->used < KT_LOG_LIMIT_CODES) {
                t->slot[i].code = code;
                t->used++;
        }
        /* i == KT_LOG_LIMIT_CODES: the shared slot of every later code. */
        return kt_log_limit_pass(&t->slot[i].limit, now_ms, every_ms, held);
}

void kt_log_repeated(kt_log_limits_t *t, int level, const char *fac, int code, const char *name,
                     const char *text) {
        unsigned long held;

        if (!kt_log_enabled(level) ||
            !kt_log_limits_pass(t, code, kt_now_ms(), KT_LOG_REPEAT_MS, &held))
                return;
        if (held)
                kt_log(level, fac,
                       "%s: %s (+%lu like it since the last line, not logged: one line "
                       "per error code every %d s)",
                       name, text, held, KT_LOG_REPEAT_MS / 1000);
        else
                kt_log(level, fac, "%s: %s", name, text);
}

int64_t kt_wallclock_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
