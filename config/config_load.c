/*
 * Configuration loading: libconfig file, then Kubeless environment, then validation.
 *
 * Every problem is collected (not just the first) so an operator fixes a file in one round;
 * each carries `file:line: key:` when it came from the file. Nothing here connects anywhere.
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "../core/core.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Defaults (documented in config/ktrigger.conf.example). */
#define DEF_RUNTIME_HOST             "127.0.0.1"
#define DEF_RUNTIME_PORT             8080
#define DEF_RUNTIME_PATH             "/"
#define DEF_TIMEOUT_S                180
#define DEF_MAX_IN_FLIGHT            64
#define DEF_DRAIN_TIMEOUT_MS         30000
#define DEF_HEALTH_PATH              "/healthz"
#define DEF_RETRY_INITIAL_BACKOFF_MS 100
#define DEF_RETRY_MAX_ATTEMPTS       5
#define DEF_PARTITION_BUFFER_BYTES   (1024 * 1024)
#define DEF_RETRY_MAX_BACKOFF_MS     30000
#define DEF_PARTITION_BUFFER_RECORDS 1000
#define DEF_METRICS_LISTEN           "0.0.0.0:9464"

/** Collected errors, newline separated. */
typedef struct errs {
        char *buf;
        size_t size;
        size_t len;
        int cnt;
        const char *file;
} errs_t;

static void errf(errs_t *e, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void errf(errs_t *e, int line, const char *key, const char *fmt, ...) {
        char msg[512];
        int n;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        e->cnt++;
        if (e->len >= e->size)
                return;
        if (line > 0 && e->file)
                n = snprintf(e->buf + e->len, e->size - e->len, "%s%s:%d: %s: %s",
                             e->len ? "\n" : "", e->file, line, key, msg);
        else
                n = snprintf(e->buf + e->len, e->size - e->len, "%s%s: %s", e->len ? "\n" : "", key,
                             msg);
        if (n > 0)
                e->len += (size_t)n;
        if (e->len > e->size)
                e->len = e->size;
}

/** libconfig keeps lines as unsigned short. */
static int src_line(const config_setting_t *s) {
        return (int)config_setting_source_line(s);
}

static char *xstrdup(const char *s) {
        return s ? strdup(s) : NULL;
}

static void set_str(char **dst, const char *src) {
        free(*dst);
        *dst = xstrdup(src);
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

static void topics_free(kt_config_t *conf) {
        for (size_t i = 0; i < conf->topic_cnt; i++)
                free(conf->topics[i]);
        free(conf->topics);
        conf->topics = NULL;
        conf->topic_cnt = 0;
}

static int topics_add(kt_config_t *conf, const char *t) {
        char **n = realloc(conf->topics, (conf->topic_cnt + 1) * sizeof(*n));
        if (!n)
                return -1;
        conf->topics = n;
        if (!(conf->topics[conf->topic_cnt] = strdup(t)))
                return -1;
        conf->topic_cnt++;
        return 0;
}

/** Split a comma-separated topic list (TOPIC_NAME) into conf->topics. */
static void topics_from_list(kt_config_t *conf, const char *list, errs_t *e, const char *key) {
        const char *p = list;

        topics_free(conf);
        while (*p) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                char *t;

                while (len && isspace((unsigned char)*p)) {
                        p++;
                        len--;
                }
                while (len && isspace((unsigned char)p[len - 1]))
                        len--;
                if (len) {
                        if (!(t = strndup(p, len)) || topics_add(conf, t))
                                errf(e, 0, key, "out of memory");
                        free(t);
                }
                if (!end)
                        break;
                p = end + 1;
        }
}

/* ---------------------------------------------------------------- references */

/** The largest secret file read through ${file:PATH}. */
#define KT_MAX_SECRET_FILE_BYTES 65536

/**
 * Expand `${NAME}` (an environment variable) and `${file:PATH}` (a file's content, one
 * trailing newline dropped) in \p in, so secrets need not be written in the config file.
 * @returns a new string, or NULL after reporting the problem to \p e.
 */
static char *expand_refs(const char *in, errs_t *e, int line, const char *key) {
        size_t cap = strlen(in) + 1, len = 0;
        char *out = malloc(cap);
        const char *p = in;

        if (!out)
                return NULL;
        while (*p) {
                const char *end, *val = NULL;
                char name[256], *fval = NULL;
                size_t vlen, nlen;

                if (p[0] != '$' || p[1] != '{' || !(end = strchr(p + 2, '}'))) {
                        out[len++] = *p++;
                        continue;
                }
                nlen = (size_t)(end - (p + 2));
                if (nlen == 0 || nlen >= sizeof(name)) {
                        errf(e, line, key, "bad reference '%.*s'", (int)(end - p + 1), p);
                        goto fail;
                }
                memcpy(name, p + 2, nlen);
                name[nlen] = '\0';
                if (!strncmp(name, "file:", 5)) {
                        FILE *f = fopen(name + 5, "r");
                        size_t n;
                        if (!f) {
                                errf(e, line, key, "cannot read %s: %s", name + 5, strerror(errno));
                                goto fail;
                        }
                        fval = malloc(KT_MAX_SECRET_FILE_BYTES + 1);
                        n = fval ? fread(fval, 1, KT_MAX_SECRET_FILE_BYTES + 1, f) : 0;
                        fclose(f);
                        if (!fval || n > KT_MAX_SECRET_FILE_BYTES) {
                                errf(e, line, key, "%s is larger than %d bytes", name + 5,
                                     KT_MAX_SECRET_FILE_BYTES);
                                free(fval);
                                goto fail;
                        }
                        if (n && fval[n - 1] == '\n')
                                n--;
                        fval[n] = '\0';
                        val = fval;
                } else {
                        for (size_t i = 0; i < nlen; i++)
                                if (!(isalnum((unsigned char)name[i]) || name[i] == '_')) {
                                        errf(e, line, key,
                                             "bad reference '${%s}': a variable "
                                             "name or file:PATH",
                                             name);
                                        goto fail;
                                }
                        if (!(val = getenv(name))) {
                                errf(e, line, key, "environment variable %s is not set", name);
                                goto fail;
                        }
                }
                vlen = strlen(val);
                if (len + vlen + strlen(end + 1) + 1 > cap) {
                        char *n2;
                        cap = len + vlen + strlen(end + 1) + 1;
                        if (!(n2 = realloc(out, cap))) {
                                free(fval);
                                goto fail;
                        }
                        out = n2;
                }
                memcpy(out + len, val, vlen);
                len += vlen;
                free(fval);
                p = end + 1;
        }
        out[len] = '\0';
        return out;
fail:
        free(out);
        return NULL;
}

/* ---------------------------------------------------------------- the file */

/** Keys each group accepts (a nested group is listed as its own path): anything else is a typo
 *  and an error. */
static const struct {
        const char *group;
        const char *keys[12];
} known_keys[] = {
    {"function", {"handler"}},
    {"kafka",
     {"brokers", "topics", "group_id", "start_from", "properties", "producer_properties",
      "static_membership"}},
    {"runtime", {"host", "port", "path", "timeout_s", "health_path", "wait_at_start"}},
    {"dispatch",
     {"ordering", "max_in_flight", "drain_timeout_ms", "partition_buffer_records",
      "partition_buffer_bytes", "retry", "on_failure", "dead_letter_topic", "reply_topic",
      "event_format"}},
    {"dispatch.retry", {"initial_backoff_ms", "max_backoff_ms", "max_attempts"}},
    {"metrics", {"listen"}},
    {"log", {"level", "format"}},
};
#define KNOWN_CNT (sizeof(known_keys) / sizeof(known_keys[0]))

/** librdkafka properties ktrigger sets itself; setting them would break a guarantee. */
static const struct {
        const char *name;
        const char *instead;
} owned_props[] = {
    {"group.id", "use kafka.group_id"},
    {"bootstrap.servers", "use kafka.brokers"},
    {"metadata.broker.list", "use kafka.brokers"},
    {"auto.offset.reset", "use kafka.start_from"},
    {"enable.auto.offset.store", "ktrigger stores offsets only for finished records"},
    {"enable.partition.eof", "set by ktrigger"},
    {"group.instance.id", "use kafka.static_membership (one id per replica)"},
};

static void file_str(config_t *cfg, const char *key, char **dst, errs_t *e);
static int line_of(config_t *cfg, const char *key);

/** Check the members of group \p grp, known as \p path, against known_keys. */
static void check_group(config_setting_t *grp, const char *path, errs_t *e) {
        size_t gi;

        for (gi = 0; gi < KNOWN_CNT; gi++)
                if (!strcmp(path, known_keys[gi].group))
                        break;
        if (gi == KNOWN_CNT) {
                errf(e, src_line(grp), path, "unknown section");
                return;
        }
        if (!config_setting_is_group(grp)) {
                errf(e, src_line(grp), path, "must be a group: { ... }");
                return;
        }
        for (int j = 0; j < config_setting_length(grp); j++) {
                config_setting_t *s = config_setting_get_elem(grp, (unsigned)j);
                const char *name = config_setting_name(s);
                char sub[128];
                int found = 0;

                for (size_t k = 0; k < 12 && known_keys[gi].keys[k]; k++)
                        if (!strcmp(name, known_keys[gi].keys[k]))
                                found = 1;
                if (!found) {
                        errf(e, src_line(s), path, "unknown key '%s'", name);
                        continue;
                }
                snprintf(sub, sizeof(sub), "%s.%s", path, name);
                for (size_t k = 0; k < KNOWN_CNT; k++)
                        if (!strcmp(sub, known_keys[k].group))
                                check_group(s, sub, e);
        }
}

static void check_known(config_t *cfg, errs_t *e) {
        config_setting_t *root = config_root_setting(cfg);

        for (int i = 0; i < config_setting_length(root); i++) {
                config_setting_t *grp = config_setting_get_elem(root, (unsigned)i);
                check_group(grp, config_setting_name(grp), e);
        }
}

/** Read an enumerated string: \p names[i] gives value i. */
static void file_enum(config_t *cfg, const char *key, const char *const *names, size_t cnt,
                      int *dst, errs_t *e) {
        char *v = NULL, list[256] = "";
        size_t len = 0;

        file_str(cfg, key, &v, e);
        if (!v)
                return;
        for (size_t i = 0; i < cnt; i++)
                if (!strcmp(v, names[i])) {
                        *dst = (int)i;
                        free(v);
                        return;
                }
        for (size_t i = 0; i < cnt && len < sizeof(list); i++)
                len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                        names[i]);
        errf(e, line_of(cfg, key), key, "'%s' is not one of: %s", v, list);
        free(v);
}

static void file_str(config_t *cfg, const char *key, char **dst, errs_t *e) {
        config_setting_t *s = config_lookup(cfg, key);

        if (!s)
                return;
        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
                errf(e, src_line(s), key, "must be a string");
                return;
        }
        {
                char *v = expand_refs(config_setting_get_string(s), e, src_line(s), key);
                if (v) {
                        free(*dst);
                        *dst = v;
                }
        }
}

static void file_int(config_t *cfg, const char *key, int *dst, errs_t *e) {
        config_setting_t *s = config_lookup(cfg, key);
        long long v;

        if (!s)
                return;
        if (config_setting_type(s) == CONFIG_TYPE_INT)
                v = config_setting_get_int(s);
        else if (config_setting_type(s) == CONFIG_TYPE_INT64)
                v = config_setting_get_int64(s);
        else {
                errf(e, src_line(s), key, "must be an integer");
                return;
        }
        if (v < INT_MIN || v > INT_MAX) {
                errf(e, src_line(s), key, "%lld is out of range", v);
                return;
        }
        *dst = (int)v;
}

static void file_bool(config_t *cfg, const char *key, int *dst, errs_t *e) {
        config_setting_t *s = config_lookup(cfg, key);

        if (!s)
                return;
        if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
                errf(e, src_line(s), key, "must be true or false");
                return;
        }
        *dst = config_setting_get_bool(s);
}

/** @returns the file line of \p key, 0 if absent. */
static int line_of(config_t *cfg, const char *key) {
        config_setting_t *s = cfg ? config_lookup(cfg, key) : NULL;
        return s ? src_line(s) : 0;
}

static void file_topics(config_t *cfg, kt_config_t *conf, errs_t *e) {
        config_setting_t *s = config_lookup(cfg, "kafka.topics");

        if (!s)
                return;
        if (config_setting_type(s) == CONFIG_TYPE_STRING) {
                topics_from_list(conf, config_setting_get_string(s), e, "kafka.topics");
                return;
        }
        if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
            config_setting_type(s) != CONFIG_TYPE_LIST) {
                errf(e, src_line(s), "kafka.topics", "must be a list of strings: [\"a\", \"b\"]");
                return;
        }
        topics_free(conf);
        for (int i = 0; i < config_setting_length(s); i++) {
                config_setting_t *t = config_setting_get_elem(s, (unsigned)i);
                if (config_setting_type(t) != CONFIG_TYPE_STRING) {
                        errf(e, src_line(s), "kafka.topics", "element %d is not a string", i);
                        continue;
                }
                if (topics_add(conf, config_setting_get_string(t)))
                        errf(e, 0, "kafka.topics", "out of memory");
        }
}

/*
 * kafka.properties: libconfig names cannot contain dots, so librdkafka properties are a list of
 * pairs: properties = ( ("session.timeout.ms", "45000"), ("fetch.wait.max.ms", 10) );
 */
static void file_props(config_t *cfg, const char *key, kt_config_prop_t **propsp, size_t *cntp,
                       errs_t *e) {
        static const char usage[] =
            "must be a list of pairs: ( (\"session.timeout.ms\", \"45000\"), ... )";
        config_setting_t *s = config_lookup(cfg, key);
        int n;

        if (!s)
                return;
        if (!config_setting_is_list(s) && !config_setting_is_array(s)) {
                errf(e, src_line(s), key, "%s", usage);
                return;
        }
        n = config_setting_length(s);
        *propsp = calloc((size_t)n + 1, sizeof(**propsp));
        if (!*propsp) {
                errf(e, 0, key, "out of memory");
                return;
        }
        for (int i = 0; i < n; i++) {
                config_setting_t *pair = config_setting_get_elem(s, (unsigned)i);
                config_setting_t *name, *p;
                char val[64];
                const char *v = val;

                if ((!config_setting_is_list(pair) && !config_setting_is_array(pair)) ||
                    config_setting_length(pair) != 2 ||
                    config_setting_type(name = config_setting_get_elem(pair, 0)) !=
                        CONFIG_TYPE_STRING) {
                        errf(e, src_line(pair), key, "element %d %s", i, usage);
                        continue;
                }
                p = config_setting_get_elem(pair, 1);
                switch (config_setting_type(p)) {
                case CONFIG_TYPE_STRING:
                        v = config_setting_get_string(p);
                        break;
                case CONFIG_TYPE_INT:
                        snprintf(val, sizeof(val), "%d", config_setting_get_int(p));
                        break;
                case CONFIG_TYPE_INT64:
                        snprintf(val, sizeof(val), "%lld", config_setting_get_int64(p));
                        break;
                case CONFIG_TYPE_BOOL:
                        snprintf(val, sizeof(val), "%s",
                                 config_setting_get_bool(p) ? "true" : "false");
                        break;
                default:
                        errf(e, src_line(pair), key,
                             "%s: value must be a string, integer or boolean",
                             config_setting_get_string(name));
                        continue;
                }
                (*propsp)[*cntp].name = strdup(config_setting_get_string(name));
                (*propsp)[*cntp].raw = strdup(v);
                (*propsp)[*cntp].value = expand_refs(v, e, src_line(pair), key);
                (*propsp)[*cntp].line = src_line(pair);
                if (!(*propsp)[*cntp].name || !(*propsp)[*cntp].raw)
                        errf(e, 0, key, "out of memory");
                (*cntp)++;
        }
}

/* ---------------------------------------------------------------- environment */

static void env_int(const char *var, int *dst, errs_t *e) {
        const char *v = getenv(var);
        long long n;

        if (!v || !*v)
                return;
        if (parse_int(v, &n) || n < INT_MIN || n > INT_MAX) {
                errf(e, 0, var, "'%s' is not an integer", v);
                return;
        }
        *dst = (int)n;
}

static void apply_env(kt_config_t *conf, errs_t *e) {
        const char *func = getenv("FUNC_HANDLER"), *mod = getenv("MOD_NAME");
        const char *v;

        if (func && *func) {
                char *h = kt_config_handler_resolve(func, mod);
                if (!h)
                        errf(e, 0, "FUNC_HANDLER",
                             "'%s' is not module.function and MOD_NAME is not set", func);
                else {
                        free(conf->handler);
                        conf->handler = h;
                }
        }
        if ((v = getenv("TOPIC_NAME")) && *v)
                topics_from_list(conf, v, e, "TOPIC_NAME");
        if ((v = getenv("KAFKA_BROKERS")) && *v)
                set_str(&conf->brokers, v);
        else if ((getenv("KUBELESS_KAFKA_SVC") && *getenv("KUBELESS_KAFKA_SVC")) ||
                 (getenv("KUBELESS_KAFKA_NAMESPACE") && *getenv("KUBELESS_KAFKA_NAMESPACE"))) {
                const char *svc = getenv("KUBELESS_KAFKA_SVC"),
                           *ns = getenv("KUBELESS_KAFKA_NAMESPACE");
                char buf[512];
                snprintf(buf, sizeof(buf), "%s.%s:9092", svc && *svc ? svc : "kafka",
                         ns && *ns ? ns : "kubeless");
                set_str(&conf->brokers, buf);
        }
        env_int("FUNC_PORT", &conf->runtime_port, e);
        env_int("FUNC_TIMEOUT", &conf->timeout_s, e);
        if ((v = getenv("KTRIGGER_METRICS_LISTEN")) && *v)
                set_str(&conf->metrics_listen, v);
        if ((v = getenv("KTRIGGER_LOG_LEVEL")) && *v) {
                int lvl = kt_log_level_parse(v);
                if (lvl < 0)
                        errf(e, 0, "KTRIGGER_LOG_LEVEL",
                             "'%s' is not a level (error, warning, info, debug)", v);
                else
                        conf->log_level = lvl;
        }
}

/* ---------------------------------------------------------------- validation */

/** A ':' in runtime.host is only an IPv6 address (written without brackets). */
static int host_is_ipv6(const char *host) {
        struct in6_addr a;
        return inet_pton(AF_INET6, host, &a) == 1;
}

static void check_range(errs_t *e, config_t *cfg, const char *key, int v, int lo, int hi) {
        if (v < lo || v > hi)
                errf(e, line_of(cfg, key), key, "%d is outside %d..%d", v, lo, hi);
}

static void validate(kt_config_t *conf, config_t *cfg, errs_t *e) {
        rd_kafka_conf_t *rkconf;
        char errstr[512];

        if (!conf->handler || !*conf->handler)
                errf(e, line_of(cfg, "function.handler"), "function.handler",
                     "no function handler: set function.handler or FUNC_HANDLER (and MOD_NAME)");
        if (!conf->topic_cnt)
                errf(e, line_of(cfg, "kafka.topics"), "kafka.topics",
                     "no topic: set kafka.topics or TOPIC_NAME");
        for (size_t i = 0; i < conf->topic_cnt; i++)
                if (!topic_valid(conf->topics[i]))
                        errf(e, line_of(cfg, "kafka.topics"), "kafka.topics",
                             "'%s' is not a valid topic name (1..249 of a-z A-Z 0-9 . _ -)",
                             conf->topics[i]);
        for (size_t i = 0; i < conf->topic_cnt; i++)
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(conf->topics[i], conf->topics[j]))
                                errf(e, line_of(cfg, "kafka.topics"), "kafka.topics",
                                     "'%s' is listed twice", conf->topics[i]);
        if (!conf->brokers || !*conf->brokers)
                errf(e, line_of(cfg, "kafka.brokers"), "kafka.brokers", "must not be empty");
        if (conf->group_id && !*conf->group_id)
                errf(e, line_of(cfg, "kafka.group_id"), "kafka.group_id", "must not be empty");

        check_range(e, cfg, "runtime.port", conf->runtime_port, 1, 65535);
        check_range(e, cfg, "runtime.timeout_s", conf->timeout_s, 1, 86400);
        if (!conf->runtime_host || !*conf->runtime_host ||
            strpbrk(conf->runtime_host, "/ \t@?#[]%") ||
            (strchr(conf->runtime_host, ':') && !host_is_ipv6(conf->runtime_host)))
                errf(e, line_of(cfg, "runtime.host"), "runtime.host",
                     "'%s' is not a host name or address",
                     conf->runtime_host ? conf->runtime_host : "");
        if (!conf->runtime_path || conf->runtime_path[0] != '/' ||
            strpbrk(conf->runtime_path, " \t\r\n"))
                errf(e, line_of(cfg, "runtime.path"), "runtime.path",
                     "must start with '/' and contain no white space");

        if (!conf->runtime_health_path || conf->runtime_health_path[0] != '/' ||
            strpbrk(conf->runtime_health_path, " \t\r\n"))
                errf(e, line_of(cfg, "runtime.health_path"), "runtime.health_path",
                     "must start with '/' and contain no white space");

        check_range(e, cfg, "dispatch.max_in_flight", conf->max_in_flight, 1, 10000);
        check_range(e, cfg, "dispatch.drain_timeout_ms", conf->drain_timeout_ms, 0, 3600000);
        {
                /* The shutdown drain does not poll Kafka: past max.poll.interval.ms the member
                 * is dropped and its final commit fails. */
                long long mpi = 300000;
                for (size_t i = 0; i < conf->prop_cnt; i++)
                        if (!strcmp(conf->props[i].name, "max.poll.interval.ms") &&
                            conf->props[i].value)
                                parse_int(conf->props[i].value, &mpi);
                if (conf->drain_timeout_ms >= mpi)
                        errf(e, line_of(cfg, "dispatch.drain_timeout_ms"),
                             "dispatch.drain_timeout_ms",
                             "%d must be below max.poll.interval.ms (%lld)", conf->drain_timeout_ms,
                             mpi);
        }
        check_range(e, cfg, "dispatch.partition_buffer_records", conf->partition_buffer_records, 1,
                    1000000);
        check_range(e, cfg, "dispatch.partition_buffer_bytes", conf->partition_buffer_bytes, 1024,
                    1 << 30);
        check_range(e, cfg, "dispatch.retry.initial_backoff_ms", conf->retry_initial_backoff_ms, 1,
                    3600000);
        check_range(e, cfg, "dispatch.retry.max_backoff_ms", conf->retry_max_backoff_ms, 1,
                    3600000);
        if (conf->retry_max_backoff_ms < conf->retry_initial_backoff_ms)
                errf(e, line_of(cfg, "dispatch.retry.max_backoff_ms"),
                     "dispatch.retry.max_backoff_ms",
                     "%d is below dispatch.retry.initial_backoff_ms (%d)",
                     conf->retry_max_backoff_ms, conf->retry_initial_backoff_ms);
        check_range(e, cfg, "dispatch.retry.max_attempts", conf->retry_max_attempts, 1, 1000000);
        if (conf->on_failure == KT_FAIL_DEAD_LETTER &&
            (!conf->dead_letter_topic || !*conf->dead_letter_topic))
                errf(e, line_of(cfg, "dispatch.on_failure"), "dispatch.on_failure",
                     "\"dead-letter\" needs dispatch.dead_letter_topic");
        if (conf->dead_letter_topic && !topic_valid(conf->dead_letter_topic))
                errf(e, line_of(cfg, "dispatch.dead_letter_topic"), "dispatch.dead_letter_topic",
                     "'%s' is not a valid topic name", conf->dead_letter_topic);
        if (conf->reply_topic && !topic_valid(conf->reply_topic))
                errf(e, line_of(cfg, "dispatch.reply_topic"), "dispatch.reply_topic",
                     "'%s' is not a valid topic name", conf->reply_topic);
        for (size_t i = 0; conf->reply_topic && i < conf->topic_cnt; i++)
                if (!strcmp(conf->topics[i], conf->reply_topic))
                        errf(e, line_of(cfg, "dispatch.reply_topic"), "dispatch.reply_topic",
                             "'%s' is also a consumed topic: replies would loop",
                             conf->reply_topic);
        for (size_t i = 0; conf->dead_letter_topic && i < conf->topic_cnt; i++)
                if (!strcmp(conf->topics[i], conf->dead_letter_topic))
                        errf(e, line_of(cfg, "dispatch.dead_letter_topic"),
                             "dispatch.dead_letter_topic",
                             "'%s' is also a consumed topic: failures would loop",
                             conf->dead_letter_topic);

        if (kt_config_hostport_parse(conf->metrics_listen, &conf->metrics_host,
                                     &conf->metrics_port))
                errf(e, line_of(cfg, "metrics.listen"), "metrics.listen",
                     "'%s' is not host:port with a port in 1..65535", conf->metrics_listen);

        /* librdkafka properties: checked by librdkafka itself, without connecting. */
        rkconf = rd_kafka_conf_new();
        for (size_t i = 0; i < conf->prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->props[i];
                int owned = 0;

                for (size_t k = 0; k < sizeof(owned_props) / sizeof(owned_props[0]); k++)
                        if (!strcmp(p->name, owned_props[k].name)) {
                                errf(e, p->line, "kafka.properties", "%s: not settable here: %s",
                                     p->name, owned_props[k].instead);
                                owned = 1;
                        }
                if (!owned && p->value &&
                    rd_kafka_conf_set(rkconf, p->name, p->value, errstr, sizeof(errstr)) !=
                        RD_KAFKA_CONF_OK)
                        errf(e, p->line, "kafka.properties", "%s", errstr);
        }
        rd_kafka_conf_destroy(rkconf);

        rkconf = rd_kafka_conf_new();
        for (size_t i = 0; i < conf->producer_prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->producer_props[i];
                if (!strcmp(p->name, "bootstrap.servers") ||
                    !strcmp(p->name, "metadata.broker.list") ||
                    !strcmp(p->name, "enable.idempotence") || !strcmp(p->name, "acks") ||
                    !strcmp(p->name, "request.required.acks"))
                        errf(e, p->line, "kafka.producer_properties",
                             "%s: not settable here: dead letters need the idempotent producer "
                             "with acks=all on kafka.brokers",
                             p->name);
                else if (p->value && rd_kafka_conf_set(rkconf, p->name, p->value, errstr,
                                                       sizeof(errstr)) != RD_KAFKA_CONF_OK)
                        errf(e, p->line, "kafka.producer_properties", "%s", errstr);
        }
        rd_kafka_conf_destroy(rkconf);
}

static int derive(kt_config_t *conf) {
        int need;
        const char *host = conf->runtime_host;
        int v6 = strchr(host, ':') != NULL;

        if (!conf->group_id && !(conf->group_id = xstrdup(conf->handler)))
                return -1;
        if (conf->static_membership) {
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

kt_config_t *kt_config_load(const char *path, char *errstr, size_t errstr_size) {
        kt_config_t *conf;
        config_t cfg, *cfgp = NULL;
        errs_t e = {errstr, errstr_size, 0, 0, path};
        if (errstr_size)
                errstr[0] = '\0';
        if (!(conf = calloc(1, sizeof(*conf)))) {
                errf(&e, 0, "config", "out of memory");
                return NULL;
        }
        conf->path = xstrdup(path);
        conf->runtime_host = strdup(DEF_RUNTIME_HOST);
        conf->runtime_port = DEF_RUNTIME_PORT;
        conf->runtime_path = strdup(DEF_RUNTIME_PATH);
        conf->timeout_s = DEF_TIMEOUT_S;
        conf->runtime_health_path = strdup(DEF_HEALTH_PATH);
        conf->ordering = KT_ORDER_PARTITION;
        conf->max_in_flight = DEF_MAX_IN_FLIGHT;
        conf->drain_timeout_ms = DEF_DRAIN_TIMEOUT_MS;
        conf->partition_buffer_records = DEF_PARTITION_BUFFER_RECORDS;
        conf->partition_buffer_bytes = DEF_PARTITION_BUFFER_BYTES;
        conf->retry_initial_backoff_ms = DEF_RETRY_INITIAL_BACKOFF_MS;
        conf->retry_max_backoff_ms = DEF_RETRY_MAX_BACKOFF_MS;
        conf->retry_max_attempts = DEF_RETRY_MAX_ATTEMPTS;
        conf->on_failure = KT_FAIL_BLOCK;
        conf->runtime_wait_at_start = 1;
        conf->metrics_listen = strdup(DEF_METRICS_LISTEN);
        conf->start_from = KT_START_EARLIEST;
        conf->log_level = KT_LOG_INFO;
        conf->brokers = strdup("kafka.kubeless:9092");

        if (path) {
                config_init(&cfg);
                cfgp = &cfg;
                if (config_read_file(&cfg, path) != CONFIG_TRUE) {
                        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                                errf(&e, 0, path, "cannot read: %s", strerror(errno));
                        else
                                errf(&e, config_error_line(&cfg), "syntax", "%s",
                                     config_error_text(&cfg));
                        config_destroy(&cfg);
                        kt_config_destroy(conf);
                        return NULL;
                }
                check_known(&cfg, &e);
                file_str(&cfg, "function.handler", &conf->handler, &e);
                file_str(&cfg, "kafka.brokers", &conf->brokers, &e);
                file_topics(&cfg, conf, &e);
                file_str(&cfg, "kafka.group_id", &conf->group_id, &e);
                {
                        char *sf = NULL;
                        file_str(&cfg, "kafka.start_from", &sf, &e);
                        if (sf && !strcmp(sf, "earliest"))
                                conf->start_from = KT_START_EARLIEST;
                        else if (sf && !strcmp(sf, "latest"))
                                conf->start_from = KT_START_LATEST;
                        else if (sf)
                                errf(&e, line_of(&cfg, "kafka.start_from"), "kafka.start_from",
                                     "'%s' is not one of: earliest, latest", sf);
                        free(sf);
                }
                file_props(&cfg, "kafka.properties", &conf->props, &conf->prop_cnt, &e);
                file_props(&cfg, "kafka.producer_properties", &conf->producer_props,
                           &conf->producer_prop_cnt, &e);
                file_str(&cfg, "runtime.host", &conf->runtime_host, &e);
                file_int(&cfg, "runtime.port", &conf->runtime_port, &e);
                file_str(&cfg, "runtime.path", &conf->runtime_path, &e);
                file_int(&cfg, "runtime.timeout_s", &conf->timeout_s, &e);
                {
                        static const char *const orderings[] = {"partition", "key", "none"};
                        static const char *const failures[] = {"block", "skip", "dead-letter"};
                        static const char *const formats[] = {"kubeless", "cloudevents"};
                        int v = (int)conf->ordering;
                        file_enum(&cfg, "dispatch.ordering", orderings, 3, &v, &e);
                        conf->ordering = (kt_ordering_t)v;
                        v = (int)conf->on_failure;
                        file_enum(&cfg, "dispatch.on_failure", failures, 3, &v, &e);
                        conf->on_failure = (kt_on_failure_t)v;
                        v = (int)conf->event_format;
                        file_enum(&cfg, "dispatch.event_format", formats, 2, &v, &e);
                        conf->event_format = (kt_event_format_t)v;
                }
                file_int(&cfg, "dispatch.max_in_flight", &conf->max_in_flight, &e);
                file_int(&cfg, "dispatch.drain_timeout_ms", &conf->drain_timeout_ms, &e);
                file_int(&cfg, "dispatch.partition_buffer_records", &conf->partition_buffer_records,
                         &e);
                file_int(&cfg, "dispatch.partition_buffer_bytes", &conf->partition_buffer_bytes,
                         &e);
                file_int(&cfg, "dispatch.retry.initial_backoff_ms", &conf->retry_initial_backoff_ms,
                         &e);
                file_int(&cfg, "dispatch.retry.max_backoff_ms", &conf->retry_max_backoff_ms, &e);
                file_int(&cfg, "dispatch.retry.max_attempts", &conf->retry_max_attempts, &e);
                file_str(&cfg, "dispatch.dead_letter_topic", &conf->dead_letter_topic, &e);
                file_str(&cfg, "dispatch.reply_topic", &conf->reply_topic, &e);
                file_str(&cfg, "runtime.health_path", &conf->runtime_health_path, &e);
                file_bool(&cfg, "runtime.wait_at_start", &conf->runtime_wait_at_start, &e);
                file_bool(&cfg, "kafka.static_membership", &conf->static_membership, &e);
                {
                        static const char *const log_formats[] = {"text", "json"};
                        file_enum(&cfg, "log.format", log_formats, 2, &conf->log_json, &e);
                }
                file_str(&cfg, "metrics.listen", &conf->metrics_listen, &e);
                {
                        char *lvl = NULL;
                        file_str(&cfg, "log.level", &lvl, &e);
                        if (lvl) {
                                int l = kt_log_level_parse(lvl);
                                if (l < 0)
                                        errf(&e, line_of(&cfg, "log.level"), "log.level",
                                             "'%s' is not a level (error, warning, info, debug)",
                                             lvl);
                                else
                                        conf->log_level = l;
                        }
                        free(lvl);
                }
        }
        apply_env(conf, &e);
        validate(conf, cfgp, &e);
        if (cfgp)
                config_destroy(cfgp);

        if (!e.cnt && derive(conf))
                errf(&e, 0, "config", "out of memory");
        if (e.cnt) {
                kt_config_destroy(conf);
                return NULL;
        }
        return conf;
}

void kt_config_destroy(kt_config_t *conf) {
        if (!conf)
                return;
        free(conf->path);
        free(conf->handler);
        free(conf->brokers);
        topics_free(conf);
        free(conf->group_id);
        for (size_t i = 0; i < conf->prop_cnt; i++) {
                free(conf->props[i].name);
                free(conf->props[i].value);
                free(conf->props[i].raw);
        }
        free(conf->props);
        for (size_t i = 0; i < conf->producer_prop_cnt; i++) {
                free(conf->producer_props[i].name);
                free(conf->producer_props[i].value);
                free(conf->producer_props[i].raw);
        }
        free(conf->producer_props);
        free(conf->runtime_health_path);
        free(conf->runtime_health_url);
        free(conf->dead_letter_topic);
        free(conf->reply_topic);
        free(conf->instance_id);
        free(conf->runtime_host);
        free(conf->runtime_path);
        free(conf->runtime_url);
        free(conf->metrics_listen);
        free(conf->metrics_host);
        free(conf);
}

/** Property names whose values are secrets: never printed. */
static int prop_secret(const char *name) {
        return strstr(name, "password") || strstr(name, "secret") || strstr(name, ".key") ||
               strstr(name, "sasl.oauthbearer.config");
}

/** What --print-config shows: a secret redacted, a reference as written (never what it
 *  expanded to: it may be a secret under another name), else the value. */
static const char *prop_shown(const kt_config_prop_t *p) {
        if (prop_secret(p->name))
                return "(redacted)";
        return strstr(p->raw, "${") ? p->raw : p->value;
}

void kt_config_print(const kt_config_t *conf) {
        printf("function.handler = \"%s\"\n", conf->handler);
        printf("kafka.brokers = \"%s\"\n", conf->brokers);
        printf("kafka.topics = [");
        for (size_t i = 0; i < conf->topic_cnt; i++)
                printf("%s\"%s\"", i ? ", " : " ", conf->topics[i]);
        printf(" ]\n");
        printf("kafka.group_id = \"%s\"\n", conf->group_id);
        printf("kafka.start_from = \"%s\"\n",
               conf->start_from == KT_START_EARLIEST ? "earliest" : "latest");
        for (size_t i = 0; i < conf->prop_cnt; i++)
                printf("kafka.properties.\"%s\" = \"%s\"\n", conf->props[i].name,
                       prop_shown(&conf->props[i]));
        printf("runtime.url = \"%s\"\n", conf->runtime_url);
        printf("runtime.timeout_s = %d\n", conf->timeout_s);
        printf("runtime.health_url = \"%s\"\n", conf->runtime_health_url);
        printf("dispatch.ordering = \"%s\"\n", conf->ordering == KT_ORDER_PARTITION ? "partition"
                                               : conf->ordering == KT_ORDER_KEY     ? "key"
                                                                                    : "none");
        printf("dispatch.max_in_flight = %d\n", conf->max_in_flight);
        printf("dispatch.drain_timeout_ms = %d\n", conf->drain_timeout_ms);
        printf("dispatch.partition_buffer_records = %d\n", conf->partition_buffer_records);
        printf("dispatch.partition_buffer_bytes = %d\n", conf->partition_buffer_bytes);
        printf("dispatch.retry.initial_backoff_ms = %d\n", conf->retry_initial_backoff_ms);
        printf("dispatch.retry.max_backoff_ms = %d\n", conf->retry_max_backoff_ms);
        printf("dispatch.retry.max_attempts = %d\n", conf->retry_max_attempts);
        printf("dispatch.on_failure = \"%s\"\n", conf->on_failure == KT_FAIL_BLOCK ? "block"
                                                 : conf->on_failure == KT_FAIL_SKIP
                                                     ? "skip"
                                                     : "dead-letter");
        if (conf->dead_letter_topic)
                printf("dispatch.dead_letter_topic = \"%s\"\n", conf->dead_letter_topic);
        if (conf->reply_topic)
                printf("dispatch.reply_topic = \"%s\"\n", conf->reply_topic);
        printf("dispatch.event_format = \"%s\"\n",
               conf->event_format == KT_EVENT_KUBELESS ? "kubeless" : "cloudevents");
        for (size_t i = 0; i < conf->producer_prop_cnt; i++)
                printf("kafka.producer_properties.\"%s\" = \"%s\"\n", conf->producer_props[i].name,
                       prop_shown(&conf->producer_props[i]));
        printf("metrics.listen = \"%s\"\n", conf->metrics_listen);
        printf("log.level = %d\n", conf->log_level);
        printf("log.format = \"%s\"\n", conf->log_json ? "json" : "text");
        printf("kafka.static_membership = %s\n", conf->static_membership ? "true" : "false");
        if (conf->instance_id)
                printf("kafka.group_instance_id = \"%s\"\n", conf->instance_id);
        printf("runtime.wait_at_start = %s\n", conf->runtime_wait_at_start ? "true" : "false");
}
