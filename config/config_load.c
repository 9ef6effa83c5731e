/*
 * Configuration loading: defaults, the libconfig file, the environment, --set flags, each
 * setting through the schema (config_schema.c); then the rules between settings, derived
 * values, warnings and the hash.
 *
 * Every problem is collected (not just the first) so an operator fixes a file in one round;
 * each names where the value came from: `file:line: key: reason`, `ENV_VAR: key: reason` or
 * `--set: key: reason`. Nothing here connects anywhere.
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"
#include "config_int.h"

#include "../core/core.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/** Collected errors, newline separated. */
typedef struct errs {
        char *buf;
        size_t size;
        size_t len;
        int cnt;
        const char *file;
        unsigned char *key_failed; /**< kt_config_key_cnt marks: an error named that key */
        int includes;              /**< files @include'd so far (prescan) */
} errs_t;

/** @returns non-zero if an error about setting \p key was reported already. */
static int key_failed(const errs_t *e, const char *key) {
        const kt_config_key_t *k = kt_config_key_find(key);
        return k && e->key_failed && e->key_failed[k - kt_config_keys];
}

static void verrs(errs_t *e, const char *where, const char *key, const char *fmt, va_list ap) {
        char msg[512];
        int n;

        vsnprintf(msg, sizeof(msg), fmt, ap);
        e->cnt++;
        if (e->key_failed && kt_config_key_find(key))
                e->key_failed[kt_config_key_find(key) - kt_config_keys] = 1;
        if (e->len >= e->size)
                return;
        n = snprintf(e->buf + e->len, e->size - e->len, "%s%s%s%s: %s", e->len ? "\n" : "",
                     where ? where : "", where ? ": " : "", key, msg);
        if (n > 0)
                e->len += (size_t)n;
        if (e->len > e->size)
                e->len = e->size;
}

static void errf(errs_t *e, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** An error at \p line of the file (0: no location). */
static void errf(errs_t *e, int line, const char *key, const char *fmt, ...) {
        char where[512];
        va_list ap;

        if (line > 0 && e->file)
                snprintf(where, sizeof(where), "%s:%d", e->file, line);
        va_start(ap, fmt);
        verrs(e, line > 0 && e->file ? where : NULL, key, fmt, ap);
        va_end(ap);
}

static void errfl(errs_t *e, const char *file, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** An error at \p line of \p file (an @include'd one, say). */
static void errfl(errs_t *e, const char *file, int line, const char *key, const char *fmt, ...) {
        char where[512];
        va_list ap;

        snprintf(where, sizeof(where), "%s:%d", file, line);
        va_start(ap, fmt);
        verrs(e, where, key, fmt, ap);
        va_end(ap);
}

/** Where a value came from, for messages: "file:line", "ENV_VAR", "--set" or "". */
static void src_where(const errs_t *e, const kt_config_source_t *src, char *buf, size_t size) {
        buf[0] = '\0';
        if (src->origin == KT_ORIGIN_FILE && e->file)
                snprintf(buf, size, "%s:%d", e->file, src->line);
        else if (src->origin == KT_ORIGIN_ENV)
                snprintf(buf, size, "%s", src->name);
        else if (src->origin == KT_ORIGIN_FLAG)
                snprintf(buf, size, "--set");
}

static void errs_at(errs_t *e, const kt_config_source_t *src, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** An error about a value that came from \p src. */
static void errs_at(errs_t *e, const kt_config_source_t *src, const char *key, const char *fmt,
                    ...) {
        char where[512];
        va_list ap;

        src_where(e, src, where, sizeof(where));
        va_start(ap, fmt);
        verrs(e, *where ? where : NULL, key, fmt, ap);
        va_end(ap);
}

static const kt_config_source_t *source_of(const kt_config_t *conf, const char *path) {
        static const kt_config_source_t none = {KT_ORIGIN_DEFAULT, 0, ""};
        const kt_config_key_t *k = kt_config_key_find(path);
        return k && conf->sources ? &conf->sources[k - kt_config_keys] : &none;
}

static void errk(errs_t *e, const kt_config_t *conf, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** An error about setting \p key, located where its value came from. */
static void errk(errs_t *e, const kt_config_t *conf, const char *key, const char *fmt, ...) {
        char where[512];
        va_list ap;

        src_where(e, source_of(conf, key), where, sizeof(where));
        va_start(ap, fmt);
        verrs(e, *where ? where : NULL, key, fmt, ap);
        va_end(ap);
}

/** libconfig keeps lines as unsigned short. */
static int src_line(const config_setting_t *s) {
        return (int)config_setting_source_line(s);
}

static char *xstrdup(const char *s) {
        return s ? strdup(s) : NULL;
}

/** Parse a whole decimal integer. @returns 0 on success. */
static int parse_int(const char *s, long long *out) {
        char *end;
        long long v;

        if (!s || !*s)
                return -1;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || *end)
                return -1;
        *out = v;
        return 0;
}

char *kt_config_handler_resolve(const char *func, const char *mod) {
        size_t len;
        char *out;

        if (!func || !*func)
                return NULL;
        if (strchr(func, '.'))
                return strdup(func);
        if (!mod || !*mod)
                return NULL;
        len = strlen(mod) + 1 + strlen(func) + 1;
        if (!(out = malloc(len)))
                return NULL;
        snprintf(out, len, "%s.%s", mod, func);
        return out;
}

int kt_config_hostport_parse(const char *s, char **hostp, int *portp) {
        const char *colon, *host = s, *host_end;
        long long port;

        if (!s || !*s)
                return -1;
        if (*s == '[') {
                host = s + 1;
                host_end = strchr(host, ']');
                if (!host_end || host_end[1] != ':')
                        return -1;
                colon = host_end + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon || memchr(s, ':', (size_t)(colon - s)))
                        return -1;
                host_end = colon;
        }
        if (host_end == host || parse_int(colon + 1, &port) || port < 1 || port > 65535)
                return -1;
        for (const char *p = host; p < host_end; p++)
                if (isspace((unsigned char)*p) || *p == '/')
                        return -1;
        if (!(*hostp = strndup(host, (size_t)(host_end - host))))
                return -1;
        *portp = (int)port;
        return 0;
}

/** Kafka topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
static int topic_valid(const char *t) {
        size_t len = strlen(t);

        if (len == 0 || len > 249 || !strcmp(t, ".") || !strcmp(t, ".."))
                return 0;
        for (const char *p = t; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
                        return 0;
        return 1;
}

static void list_free(char ***vp, size_t *cntp) {
        for (size_t i = 0; i < *cntp; i++)
                free((*vp)[i]);
        free(*vp);
        *vp = NULL;
        *cntp = 0;
}

static int list_add(char ***vp, size_t *cntp, const char *t, size_t len) {
        char **n = realloc(*vp, (*cntp + 1) * sizeof(*n));
        if (!n)
                return -1;
        *vp = n;
        if (!(n[*cntp] = strndup(t, len)))
                return -1;
        (*cntp)++;
        return 0;
}

/** Split a comma-separated list (TOPIC_NAME), trimming blanks, into a new list. */
static int list_from_text(char ***vp, size_t *cntp, const char *list) {
        const char *p = list;

        list_free(vp, cntp);
        while (*p) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);

                while (len && isspace((unsigned char)*p)) {
                        p++;
                        len--;
                }
                while (len && isspace((unsigned char)p[len - 1]))
                        len--;
                if (len && list_add(vp, cntp, p, len))
                        return -1;
                if (!end)
                        break;
                p = end + 1;
        }
        return 0;
}

/* ---------------------------------------------------------------- files, references */

/** The largest secret file read through ${file:PATH}. */
#define KT_MAX_SECRET_FILE_BYTES 65536

/** The largest value once its ${...} references are expanded. */
#define KT_MAX_VALUE_BYTES KT_MAX_CONFIG_FILE_BYTES

/**
 * Read the whole regular file \p path, at most \p cap bytes, without ever blocking on what
 * is not a regular file: open(O_NONBLOCK) (a FIFO opens at once), fstat, then read only a
 * regular file. A directory, FIFO, socket or device is refused by name.
 * @returns a new NUL-terminated buffer (its length in \p *lenp), or NULL with the reason in
 *          \p why.
 */
static char *file_read(const char *path, size_t cap, size_t *lenp, char *why, size_t why_size) {
        struct stat st;
        char *buf = NULL;
        size_t len = 0, size;
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

        if (fd == -1) {
                snprintf(why, why_size, "%s", strerror(errno));
                return NULL;
        }
        if (fstat(fd, &st)) {
                snprintf(why, why_size, "%s", strerror(errno));
                goto out;
        }
        if (S_ISDIR(st.st_mode)) {
                snprintf(why, why_size, "it is a directory, not a file");
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(why, why_size, "it is a %s, not a regular file",
                         S_ISFIFO(st.st_mode)   ? "FIFO"
                         : S_ISSOCK(st.st_mode) ? "socket"
                                                : "device");
                goto out;
        }
        if (st.st_size < 0 || (unsigned long long)st.st_size > cap) {
                snprintf(why, why_size, "it is larger than %zu bytes", cap);
                goto out;
        }
        size = (size_t)st.st_size; /* what grows meanwhile is not read */
        if (!(buf = malloc(size + 1))) {
                snprintf(why, why_size, "out of memory");
                goto out;
        }
        while (len < size) {
                ssize_t n = read(fd, buf + len, size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        snprintf(why, why_size, "%s", strerror(errno));
                        free(buf);
                        buf = NULL;
                        goto out;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        *lenp = len;
out:
        close(fd);
        return buf;
}

/** Append \p n bytes to a growing buffer, doubling it. @returns 0, -1 past \p cap or out of
 *  memory. */
static int buf_append(char **bufp, size_t *lenp, size_t *capp, const char *s, size_t n,
                      size_t cap) {
        if (*lenp + n + 1 > cap + 1)
                return -1;
        if (*lenp + n + 1 > *capp) {
                size_t ncap = *capp ? *capp : 64;
                char *nb;
                while (ncap < *lenp + n + 1)
                        ncap *= 2;
                if (!(nb = realloc(*bufp, ncap)))
                        return -1;
                *bufp = nb;
                *capp = ncap;
        }
        memcpy(*bufp + *lenp, s, n);
        *lenp += n;
        (*bufp)[*lenp] = '\0';
        return 0;
}

/**
 * Expand `${NAME}` (an environment variable) and `${file:PATH}` (a regular file's content, one
 * trailing newline dropped) in \p in, so secrets need not be written in the config file. A
 * reference that resolves to nothing is an error (an empty secret is a mistake, never a
 * password). Linear in the length of \p in: each byte is looked at a bounded number of times.
 * @returns a new string, or NULL after reporting the problem to \p e.
 */
static char *expand_refs(const char *in, errs_t *e, const kt_config_source_t *src,
                         const char *key) {
        size_t cap = 0, len = 0;
        char *out = NULL;
        const char *p = in;

        if (buf_append(&out, &len, &cap, "", 0, KT_MAX_VALUE_BYTES))
                goto nomem;
        while (*p) {
                const char *start = strstr(p, "${"), *end, *val = NULL;
                char name[256], *fval = NULL, why[128];
                size_t nlen, flen = 0;
                int rc;

                /* No "${", or no '}' after it: nothing further can be a reference. */
                if (!start || !(end = strchr(start + 2, '}'))) {
                        if (buf_append(&out, &len, &cap, p, strlen(p), KT_MAX_VALUE_BYTES))
                                goto toolong;
                        break;
                }
                if (buf_append(&out, &len, &cap, p, (size_t)(start - p), KT_MAX_VALUE_BYTES))
                        goto toolong;
                nlen = (size_t)(end - (start + 2));
                if (nlen == 0 || nlen >= sizeof(name)) {
                        errs_at(e, src, key, "bad reference '%.*s'",
                                (int)(nlen > 64 ? 64 : end - start + 1), start);
                        goto fail;
                }
                memcpy(name, start + 2, nlen);
                name[nlen] = '\0';
                if (!strncmp(name, "file:", 5)) {
                        if (!(fval = file_read(name + 5, KT_MAX_SECRET_FILE_BYTES, &flen, why,
                                               sizeof(why)))) {
                                errs_at(e, src, key, "cannot read %s: %s", name + 5, why);
                                goto fail;
                        }
                        if (memchr(fval, '\0', flen)) {
                                errs_at(e, src, key, "%s holds a NUL byte", name + 5);
                                free(fval);
                                goto fail;
                        }
                        if (flen && fval[flen - 1] == '\n')
                                fval[--flen] = '\0';
                        if (!flen) {
                                errs_at(e, src, key, "%s is empty", name + 5);
                                free(fval);
                                goto fail;
                        }
                        val = fval;
                } else {
                        for (size_t i = 0; i < nlen; i++)
                                if (!(isalnum((unsigned char)name[i]) || name[i] == '_')) {
                                        errs_at(e, src, key,
                                                "bad reference '${%s}': a variable "
                                                "name or file:PATH",
                                                name);
                                        goto fail;
                                }
                        if (!(val = getenv(name))) {
                                errs_at(e, src, key, "environment variable %s is not set", name);
                                goto fail;
                        }
                        if (!*val) {
                                errs_at(e, src, key, "environment variable %s is empty", name);
                                goto fail;
                        }
                }
                rc = buf_append(&out, &len, &cap, val, strlen(val), KT_MAX_VALUE_BYTES);
                free(fval);
                if (rc)
                        goto toolong;
                p = end + 1;
        }
        return out;
toolong:
        errs_at(e, src, key,
                "longer than %d bytes once its references are expanded (or out of "
                "memory)",
                KT_MAX_VALUE_BYTES);
        goto fail;
nomem:
        errs_at(e, src, key, "out of memory");
fail:
        free(out);
        return NULL;
}

/** librdkafka properties ktrigger sets itself; setting them would break a guarantee. */
typedef struct owned_prop {
        const char *name;
        const char *instead;
} owned_prop_t;

#define KT_LOG_QUEUE_WHY "set by ktrigger: librdkafka's log lines go to ktrigger's log"
#define KT_DEAD_LETTER_WHY                                                                         \
        "dead letters need the idempotent producer with acks=all on kafka.brokers"

static const owned_prop_t owned_props[] = {
    {"group.id", "use kafka.group_id"},
    {"bootstrap.servers", "use kafka.brokers"},
    {"metadata.broker.list", "use kafka.brokers"},
    {"auto.offset.reset", "use kafka.start_from"},
    {"enable.auto.offset.store", "ktrigger stores offsets only for finished records"},
    {"enable.auto.commit",
     "ktrigger commits itself (with the completed-offset map) every auto.commit.interval.ms"},
    {"enable.partition.eof", "set by ktrigger"},
    {"group.instance.id", "use kafka.static_membership (one id per replica)"},
    {"log.queue", KT_LOG_QUEUE_WHY},
};

/** The same for the dead-letter and reply producer (kafka.producer_properties). */
static const owned_prop_t owned_producer_props[] = {
    {"bootstrap.servers", KT_DEAD_LETTER_WHY},     {"metadata.broker.list", KT_DEAD_LETTER_WHY},
    {"enable.idempotence", KT_DEAD_LETTER_WHY},    {"acks", KT_DEAD_LETTER_WHY},
    {"request.required.acks", KT_DEAD_LETTER_WHY}, {"log.queue", KT_LOG_QUEUE_WHY},
};

/** @returns why \p name may not be set (one of the \p cnt entries of \p owned), or NULL. */
static const char *owned_why(const owned_prop_t *owned, size_t cnt, const char *name) {
        for (size_t i = 0; i < cnt; i++)
                if (!strcmp(name, owned[i].name))
                        return owned[i].instead;
        return NULL;
}

/* ---------------------------------------------------------------- typed setters */

static void *field(kt_config_t *conf, const kt_config_key_t *k) {
        return (char *)conf + k->offset;
}

static void *field_cnt(kt_config_t *conf, const kt_config_key_t *k) {
        return (char *)conf + k->offset_cnt;
}

static void props_free(kt_config_prop_t **vp, size_t *cntp) {
        for (size_t i = 0; i < *cntp; i++) {
                free((*vp)[i].name);
                free((*vp)[i].value);
                free((*vp)[i].raw);
        }
        free(*vp);
        *vp = NULL;
        *cntp = 0;
}

/** Set property \p name (replacing one of the same name: a later source wins). */
static void prop_set(kt_config_prop_t **vp, size_t *cntp, const char *name, size_t name_len,
                     const char *raw, const kt_config_source_t *src, const char *key, errs_t *e) {
        kt_config_prop_t *p = NULL, *n;

        for (size_t i = 0; i < *cntp; i++)
                if (strlen((*vp)[i].name) == name_len && !strncmp((*vp)[i].name, name, name_len))
                        p = &(*vp)[i];
        if (!p) {
                if (!(n = realloc(*vp, (*cntp + 1) * sizeof(*n)))) {
                        errs_at(e, src, key, "out of memory");
                        return;
                }
                *vp = n;
                p = &n[(*cntp)++];
                memset(p, 0, sizeof(*p));
                p->name = strndup(name, name_len);
        }
        free(p->raw);
        free(p->value);
        p->raw = strdup(raw);
        p->value = expand_refs(raw, e, src, key);
        p->src = *src;
        p->line = src->origin == KT_ORIGIN_FILE ? src->line : 0;
        if (!p->name || !p->raw)
                errs_at(e, src, key, "out of memory");
}

/** Enumerated value \p v of \p k into its int field. @returns 0, -1 if not a name. */
static int enum_set(kt_config_t *conf, const kt_config_key_t *k, const char *v) {
        for (size_t i = 0; k->names[i]; i++)
                if (!strcasecmp(v, k->names[i])) {
                        *(int *)field(conf, k) = k->values ? k->values[i] : (int)i;
                        return 0;
                }
        return -1;
}

static void enum_error(errs_t *e, const kt_config_source_t *src, const kt_config_key_t *k,
                       const char *v) {
        char list[256] = "";
        size_t len = 0;

        for (size_t i = 0; k->names[i] && len < sizeof(list); i++)
                len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                        k->names[i]);
        errs_at(e, src, k->path, "'%s' is not one of: %s", v, list);
}

static int int_set(kt_config_t *conf, const kt_config_key_t *k, long long v,
                   const kt_config_source_t *src, errs_t *e) {
        if (v < k->min || v > k->max) {
                errs_at(e, src, k->path, "%lld is outside %lld..%lld", v, k->min, k->max);
                return -1;
        }
        *(int *)field(conf, k) = (int)v;
        return 0;
}

/**
 * Set \p k from text (a default, an environment variable, a --set flag).
 * Lists are comma-separated; properties are `name=value` entries separated by ';' or newlines
 * (commas appear in librdkafka values, e.g. debug=fetch,queue).
 * @returns 0 if set.
 */
static int set_text(kt_config_t *conf, const kt_config_key_t *k, const char *text,
                    const kt_config_source_t *src, errs_t *e) {
        long long n;
        int before = e->cnt;

        switch (k->type) {
        case KT_CONF_STRING: {
                char *v = expand_refs(text, e, src, k->path);
                if (!v)
                        return -1;
                free(*(char **)field(conf, k));
                *(char **)field(conf, k) = v;
                break;
        }
        case KT_CONF_INT:
                if (parse_int(text, &n)) {
                        errs_at(e, src, k->path, "'%.64s' is not an integer", text);
                        return -1;
                }
                if (int_set(conf, k, n, src, e))
                        return -1;
                break;
        case KT_CONF_BOOL:
                if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes"))
                        *(int *)field(conf, k) = 1;
                else if (!strcasecmp(text, "false") || !strcmp(text, "0") ||
                         !strcasecmp(text, "no"))
                        *(int *)field(conf, k) = 0;
                else {
                        errs_at(e, src, k->path, "'%s' is not true or false", text);
                        return -1;
                }
                break;
        case KT_CONF_ENUM:
                if (enum_set(conf, k, text)) {
                        enum_error(e, src, k, text);
                        return -1;
                }
                break;
        case KT_CONF_LIST:
                if (list_from_text(field(conf, k), field_cnt(conf, k), text)) {
                        errs_at(e, src, k->path, "out of memory");
                        return -1;
                }
                break;
        case KT_CONF_PROPS: {
                const char *p = text;
                int entry = 0;
                while (*p) {
                        size_t len = strcspn(p, ";\n");
                        const char *eq;
                        char *raw;

                        while (len && isspace((unsigned char)*p)) {
                                p++;
                                len--;
                        }
                        if (len) {
                                entry++;
                                eq = memchr(p, '=', len);
                                if (!eq || eq == p) {
                                        /* Not echoed: it may hold a secret. */
                                        errs_at(e, src, k->path,
                                                "entry %d is not name=value (entries are "
                                                "separated by ';' or new lines; a value holding "
                                                "';' can be given as ${ENV_VAR} or ${file:PATH})",
                                                entry);
                                } else if ((raw = strndup(eq + 1, len - (size_t)(eq + 1 - p)))) {
                                        size_t name_len = (size_t)(eq - p);
                                        while (name_len && isspace((unsigned char)p[name_len - 1]))
                                                name_len--;
                                        prop_set(field(conf, k), field_cnt(conf, k), p, name_len,
                                                 raw, src, k->path, e);
                                        free(raw);
                                }
                        }
                        p += len;
                        if (*p)
                                p++;
                }
                break;
        }
        }
        if (e->cnt != before)
                return -1;
        conf->sources[k - kt_config_keys] = *src;
        return 0;
}

/* kafka.properties in the file: libconfig names cannot contain dots, so librdkafka properties
 * are a list of pairs: properties = ( ("session.timeout.ms", "45000"), ("fetch.wait.max.ms", 10) )
 */
static void file_props(config_setting_t *s, kt_config_t *conf, const kt_config_key_t *k,
                       errs_t *e) {
        static const char usage[] =
            "must be a list of pairs: ( (\"session.timeout.ms\", \"45000\"), ... )";

        if (!config_setting_is_list(s) && !config_setting_is_array(s)) {
                errf(e, src_line(s), k->path, "%s", usage);
                return;
        }
        for (int i = 0; i < config_setting_length(s); i++) {
                config_setting_t *pair = config_setting_get_elem(s, (unsigned)i);
                config_setting_t *name, *p;
                kt_config_source_t src = {KT_ORIGIN_FILE, src_line(pair), ""};
                char val[64];
                const char *v = val, *nm;

                if ((!config_setting_is_list(pair) && !config_setting_is_array(pair)) ||
                    config_setting_length(pair) != 2 ||
                    config_setting_type(name = config_setting_get_elem(pair, 0)) !=
                        CONFIG_TYPE_STRING) {
                        errf(e, src_line(pair), k->path, "element %d %s", i, usage);
                        continue;
                }
                nm = config_setting_get_string(name);
                p = config_setting_get_elem(pair, 1);
                switch (config_setting_type(p)) {
                case CONFIG_TYPE_STRING:
                        v = config_setting_get_string(p);
                        break;
                case CONFIG_TYPE_INT:
                case CONFIG_TYPE_INT64:
                        snprintf(val, sizeof(val), "%lld", config_setting_get_int64(p));
                        break;
                case CONFIG_TYPE_BOOL:
                        snprintf(val, sizeof(val), "%s",
                                 config_setting_get_bool(p) ? "true" : "false");
                        break;
                default:
                        errf(e, src_line(pair), k->path,
                             "%s: value must be a string, integer or boolean", nm);
                        continue;
                }
                prop_set(field(conf, k), field_cnt(conf, k), nm, strlen(nm), v, &src, k->path, e);
        }
        conf->sources[k - kt_config_keys] = (kt_config_source_t){KT_ORIGIN_FILE, src_line(s), ""};
}

/** Set \p k from its file setting \p s. */
static void set_file(kt_config_t *conf, const kt_config_key_t *k, config_setting_t *s, errs_t *e) {
        kt_config_source_t src = {KT_ORIGIN_FILE, src_line(s), ""};
        int type = config_setting_type(s);
        long long v;

        switch (k->type) {
        case KT_CONF_STRING:
        case KT_CONF_ENUM:
                if (type != CONFIG_TYPE_STRING) {
                        errf(e, src.line, k->path, "must be a string");
                        return;
                }
                set_text(conf, k, config_setting_get_string(s), &src, e);
                return;
        case KT_CONF_INT:
                /* 64-bit reads only: a value beyond 32 bits is read as written (load_file
                 * gives such literals their L) and the range check below sees it. */
                if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
                        v = config_setting_get_int64(s);
                else {
                        errf(e, src.line, k->path, "must be an integer");
                        return;
                }
                if (!int_set(conf, k, v, &src, e))
                        conf->sources[k - kt_config_keys] = src;
                return;
        case KT_CONF_BOOL:
                if (type != CONFIG_TYPE_BOOL) {
                        errf(e, src.line, k->path, "must be true or false");
                        return;
                }
                *(int *)field(conf, k) = config_setting_get_bool(s);
                conf->sources[k - kt_config_keys] = src;
                return;
        case KT_CONF_LIST:
                if (type == CONFIG_TYPE_STRING) {
                        set_text(conf, k, config_setting_get_string(s), &src, e);
                        return;
                }
                if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
                        errf(e, src.line, k->path, "must be a list of strings: [\"a\", \"b\"]");
                        return;
                }
                list_free(field(conf, k), field_cnt(conf, k));
                for (int i = 0; i < config_setting_length(s); i++) {
                        config_setting_t *t = config_setting_get_elem(s, (unsigned)i);
                        const char *str;
                        if (config_setting_type(t) != CONFIG_TYPE_STRING) {
                                errf(e, src.line, k->path, "element %d is not a string", i);
                                continue;
                        }
                        str = config_setting_get_string(t);
                        if (list_add(field(conf, k), field_cnt(conf, k), str, strlen(str)))
                                errf(e, src.line, k->path, "out of memory");
                }
                conf->sources[k - kt_config_keys] = src;
                return;
        case KT_CONF_PROPS:
                file_props(s, conf, k, e);
                return;
        }
}

/* ---------------------------------------------------------------- the file */

/** @returns non-zero if \p path is a key of the schema or a group above one. */
static int known_path(const char *path, int *is_group) {
        size_t len = strlen(path);

        *is_group = 0;
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const char *kp = kt_config_keys[i].path;
                if (!strcmp(kp, path))
                        return 1;
                if (!strncmp(kp, path, len) && kp[len] == '.')
                        *is_group = 1;
        }
        return *is_group;
}

/** Every setting of the file must be in the schema: anything else is a typo and an error. */
static void check_known(config_setting_t *grp, const char *path, errs_t *e) {
        for (int j = 0; j < config_setting_length(grp); j++) {
                config_setting_t *s = config_setting_get_elem(grp, (unsigned)j);
                const char *name = config_setting_name(s);
                char sub[256];
                int is_group;

                snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", name);
                if (!known_path(sub, &is_group)) {
                        const char *from = config_setting_source_file(s);
                        if (from && *path)
                                errfl(e, from, src_line(s), path, "unknown key '%s'", name);
                        else if (from)
                                errfl(e, from, src_line(s), sub, "unknown section");
                        else if (*path)
                                errf(e, src_line(s), path, "unknown key '%s'", name);
                        else
                                errf(e, src_line(s), sub, "unknown section");
                        continue;
                }
                if (is_group && !config_setting_is_group(s)) {
                        errf(e, src_line(s), sub, "must be a group: { ... }");
                        continue;
                }
                if (is_group)
                        check_known(s, sub, e);
        }
}

/** libconfig 1.5's own limit of nested @include. */
#define KT_MAX_INCLUDE_DEPTH 10

/** The most files one configuration may @include in all (a file including itself twice
 *  would otherwise be read 2^10 times). */
#define KT_MAX_INCLUDE_FILES 64

/** Integer literals to give their `L` (64 bits), by offset into the text. */
typedef struct widen {
        size_t *at;
        size_t cnt, cap;
} widen_t;

static void prescan(const char *file, const char *text, size_t len, int depth, widen_t *w,
                    errs_t *e);

/** `@include "PATH"` at \p line of \p file: what libconfig would open must be a regular file
 *  of at most KT_MAX_CONFIG_FILE_BYTES (its scanner exits on a directory, blocks on a FIFO),
 *  and what it includes in turn the same. */
static void include_check(const char *file, int line, const char *inc, int depth, errs_t *e) {
        char why[128], *text;
        size_t len = 0;

        /* Past a cap, one error and no more reading (INT_MAX / 2: stop). */
        if (e->includes >= INT_MAX / 2)
                return;
        if (++e->includes > KT_MAX_INCLUDE_FILES) {
                errfl(e, file, line, "@include", "\"%s\": more than %d included files", inc,
                      KT_MAX_INCLUDE_FILES);
                e->includes = INT_MAX / 2;
                return;
        }
        if (depth + 1 > KT_MAX_INCLUDE_DEPTH) {
                errfl(e, file, line, "@include", "\"%s\": more than %d nested includes", inc,
                      KT_MAX_INCLUDE_DEPTH);
                e->includes = INT_MAX / 2;
                return;
        }
        if (!(text = file_read(inc, KT_MAX_CONFIG_FILE_BYTES, &len, why, sizeof(why)))) {
                errfl(e, file, line, "@include", "cannot read \"%s\": %s", inc, why);
                return;
        }
        prescan(inc, text, len, depth + 1, NULL, e);
        free(text);
}

/**
 * Find, before libconfig 1.5 parses \p text (the content of \p file), what it gets wrong:
 *  - an integer literal beyond 32 bits without an `L` silently wraps (4294967360 reads as
 *    64): its offset is added to \p w, so the caller gives it the `L` and the range check
 *    sees the real value; in an @include'd file (\p w NULL: libconfig reads it itself) it is
 *    an error; beyond 64 bits it is always one;
 *  - a NUL byte ends libconfig's input early, silently: an error;
 *  - `@include "PATH"` is checked (include_check).
 * Strings, comments and setting names (which may hold digits and '-') are skipped as
 * libconfig's scanner does.
 */
static void prescan(const char *file, const char *text, size_t len, int depth, widen_t *w,
                    errs_t *e) {
        size_t i = 0;
        int line = 1, bol = 1; /* at the beginning of a line, blanks only so far */

        if (memchr(text, '\0', len)) {
                size_t at = (size_t)((const char *)memchr(text, '\0', len) - text);
                int l = 1;
                for (size_t j = 0; j < at; j++)
                        l += text[j] == '\n';
                errfl(e, file, l, "syntax", "a NUL byte: not a text file");
                return;
        }
        while (i < len) {
                char c = text[i];

                if (c == '\n') {
                        line++;
                        bol = 1;
                        i++;
                        continue;
                }
                if (c == ' ' || c == '\t' || c == '\r') {
                        i++;
                        continue;
                }
                if (c == '"') { /* a string, escapes included; may span lines */
                        for (i++; i < len && text[i] != '"'; i++) {
                                if (text[i] == '\\' && i + 1 < len)
                                        i++;
                                if (text[i] == '\n')
                                        line++;
                        }
                        i++;
                        bol = 0;
                        continue;
                }
                if (c == '#' || (c == '/' && i + 1 < len && text[i + 1] == '/')) {
                        while (i < len && text[i] != '\n')
                                i++;
                        continue;
                }
                if (c == '/' && i + 1 < len && text[i + 1] == '*') {
                        for (i += 2;
                             i < len && !(text[i] == '*' && i + 1 < len && text[i + 1] == '/'); i++)
                                line += text[i] == '\n';
                        i += 2;
                        bol = 0;
                        continue;
                }
                if (c == '@' && bol && !strncmp(text + i, "@include", 8)) {
                        size_t j = i + 8, k;
                        char *inc;

                        while (j < len && (text[j] == ' ' || text[j] == '\t'))
                                j++;
                        if (j >= len || text[j] != '"') {
                                i = j; /* libconfig says what is wrong */
                                bol = 0;
                                continue;
                        }
                        for (k = j + 1; k < len && text[k] != '"' && text[k] != '\n'; k++)
                                ;
                        if ((inc = strndup(text + j + 1, k - j - 1))) {
                                include_check(file, line, inc, depth, e);
                                free(inc);
                        }
                        i = k + 1;
                        bol = 0;
                        continue;
                }
                bol = 0;
                if (isalpha((unsigned char)c) || c == '*') { /* a name: digits and '-' too */
                        while (i < len && (isalnum((unsigned char)text[i]) || text[i] == '-' ||
                                           text[i] == '_' || text[i] == '*'))
                                i++;
                        continue;
                }
                if (isdigit((unsigned char)c) || ((c == '-' || c == '+') && i + 1 < len &&
                                                  isdigit((unsigned char)text[i + 1]))) {
                        size_t start = i, end;
                        int hex = 0;
                        char num[64];

                        if (c == '-' || c == '+')
                                i++;
                        if (text[i] == '0' && i + 1 < len &&
                            (text[i + 1] == 'x' || text[i + 1] == 'X')) {
                                hex = 1;
                                for (i += 2; i < len && isxdigit((unsigned char)text[i]); i++)
                                        ;
                        } else
                                while (i < len && isdigit((unsigned char)text[i]))
                                        i++;
                        end = i;
                        if (!hex && i < len &&
                            (text[i] == '.' || text[i] == 'e' || text[i] == 'E')) {
                                /* a float: libconfig reads it as a double */
                                while (i < len && (isdigit((unsigned char)text[i]) ||
                                                   strchr(".eE+-", text[i])))
                                        i++;
                                continue;
                        }
                        snprintf(num, sizeof(num), "%.*s", (int)(end - start), text + start);
                        errno = 0;
                        if (hex) {
                                unsigned long long v = strtoull(num, NULL, 16);
                                if (errno || end - start > 18)
                                        errfl(e, file, line, "syntax",
                                              "%.40s does not fit in 64 bits", num);
                                else if (v > 0xffffffffULL && !(i < len && text[i] == 'L')) {
                                        if (w)
                                                goto widen;
                                        errfl(e, file, line, "syntax",
                                              "%s does not fit in 32 bits: write %sL", num, num);
                                }
                        } else {
                                long long v = strtoll(num, NULL, 10);
                                if (errno || end - start > 20)
                                        errfl(e, file, line, "syntax",
                                              "%.40s does not fit in 64 bits", num);
                                else if ((v < INT_MIN || v > INT_MAX) &&
                                         !(i < len && text[i] == 'L')) {
                                        if (w)
                                                goto widen;
                                        errfl(e, file, line, "syntax",
                                              "%s does not fit in 32 bits: write %sL", num, num);
                                }
                        }
                        continue;
                widen:
                        if (w->cnt == w->cap) {
                                size_t ncap = w->cap ? w->cap * 2 : 8;
                                size_t *n = realloc(w->at, ncap * sizeof(*n));
                                if (!n) {
                                        errfl(e, file, line, "syntax", "out of memory");
                                        continue;
                                }
                                w->at = n;
                                w->cap = ncap;
                        }
                        w->at[w->cnt++] = end;
                        continue;
                }
                i++;
        }
}

/** @returns 0 if the file was read (errors in it are in \p e), -1 if it could not be. */
static int load_file(kt_config_t *conf, const char *path, errs_t *e) {
        config_t cfg;
        char why[128], *text, *wide = NULL;
        size_t len = 0;
        widen_t w = {NULL, 0, 0};
        int before = e->cnt, rc = -1;

        /* Read here, not by libconfig: checked first (never a FIFO or a directory), bounded,
         * and parsed from memory, which is linear (libconfig 1.5 rescans a long token from
         * its start at each 8 KiB read of a file: 28 s for an 8 MiB string). */
        if (!(text = file_read(path, KT_MAX_CONFIG_FILE_BYTES, &len, why, sizeof(why)))) {
                errf(e, 0, path, "cannot read: %s", why);
                return -1;
        }
        prescan(path, text, len, 0, &w, e);
        if (e->cnt != before)
                goto out;
        if (w.cnt) { /* 4294967360 -> 4294967360L */
                size_t from = 0, n = 0;
                if (!(wide = malloc(len + w.cnt + 1))) {
                        errf(e, 0, path, "out of memory");
                        goto out;
                }
                for (size_t j = 0; j < w.cnt; j++) {
                        memcpy(wide + n, text + from, w.at[j] - from);
                        n += w.at[j] - from;
                        wide[n++] = 'L';
                        from = w.at[j];
                }
                memcpy(wide + n, text + from, len - from + 1);
        }
        config_init(&cfg);
        if (config_read_string(&cfg, wide ? wide : text) != CONFIG_TRUE) {
                if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                        errf(e, 0, path, "cannot read: %s", strerror(errno));
                else if (config_error_file(&cfg))
                        errfl(e, config_error_file(&cfg), config_error_line(&cfg), "syntax", "%s",
                              config_error_text(&cfg));
                else
                        errf(e, config_error_line(&cfg), "syntax", "%s", config_error_text(&cfg));
                config_destroy(&cfg);
                goto out;
        }
        check_known(config_root_setting(&cfg), "", e);
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                config_setting_t *s = config_lookup(&cfg, kt_config_keys[i].path);
                /* A setting from an @include'd file: its errors name that file. (What is
                 * kept as its source for later messages is the line only.) */
                const char *from = s ? config_setting_source_file(s) : NULL;

                e->file = from ? from : path;
                if (s)
                        set_file(conf, &kt_config_keys[i], s, e);
                e->file = path;
        }
        config_destroy(&cfg);
        rc = 0;
out:
        free(w.at);
        free(wide);
        free(text);
        return rc;
}

/* ---------------------------------------------------------------- environment, flags */

static const char *env_get(const char *name) {
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

static void env_set(kt_config_t *conf, const char *path, const char *var, const char *text,
                    errs_t *e) {
        kt_config_source_t src = {KT_ORIGIN_ENV, 0, ""};

        snprintf(src.name, sizeof(src.name), "%.63s", var);
        set_text(conf, kt_config_key_find(path), text, &src, e);
}

/** The Kubeless runtime's variables, then KTRIGGER_<PATH> for every key (more specific: wins). */
static void load_env(kt_config_t *conf, errs_t *e) {
        const char *func = env_get("FUNC_HANDLER"), *mod = env_get("MOD_NAME"), *v;

        if (func) {
                char *h = kt_config_handler_resolve(func, mod);
                kt_config_source_t src = {KT_ORIGIN_ENV, 0, "FUNC_HANDLER"};
                if (!h)
                        errs_at(e, &src, "function.handler",
                                "'%s' is not module.function and MOD_NAME is not set", func);
                else
                        env_set(conf, "function.handler", "FUNC_HANDLER", h, e);
                free(h);
        }
        if ((v = env_get("TOPIC_NAME")))
                env_set(conf, "kafka.topics", "TOPIC_NAME", v, e);
        if ((v = env_get("KAFKA_BROKERS")))
                env_set(conf, "kafka.brokers", "KAFKA_BROKERS", v, e);
        else if (env_get("KUBELESS_KAFKA_SVC") || env_get("KUBELESS_KAFKA_NAMESPACE")) {
                const char *svc = env_get("KUBELESS_KAFKA_SVC"),
                           *ns = env_get("KUBELESS_KAFKA_NAMESPACE");
                char buf[512];
                snprintf(buf, sizeof(buf), "%s.%s:9092", svc ? svc : "kafka", ns ? ns : "kubeless");
                env_set(conf, "kafka.brokers",
                        svc ? "KUBELESS_KAFKA_SVC" : "KUBELESS_KAFKA_NAMESPACE", buf, e);
        }
        if ((v = env_get("FUNC_PORT")))
                env_set(conf, "runtime.port", "FUNC_PORT", v, e);
        if ((v = env_get("FUNC_TIMEOUT")))
                env_set(conf, "runtime.timeout_s", "FUNC_TIMEOUT", v, e);
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                char var[96];
                kt_config_key_env(&kt_config_keys[i], var, sizeof(var));
                if ((v = env_get(var)))
                        env_set(conf, kt_config_keys[i].path, var, v, e);
        }
}

static void load_sets(kt_config_t *conf, char *const *sets, size_t cnt, errs_t *e) {
        kt_config_source_t src = {KT_ORIGIN_FLAG, 0, ""};

        for (size_t i = 0; i < cnt; i++) {
                const char *eq = strchr(sets[i], '=');
                char path[128];
                const kt_config_key_t *k;

                if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof(path)) {
                        errf(e, 0, "--set", "'%s' is not key=value", sets[i]);
                        continue;
                }
                snprintf(path, sizeof(path), "%.*s", (int)(eq - sets[i]), sets[i]);
                if (!(k = kt_config_key_find(path))) {
                        errf(e, 0, "--set",
                             "unknown key '%s' (ktrigger --describe-config lists them)", path);
                        continue;
                }
                set_text(conf, k, eq + 1, &src, e);
        }
}

/* ---------------------------------------------------------------- validation */

/** A ':' in runtime.host is only an IPv6 address (written without brackets). */
static int host_is_ipv6(const char *host) {
        struct in6_addr a;
        return inet_pton(AF_INET6, host, &a) == 1;
}

/**
 * kafka.zookeeper is `host:port[,host:port...][/chroot]`, as ZooKeeper's clients take it.
 * @returns NULL if valid, else why not.
 */
static const char *zookeeper_invalid(const char *zk, char *why, size_t why_size) {
        const char *chroot = strchr(zk, '/'), *p = zk, *end = chroot ? chroot : zk + strlen(zk);

        if (p == end)
                return "no host:port";
        while (p < end) {
                const char *comma = memchr(p, ',', (size_t)(end - p));
                size_t len = comma ? (size_t)(comma - p) : (size_t)(end - p);
                char *hp, *host = NULL;
                int port;

                if (!(hp = strndup(p, len)))
                        return "out of memory";
                if (kt_config_hostport_parse(hp, &host, &port)) {
                        snprintf(why, why_size, "'%s' is not host:port with a port in 1..65535",
                                 hp);
                        free(hp);
                        return why;
                }
                free(host);
                free(hp);
                if (!comma)
                        break;
                p = comma + 1;
                if (p == end)
                        return "empty host:port after ','";
        }
        if (chroot) {
                if (!chroot[1] || chroot[strlen(chroot) - 1] == '/')
                        return "the chroot must not end with '/'";
                if (strstr(chroot, "//") || strpbrk(chroot, " \t\r\n,"))
                        return "the chroot must be /name[/name...]";
        }
        return NULL;
}

static void zookeeper_validate(kt_config_t *conf, errs_t *e) {
        char why[256];
        const char *bad;

        if (conf->zookeeper && (bad = zookeeper_invalid(conf->zookeeper, why, sizeof(why))))
                errk(e, conf, "kafka.zookeeper",
                     "'%s' is not host:port[,host:port...][/chroot]: %s", conf->zookeeper, bad);
        if (!conf->zookeeper_listener)
                return;
        if (!conf->zookeeper)
                errk(e, conf, "kafka.zookeeper_listener", "needs kafka.zookeeper");
        if (!*conf->zookeeper_listener ||
            strspn(conf->zookeeper_listener, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789_-") != strlen(conf->zookeeper_listener))
                errk(e, conf, "kafka.zookeeper_listener",
                     "'%s' is not a listener name (letters, digits, '_', '-')",
                     conf->zookeeper_listener);
}

static int prop_secret(const char *name);

/** librdkafka's messages quote the value: hide it when it is a secret or came from a
 *  reference (which may name a secret under another property). */
static void redact_in(char *msg, size_t size, const kt_config_prop_t *p) {
        char out[512];
        size_t vlen = strlen(p->value), n = 0;

        if (!vlen || (!prop_secret(p->name) && !(p->raw && strstr(p->raw, "${"))))
                return;
        for (const char *m = msg; *m && n + 1 < sizeof(out);) {
                if (!strncmp(m, p->value, vlen)) {
                        n += (size_t)snprintf(out + n, sizeof(out) - n, "(redacted)");
                        m += vlen;
                } else
                        out[n++] = *m++;
        }
        out[n < sizeof(out) ? n : sizeof(out) - 1] = '\0';
        snprintf(msg, size, "%s", out);
}

/** function.handler is `module.function` (Kubeless: MOD_NAME and FUNC_HANDLER): no empty
 *  part, no blank or control character. @returns NULL if valid, else why not. */
static const char *handler_invalid(const char *h) {
        const char *p;

        if (!strchr(h, '.'))
                return "no '.' between module and function";
        for (p = h; *p; p++)
                if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
                        return "white space or a control character";
        if (h[0] == '.' || strstr(h, "..") || h[strlen(h) - 1] == '.')
                return "an empty module or function name";
        return NULL;
}

/**
 * kafka.brokers as librdkafka reads it: entries separated by ',' or blanks, each
 * `[proto://]host[:port]` (port 9092 if none; IPv6 as [addr]:port).
 * @returns NULL if valid, else why not (in \p why).
 */
static const char *brokers_invalid(const char *list, char *why, size_t why_size) {
        const char *p = list;

        while (*p) {
                size_t n = strcspn(p, ", \t\r\n");
                const char *ent = p, *sep;
                char *hp, *host = NULL;
                int port, bad;

                p += n;
                if (*p)
                        p++;
                if (!n)
                        continue;
                if ((sep = strstr(ent, "://")) && sep < ent + n) {
                        n -= (size_t)(sep + 3 - ent);
                        ent = sep + 3;
                }
                if (!(hp = strndup(ent, n)))
                        return "out of memory";
                if (!strchr(hp, ':') && *hp != '[') /* a host alone */
                        bad = !*hp || strpbrk(hp, "/@?#[]%") != NULL;
                else
                        bad = kt_config_hostport_parse(hp, &host, &port) != 0;
                free(host);
                if (bad) {
                        snprintf(why, why_size,
                                 "'%.200s' is not host:port with a port in 1..65535 "
                                 "(or a host alone: port 9092)",
                                 hp);
                        free(hp);
                        return why;
                }
                free(hp);
        }
        return NULL;
}

/** metrics.listen: host:port, or :port for every (IPv4) interface as Go and Prometheus
 *  write it. Sets metrics_host and metrics_port. @returns 0, -1 if malformed. */
static int listen_parse(kt_config_t *conf) {
        long long port;

        free(conf->metrics_host);
        conf->metrics_host = NULL;
        if (!conf->metrics_listen)
                return -1;
        if (conf->metrics_listen[0] == ':') {
                if (parse_int(conf->metrics_listen + 1, &port) || port < 1 || port > 65535 ||
                    !(conf->metrics_host = strdup("0.0.0.0")))
                        return -1;
                conf->metrics_port = (int)port;
                return 0;
        }
        return kt_config_hostport_parse(conf->metrics_listen, &conf->metrics_host,
                                        &conf->metrics_port);
}

/**
 * librdkafka reads an integer property with strtol() into an int: "4294967360" is accepted as
 * 64. Read a decimal value back after setting it. @returns 0 if it reads back as written (or
 * is not a decimal integer), -1 if it wrapped.
 */
static int prop_wrapped(rd_kafka_conf_t *rkconf, const kt_config_prop_t *p) {
        char back[64];
        size_t size = sizeof(back);
        long long want, got;

        if (parse_int(p->value, &want) ||
            rd_kafka_conf_get(rkconf, p->name, back, &size) != RD_KAFKA_CONF_OK ||
            parse_int(back, &got))
                return 0;
        return want != got;
}

static void validate(kt_config_t *conf, errs_t *e) {
        rd_kafka_conf_t *rkconf;
        char errstr[512], why[320];
        const char *bad;

        /* A key already reported (e.g. FUNC_HANDLER=handler without MOD_NAME) is not also
         * "missing": one mistake, one error. */
        if ((!conf->handler || !*conf->handler) && !key_failed(e, "function.handler"))
                errk(e, conf, "function.handler",
                     "no function handler: set function.handler or FUNC_HANDLER (and MOD_NAME)");
        else if (conf->handler && (bad = handler_invalid(conf->handler)))
                errk(e, conf, "function.handler", "'%.200s' is not module.function: %s",
                     conf->handler, bad);
        if (!conf->topic_cnt && !key_failed(e, "kafka.topics"))
                errk(e, conf, "kafka.topics", "no topic: set kafka.topics or TOPIC_NAME");
        for (size_t i = 0; i < conf->topic_cnt; i++)
                if (!topic_valid(conf->topics[i]))
                        errk(e, conf, "kafka.topics",
                             "'%s' is not a valid topic name (1..249 of a-z A-Z 0-9 . _ -)",
                             conf->topics[i]);
        for (size_t i = 0; i < conf->topic_cnt; i++)
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(conf->topics[i], conf->topics[j]))
                                errk(e, conf, "kafka.topics", "'%s' is listed twice",
                                     conf->topics[i]);
        if ((!conf->brokers || !*conf->brokers) && !conf->zookeeper)
                errk(e, conf, "kafka.brokers", "must not be empty (unless kafka.zookeeper is set)");
        else if (conf->brokers && (bad = brokers_invalid(conf->brokers, why, sizeof(why))))
                errk(e, conf, "kafka.brokers", "%s", bad);
        zookeeper_validate(conf, e);
        if (conf->group_id && !*conf->group_id)
                errk(e, conf, "kafka.group_id", "must not be empty");
        if (!conf->runtime_host || !*conf->runtime_host ||
            strpbrk(conf->runtime_host, "/ \t@?#[]%") ||
            (strchr(conf->runtime_host, ':') && !host_is_ipv6(conf->runtime_host)))
                errk(e, conf, "runtime.host", "'%s' is not a host name or address",
                     conf->runtime_host ? conf->runtime_host : "");
        if (!conf->runtime_path || conf->runtime_path[0] != '/' ||
            strpbrk(conf->runtime_path, " \t\r\n"))
                errk(e, conf, "runtime.path", "must start with '/' and contain no white space");

        if (!conf->runtime_health_path || conf->runtime_health_path[0] != '/' ||
            strpbrk(conf->runtime_health_path, " \t\r\n"))
                errk(e, conf, "runtime.health_path",
                     "must start with '/' and contain no white space");
        {
                /* The shutdown drain does not poll Kafka: past max.poll.interval.ms the member
                 * is dropped and its final commit fails. */
                long long mpi = 300000;
                for (size_t i = 0; i < conf->prop_cnt; i++)
                        if (!strcmp(conf->props[i].name, "max.poll.interval.ms") &&
                            conf->props[i].value)
                                parse_int(conf->props[i].value, &mpi);
                if (conf->drain_timeout_ms >= mpi)
                        errk(e, conf, "dispatch.drain_timeout_ms",
                             "%d must be below max.poll.interval.ms (%lld)", conf->drain_timeout_ms,
                             mpi);
        }
        if (conf->retry_max_backoff_ms < conf->retry_initial_backoff_ms)
                errk(e, conf, "dispatch.retry.max_backoff_ms",
                     "%d is below dispatch.retry.initial_backoff_ms (%d)",
                     conf->retry_max_backoff_ms, conf->retry_initial_backoff_ms);
        if (conf->on_failure == KT_FAIL_DEAD_LETTER &&
            (!conf->dead_letter_topic || !*conf->dead_letter_topic))
                errk(e, conf, "dispatch.on_failure",
                     "\"dead-letter\" needs dispatch.dead_letter_topic");
        if (conf->dead_letter_topic && !topic_valid(conf->dead_letter_topic))
                errk(e, conf, "dispatch.dead_letter_topic", "'%s' is not a valid topic name",
                     conf->dead_letter_topic);
        if (conf->reply_topic && !topic_valid(conf->reply_topic))
                errk(e, conf, "dispatch.reply_topic", "'%s' is not a valid topic name",
                     conf->reply_topic);
        if (conf->reply_topic && conf->batch_max_records > 1)
                errk(e, conf, "dispatch.batch.max_records",
                     "%d (batching) cannot be used with dispatch.reply_topic: a batch's answer "
                     "is its per-entry statuses, not a reply",
                     conf->batch_max_records);
        for (size_t i = 0; conf->reply_topic && i < conf->topic_cnt; i++)
                if (!strcmp(conf->topics[i], conf->reply_topic))
                        errk(e, conf, "dispatch.reply_topic",
                             "'%s' is also a consumed topic: replies would loop",
                             conf->reply_topic);
        for (size_t i = 0; conf->dead_letter_topic && i < conf->topic_cnt; i++)
                if (!strcmp(conf->topics[i], conf->dead_letter_topic))
                        errk(e, conf, "dispatch.dead_letter_topic",
                             "'%s' is also a consumed topic: failures would loop",
                             conf->dead_letter_topic);

        if (listen_parse(conf))
                errk(e, conf, "metrics.listen",
                     "'%.200s' is not host:port or :port with a port in 1..65535",
                     conf->metrics_listen);

        /* librdkafka properties: checked by librdkafka itself, without connecting. */
        rkconf = rd_kafka_conf_new();
        for (size_t i = 0; i < conf->prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->props[i];
                const char *owned_by =
                    owned_why(owned_props, sizeof(owned_props) / sizeof(owned_props[0]), p->name);

                if (owned_by)
                        errs_at(e, &p->src, "kafka.properties", "%s: not settable here: %s",
                                p->name, owned_by);
                else if (p->value && rd_kafka_conf_set(rkconf, p->name, p->value, errstr,
                                                       sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                        redact_in(errstr, sizeof(errstr), p);
                        errs_at(e, &p->src, "kafka.properties", "%s", errstr);
                } else if (p->value && prop_wrapped(rkconf, p))
                        errs_at(e, &p->src, "kafka.properties",
                                "%s: %s does not fit in librdkafka's 32-bit integer", p->name,
                                prop_secret(p->name) ? "(redacted)" : p->value);
        }
        rd_kafka_conf_destroy(rkconf);

        rkconf = rd_kafka_conf_new();
        for (size_t i = 0; i < conf->producer_prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->producer_props[i];
                const char *owned_by = owned_why(
                    owned_producer_props,
                    sizeof(owned_producer_props) / sizeof(owned_producer_props[0]), p->name);
                if (owned_by)
                        errs_at(e, &p->src, "kafka.producer_properties",
                                "%s: not settable here: %s", p->name, owned_by);
                else if (p->value && rd_kafka_conf_set(rkconf, p->name, p->value, errstr,
                                                       sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                        redact_in(errstr, sizeof(errstr), p);
                        errs_at(e, &p->src, "kafka.producer_properties", "%s", errstr);
                } else if (p->value && prop_wrapped(rkconf, p))
                        errs_at(e, &p->src, "kafka.producer_properties",
                                "%s: %s does not fit in librdkafka's 32-bit integer", p->name,
                                prop_secret(p->name) ? "(redacted)" : p->value);
        }
        rd_kafka_conf_destroy(rkconf);
}

static int derive(kt_config_t *conf) {
        int need;
        const char *host = conf->runtime_host;
        int v6 = strchr(host, ':') != NULL;

        if (!conf->group_id && !(conf->group_id = xstrdup(conf->handler)))
                return -1;
        if (conf->static_membership && !conf->instance_id) {
                /* The pod name is stable across restarts of a replica (StatefulSet) or at least
                 * unique; the host name stands in on a VM. */
                const char *pod = getenv("POD_NAME");
                char hostname[256] = "";
                if (!pod || !*pod) {
                        gethostname(hostname, sizeof(hostname) - 1);
                        pod = hostname;
                }
                if (!(conf->instance_id = strdup(pod)))
                        return -1;
        }
        need = snprintf(NULL, 0, "http://%s%s%s:%d%s", v6 ? "[" : "", host, v6 ? "]" : "",
                        conf->runtime_port, conf->runtime_path);
        if (!(conf->runtime_url = malloc((size_t)need + 1)))
                return -1;
        snprintf(conf->runtime_url, (size_t)need + 1, "http://%s%s%s:%d%s", v6 ? "[" : "", host,
                 v6 ? "]" : "", conf->runtime_port, conf->runtime_path);
        need = snprintf(NULL, 0, "http://%s%s%s:%d%s", v6 ? "[" : "", host, v6 ? "]" : "",
                        conf->runtime_port, conf->runtime_health_path);
        if (!(conf->runtime_health_url = malloc((size_t)need + 1)))
                return -1;
        snprintf(conf->runtime_health_url, (size_t)need + 1, "http://%s%s%s:%d%s", v6 ? "[" : "",
                 host, v6 ? "]" : "", conf->runtime_port, conf->runtime_health_path);
        return 0;
}

/* ---------------------------------------------------------------- secrets, hash, warnings */

/** Property names whose values are secrets: never printed, never hashed. */
static int prop_secret(const char *name) {
        return strstr(name, "password") || strstr(name, "secret") || strstr(name, ".key") ||
               strstr(name, "sasl.oauthbearer.config");
}

/** What --print-config shows: a secret redacted, a reference as written (never what it
 *  expanded to: it may be a secret under another name), else the value. */
static const char *prop_shown(const kt_config_prop_t *p) {
        if (prop_secret(p->name))
                return "(redacted)";
        return p->raw && strstr(p->raw, "${") ? p->raw : p->value;
}

/** A string value quoted as libconfig would read it. */
static void put_quoted(FILE *f, const char *s) {
        fputc('"', f);
        while (s && *s) { /* runs at once: values may be megabytes */
                size_t n = strcspn(s, "\"\\");
                fwrite(s, 1, n, f);
                s += n;
                if (*s) {
                        fputc('\\', f);
                        fputc(*s++, f);
                }
        }
        fputc('"', f);
}

/**
 * Write the value of \p k. \p shown: as --print-config shows it (secrets redacted, references
 * as written); else the effective values, for comparing two configurations.
 */
static void value_put(FILE *f, const kt_config_t *conf, const kt_config_key_t *k, int shown) {
        const void *fp = (const char *)conf + k->offset;

        switch (k->type) {
        case KT_CONF_STRING:
                if (*(char *const *)fp)
                        put_quoted(f, *(char *const *)fp);
                else
                        fputs("(unset)", f);
                break;
        case KT_CONF_INT:
                fprintf(f, "%d", *(const int *)fp);
                break;
        case KT_CONF_BOOL:
                fputs(*(const int *)fp ? "true" : "false", f);
                break;
        case KT_CONF_ENUM:
                for (size_t i = 0; k->names[i]; i++)
                        if ((k->values ? k->values[i] : (int)i) == *(const int *)fp) {
                                put_quoted(f, k->names[i]); /* the first name, not aliases */
                                break;
                        }
                break;
        case KT_CONF_LIST: {
                char *const *v = *(char **const *)fp;
                size_t cnt = *(const size_t *)((const char *)conf + k->offset_cnt);
                fputc('[', f);
                for (size_t i = 0; i < cnt; i++) {
                        fputs(i ? ", " : " ", f);
                        put_quoted(f, v[i]);
                }
                fputs(" ]", f);
                break;
        }
        case KT_CONF_PROPS: {
                const kt_config_prop_t *v = *(kt_config_prop_t *const *)fp;
                size_t cnt = *(const size_t *)((const char *)conf + k->offset_cnt);
                fputc('(', f);
                for (size_t i = 0; i < cnt; i++) {
                        fputs(i ? ", (" : " (", f);
                        put_quoted(f, v[i].name);
                        fputs(", ", f);
                        put_quoted(f, shown ? prop_shown(&v[i]) : v[i].value);
                        fputc(')', f);
                }
                fputs(" )", f);
                break;
        }
        }
}

/** FNV-1a, 64 bits. */
static uint64_t fnv1a(const char *s, size_t len) {
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < len; i++) {
                h ^= (unsigned char)s[i];
                h *= 1099511628211ULL;
        }
        return h;
}

/** The hash of every setting as shown (secrets redacted, so the label cannot leak them). */
static void hash_set(kt_config_t *conf) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return;
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                fprintf(f, "%s=", kt_config_keys[i].path);
                value_put(f, conf, &kt_config_keys[i], 1);
                fputc('\n', f);
        }
        if (!fclose(f))
                snprintf(conf->hash, sizeof(conf->hash), "%016llx",
                         (unsigned long long)fnv1a(buf, len));
        free(buf);
}

static void warn(kt_config_t *conf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(kt_config_t *conf, const char *fmt, ...) {
        char msg[768];
        size_t old = conf->warnings ? strlen(conf->warnings) : 0;
        char *n;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (!(n = realloc(conf->warnings, old + strlen(msg) + 2)))
                return;
        conf->warnings = n;
        snprintf(n + old, strlen(msg) + 2, "%s%s", old ? "\n" : "", msg);
}

/** A file that others may read must not hold a literal secret. */
static void warn_secrets(kt_config_t *conf, const char *path) {
        struct stat st;
        const kt_config_prop_t *lists[2] = {conf->props, conf->producer_props};
        size_t cnts[2] = {conf->prop_cnt, conf->producer_prop_cnt};

        if (!path || stat(path, &st) || !(st.st_mode & (S_IRGRP | S_IROTH)))
                return;
        for (int l = 0; l < 2; l++)
                for (size_t i = 0; i < cnts[l]; i++) {
                        const kt_config_prop_t *p = &lists[l][i];
                        if (p->src.origin == KT_ORIGIN_FILE && prop_secret(p->name) && p->raw &&
                            !strstr(p->raw, "${"))
                                warn(conf,
                                     "%s:%d: %s: %s holds a literal secret in a file readable by "
                                     "%s (mode %03o): use \"${file:PATH}\" or \"${ENV_VAR}\", or "
                                     "chmod o-r,g-r",
                                     path, p->line,
                                     l ? "kafka.producer_properties" : "kafka.properties", p->name,
                                     st.st_mode & S_IROTH ? "other users" : "its group",
                                     (unsigned)(st.st_mode & 0777));
                }
}

/** A message.max.bytes set for the producer that a reply may not fit: the producer refuses
 *  such a reply for good, and dispatch.on_failure decides (by default the producer is sized
 *  to fit, see kt_produce_new). */
static void warn_producer_size(kt_config_t *conf, const char *path) {
        for (size_t i = 0; conf->reply_topic && i < conf->producer_prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->producer_props[i];
                long long n;

                if (strcmp(p->name, "message.max.bytes") || !p->value)
                        continue;
                n = strtoll(p->value, NULL, 10);
                if (n >= KT_MAX_RESPONSE_BYTES + KT_PRODUCE_HEADER_ROOM)
                        continue;
                if (p->src.origin == KT_ORIGIN_FILE && path)
                        warn(conf,
                             "%s:%d: kafka.producer_properties: message.max.bytes: %lld is under "
                             "the largest reply (%d bytes and %d for headers): a larger reply "
                             "is refused and handled by dispatch.on_failure",
                             path, p->line, n, KT_MAX_RESPONSE_BYTES, KT_PRODUCE_HEADER_ROOM);
                else
                        warn(conf,
                             "kafka.producer_properties: message.max.bytes: %lld is under the "
                             "largest reply (%d bytes and %d for headers): a larger reply is "
                             "refused and handled by dispatch.on_failure",
                             n, KT_MAX_RESPONSE_BYTES, KT_PRODUCE_HEADER_ROOM);
        }
}

/* ---------------------------------------------------------------- loading */

kt_config_t *kt_config_load(const char *path, char *errstr, size_t errstr_size) {
        return kt_config_load_with(path, NULL, 0, errstr, errstr_size);
}

kt_config_t *kt_config_load_with(const char *path, char *const *sets, size_t set_cnt, char *errstr,
                                 size_t errstr_size) {
        return kt_config_load_ex(path, sets, set_cnt, errstr, errstr_size, NULL);
}

kt_config_t *kt_config_load_ex(const char *path, char *const *sets, size_t set_cnt, char *errstr,
                               size_t errstr_size, int *log_jsonp) {
        kt_config_t *conf = NULL;
        unsigned char *failed = calloc(kt_config_key_cnt, 1);
        errs_t e = {errstr, errstr_size, 0, 0, path, failed, 0};
        kt_config_source_t def = {KT_ORIGIN_DEFAULT, 0, ""};

        if (errstr_size)
                errstr[0] = '\0';
        if (log_jsonp)
                *log_jsonp = 0;
        if (!failed || !(conf = calloc(1, sizeof(*conf))) ||
            !(conf->sources = calloc(kt_config_key_cnt, sizeof(*conf->sources))) ||
            (set_cnt && !(conf->sets = calloc(set_cnt, sizeof(*conf->sets))))) {
                errf(&e, 0, "config", "out of memory");
                kt_config_destroy(conf);
                free(failed);
                return NULL;
        }
        for (size_t i = 0; i < set_cnt; i++)
                if ((conf->sets[i] = strdup(sets[i])))
                        conf->set_cnt++;
        conf->path = xstrdup(path);
        for (size_t i = 0; i < kt_config_key_cnt; i++)
                if (kt_config_keys[i].def)
                        set_text(conf, &kt_config_keys[i], kt_config_keys[i].def, &def, &e);

        if (path && load_file(conf, path, &e)) {
                /* The environment may still say how to log the errors. */
                load_env(conf, &e);
                if (log_jsonp)
                        *log_jsonp = conf->log_json;
                kt_config_destroy(conf);
                free(failed);
                return NULL;
        }
        load_env(conf, &e);
        load_sets(conf, sets, set_cnt, &e);

        /* With discovery, the default broker list is not a broker: only what ZooKeeper says. */
        if (conf->zookeeper && source_of(conf, "kafka.brokers")->origin == KT_ORIGIN_DEFAULT) {
                free(conf->brokers);
                conf->brokers = strdup("");
        }
        validate(conf, &e);
        if (!e.cnt && derive(conf))
                errf(&e, 0, "config", "out of memory");
        free(failed);
        if (e.cnt) {
                if (log_jsonp)
                        *log_jsonp = conf->log_json;
                kt_config_destroy(conf);
                return NULL;
        }
        warn_secrets(conf, path);
        warn_producer_size(conf, path);
        hash_set(conf);
        return conf;
}

int kt_config_diff(const kt_config_t *a, const kt_config_t *b, char *changed, size_t size) {
        int worst = -1;
        size_t len = 0;

        if (size)
                changed[0] = '\0';
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                char *va = NULL, *vb = NULL;
                size_t la = 0, lb = 0;
                FILE *fa = open_memstream(&va, &la), *fb = open_memstream(&vb, &lb);
                int differ = 1;

                int ok = fa && fb;

                if (fa) {
                        value_put(fa, a, k, 0);
                        ok = !fclose(fa) && ok;
                }
                if (fb) {
                        value_put(fb, b, k, 0);
                        ok = !fclose(fb) && ok;
                }
                if (ok)
                        differ = la != lb || memcmp(va, vb, la);
                free(va);
                free(vb);
                if (!differ)
                        continue;
                if ((int)k->reload > worst)
                        worst = (int)k->reload;
                if (len < size)
                        len += (size_t)snprintf(changed + len, size - len, "%s%s", len ? ", " : "",
                                                k->path);
        }
        return worst;
}

void kt_config_destroy(kt_config_t *conf) {
        if (!conf)
                return;
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                if (k->type == KT_CONF_STRING)
                        free(*(char **)field(conf, k));
                else if (k->type == KT_CONF_LIST)
                        list_free(field(conf, k), field_cnt(conf, k));
                else if (k->type == KT_CONF_PROPS)
                        props_free(field(conf, k), field_cnt(conf, k));
        }
        for (size_t i = 0; i < conf->set_cnt; i++)
                free(conf->sets[i]);
        free(conf->sets);
        free(conf->path);
        free(conf->runtime_health_url);
        free(conf->instance_id);
        free(conf->runtime_url);
        free(conf->metrics_host);
        free(conf->sources);
        free(conf->warnings);
        free(conf);
}

static void source_put(FILE *f, const kt_config_t *conf, const kt_config_source_t *src) {
        switch (src->origin) {
        case KT_ORIGIN_DEFAULT:
                fputs("default", f);
                break;
        case KT_ORIGIN_FILE:
                fprintf(f, "%s:%d", conf->path ? conf->path : "file", src->line);
                break;
        case KT_ORIGIN_ENV:
                fprintf(f, "env %s", src->name);
                break;
        case KT_ORIGIN_FLAG:
                fputs("--set", f);
                break;
        }
}

void kt_config_print(const kt_config_t *conf, FILE *out) {
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];

                if (k->type == KT_CONF_PROPS) {
                        const kt_config_prop_t *v =
                            *(kt_config_prop_t *const *)((const char *)conf + k->offset);
                        size_t cnt = *(const size_t *)((const char *)conf + k->offset_cnt);
                        for (size_t j = 0; j < cnt; j++) {
                                fprintf(out, "%s.\"%s\" = ", k->path, v[j].name);
                                put_quoted(out, prop_shown(&v[j]));
                                fputs("  # ", out);
                                source_put(out, conf, &v[j].src);
                                fputc('\n', out);
                        }
                        continue;
                }
                fprintf(out, "%s = ", k->path);
                value_put(out, conf, k, 1);
                fputs("  # ", out);
                if (k->type == KT_CONF_STRING && !strcmp(k->path, "kafka.group_id") &&
                    conf->sources[i].origin == KT_ORIGIN_DEFAULT)
                        fputs("default: function.handler", out);
                else
                        source_put(out, conf, &conf->sources[i]);
                fputc('\n', out);
        }
        fprintf(out, "runtime.url = \"%s\"  # derived\n", conf->runtime_url);
        fprintf(out, "runtime.health_url = \"%s\"  # derived\n", conf->runtime_health_url);
        if (conf->instance_id)
                fprintf(out, "kafka.group_instance_id = \"%s\"  # derived\n", conf->instance_id);
        fprintf(out, "config.hash = \"%s\"  # derived\n", conf->hash);
}

/* ---------------------------------------------------------------- the resolved text */

static void source_render(FILE *f, const kt_config_source_t *src) {
        fprintf(f, "%d, %d, ", (int)src->origin, src->line);
        put_quoted(f, src->name);
}

int kt_config_render(const kt_config_t *conf, FILE *out) {
        fputs("kt_render = 1;\n", out);
        if (conf->path) {
                fputs("path = ", out);
                put_quoted(out, conf->path);
                fputs(";\n", out);
        }
        if (conf->warnings) {
                fputs("warnings = ", out);
                put_quoted(out, conf->warnings);
                fputs(";\n", out);
        }
        if (conf->instance_id) {
                fputs("instance_id = ", out);
                put_quoted(out, conf->instance_id);
                fputs(";\n", out);
        }
        fputs("sets = [", out);
        for (size_t i = 0; i < conf->set_cnt; i++) {
                fputs(i ? ", " : " ", out);
                put_quoted(out, conf->sets[i]);
        }
        fputs(" ];\nvalues = (", out);
        for (size_t i = 0, n = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                const void *fp = (const char *)conf + k->offset;

                if (k->type == KT_CONF_STRING && !*(char *const *)fp)
                        continue; /* unset */
                fputs(n++ ? ",\n  (" : "\n  (", out);
                put_quoted(out, k->path);
                fputs(", ", out);
                switch (k->type) {
                case KT_CONF_STRING:
                        put_quoted(out, *(char *const *)fp);
                        break;
                case KT_CONF_INT:
                case KT_CONF_BOOL:
                case KT_CONF_ENUM:
                        fprintf(out, "%d", *(const int *)fp);
                        break;
                case KT_CONF_LIST: {
                        char *const *v = *(char **const *)fp;
                        size_t cnt = *(const size_t *)((const char *)conf + k->offset_cnt);
                        fputc('[', out);
                        for (size_t j = 0; j < cnt; j++) {
                                fputs(j ? ", " : " ", out);
                                put_quoted(out, v[j]);
                        }
                        fputs(" ]", out);
                        break;
                }
                case KT_CONF_PROPS:
                        fputs("()", out);
                        break;
                }
                fputs(", ", out);
                source_render(out, &conf->sources[i]);
                fputc(')', out);
        }
        fputs("\n);\nprops = (", out);
        for (size_t i = 0, n = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                const kt_config_prop_t *v;
                size_t cnt;

                if (k->type != KT_CONF_PROPS)
                        continue;
                v = *(kt_config_prop_t *const *)((const char *)conf + k->offset);
                cnt = *(const size_t *)((const char *)conf + k->offset_cnt);
                for (size_t j = 0; j < cnt; j++) {
                        fputs(n++ ? ",\n  (" : "\n  (", out);
                        put_quoted(out, k->path);
                        fputs(", ", out);
                        put_quoted(out, v[j].name);
                        fputs(", ", out);
                        put_quoted(out, v[j].value);
                        fputs(", ", out);
                        put_quoted(out, v[j].raw);
                        fprintf(out, ", %d, ", v[j].line);
                        source_render(out, &v[j].src);
                        fputc(')', out);
                }
        }
        fputs("\n);\n", out);
        return ferror(out) ? -1 : 0;
}

/** A source from elements \p at.. of list \p s. @returns 0, -1 if malformed. */
static int source_parse(const config_setting_t *s, int at, kt_config_source_t *src) {
        const char *name = config_setting_get_string_elem(s, at + 2);

        src->origin = (kt_config_origin_t)config_setting_get_int_elem(s, at);
        src->line = config_setting_get_int_elem(s, at + 1);
        if (!name || src->origin < KT_ORIGIN_DEFAULT || src->origin > KT_ORIGIN_FLAG)
                return -1;
        snprintf(src->name, sizeof(src->name), "%s", name);
        return 0;
}

static const char *str_of(const config_t *cfg, const char *path) {
        const char *v = NULL;
        return config_lookup_string(cfg, path, &v) == CONFIG_TRUE ? v : NULL;
}

kt_config_t *kt_config_from_render(const char *text, char *errstr, size_t errstr_size) {
        config_t cfg;
        config_setting_t *vals, *props, *sets;
        kt_config_t *conf = NULL;
        const char *why = "malformed";
        int ok = 0;

        config_init(&cfg);
        if (config_read_string(&cfg, text) != CONFIG_TRUE) {
                snprintf(errstr, errstr_size, "config: the reader's answer does not parse: %d: %s",
                         config_error_line(&cfg), config_error_text(&cfg));
                config_destroy(&cfg);
                return NULL;
        }
        vals = config_lookup(&cfg, "values");
        props = config_lookup(&cfg, "props");
        sets = config_lookup(&cfg, "sets");
        if (!vals || !props || !sets || !(conf = calloc(1, sizeof(*conf))) ||
            !(conf->sources = calloc(kt_config_key_cnt, sizeof(*conf->sources))))
                goto out;
        conf->path = xstrdup(str_of(&cfg, "path"));
        conf->warnings = xstrdup(str_of(&cfg, "warnings"));
        conf->instance_id = xstrdup(str_of(&cfg, "instance_id"));
        if (config_setting_length(sets) &&
            !(conf->sets = calloc((size_t)config_setting_length(sets), sizeof(*conf->sets))))
                goto out;
        for (int i = 0; i < config_setting_length(sets); i++) {
                const char *v = config_setting_get_string_elem(sets, i);
                if (!v || !(conf->sets[conf->set_cnt] = strdup(v)))
                        goto out;
                conf->set_cnt++;
        }
        for (int i = 0; i < config_setting_length(vals); i++) {
                config_setting_t *v = config_setting_get_elem(vals, (unsigned)i), *val;
                const char *name = config_setting_get_string_elem(v, 0);
                const kt_config_key_t *k = name ? kt_config_key_find(name) : NULL;

                if (!k || config_setting_length(v) != 5 || !(val = config_setting_get_elem(v, 1)) ||
                    source_parse(v, 2, &conf->sources[k - kt_config_keys])) {
                        why = "a malformed value";
                        goto out;
                }
                switch (k->type) {
                case KT_CONF_STRING:
                        free(*(char **)field(conf, k));
                        if (!config_setting_get_string(val) ||
                            !(*(char **)field(conf, k) = strdup(config_setting_get_string(val))))
                                goto out;
                        break;
                case KT_CONF_INT:
                case KT_CONF_BOOL:
                case KT_CONF_ENUM:
                        *(int *)field(conf, k) = config_setting_get_int(val);
                        break;
                case KT_CONF_LIST:
                        list_free(field(conf, k), field_cnt(conf, k));
                        for (int j = 0; j < config_setting_length(val); j++) {
                                const char *t = config_setting_get_string_elem(val, j);
                                if (!t ||
                                    list_add(field(conf, k), field_cnt(conf, k), t, strlen(t)))
                                        goto out;
                        }
                        break;
                case KT_CONF_PROPS:
                        break;
                }
        }
        for (int i = 0; i < config_setting_length(props); i++) {
                config_setting_t *v = config_setting_get_elem(props, (unsigned)i);
                const char *key = config_setting_get_string_elem(v, 0),
                           *name = config_setting_get_string_elem(v, 1),
                           *value = config_setting_get_string_elem(v, 2),
                           *raw = config_setting_get_string_elem(v, 3);
                const kt_config_key_t *k = key ? kt_config_key_find(key) : NULL;
                kt_config_prop_t **vp, *n, *p;
                size_t *cntp;

                if (!k || k->type != KT_CONF_PROPS || !name || !value || !raw ||
                    config_setting_length(v) != 8) {
                        why = "a malformed property";
                        goto out;
                }
                vp = field(conf, k);
                cntp = field_cnt(conf, k);
                if (!(n = realloc(*vp, (*cntp + 1) * sizeof(*n))))
                        goto out;
                *vp = n;
                p = &n[(*cntp)++];
                memset(p, 0, sizeof(*p));
                p->line = config_setting_get_int_elem(v, 4);
                if (!(p->name = strdup(name)) || !(p->value = strdup(value)) ||
                    !(p->raw = strdup(raw)) || source_parse(v, 5, &p->src))
                        goto out;
        }
        why = "out of memory";
        if (listen_parse(conf) || derive(conf))
                goto out;
        hash_set(conf);
        ok = 1;
out:
        config_destroy(&cfg);
        if (!ok) {
                snprintf(errstr, errstr_size, "config: the reader's answer is %s", why);
                kt_config_destroy(conf);
                return NULL;
        }
        return conf;
}
