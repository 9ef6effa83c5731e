/*
 * The schema: every setting declared once. Loading, validation of types and ranges, the
 * generic KTRIGGER_<PATH> environment variables, --print-config, --describe-config, reload
 * classes and the example-file test all come from this table; cross-setting rules (e.g. a
 * dead-letter topic for on_failure = "dead-letter") live in config_load.c's validate().
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "../core/core.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(kt_ordering_t) == sizeof(int) && sizeof(kt_on_failure_t) == sizeof(int) &&
                   sizeof(kt_event_format_t) == sizeof(int) &&
                   sizeof(kt_start_from_t) == sizeof(int),
               "enums are stored through an int");

static const char *const start_froms[] = {"earliest", "latest", NULL};
static const char *const orderings[] = {"partition", "key", "none", NULL};
static const char *const failures[] = {"block", "skip", "dead-letter", NULL};
static const char *const formats[] = {"kubeless", "cloudevents", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const log_levels[] = {"error", "warning", "notice", "info",
                                         "debug", "err",     "warn",   NULL};
static const int log_level_values[] = {KT_LOG_ERR,   KT_LOG_WARNING, KT_LOG_NOTICE, KT_LOG_INFO,
                                       KT_LOG_DEBUG, KT_LOG_ERR,     KT_LOG_WARNING};

#define OFF(f)  offsetof(kt_config_t, f)
#define NOCNT   0
#define NORANGE 0, 0
#define NOENUM  NULL, NULL
#define KT_MAXI 2147483647LL

const kt_config_key_t kt_config_keys[] = {
    {"function.handler", KT_CONF_STRING, OFF(handler), NOCNT, NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, "FUNC_HANDLER (with MOD_NAME)",
     "the function, \"module.function\"; names the consumer group. Required"},

    {"kafka.brokers", KT_CONF_STRING, OFF(brokers), NOCNT, "kafka.kubeless:9092", NORANGE, NOENUM,
     KT_RELOAD_REJOIN, "KAFKA_BROKERS, KUBELESS_KAFKA_SVC, KUBELESS_KAFKA_NAMESPACE",
     "bootstrap brokers, comma-separated host:port"},
    {"kafka.zookeeper", KT_CONF_STRING, OFF(zookeeper), NOCNT, NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, NULL,
     "discover brokers from ZooKeeper's /brokers/ids: host:port[,host:port][/chroot]"},
    {"kafka.zookeeper_listener", KT_CONF_STRING, OFF(zookeeper_listener), NOCNT, NULL, NORANGE,
     NOENUM, KT_RELOAD_REJOIN, NULL,
     "listener name to use from broker registrations; default: the one of security.protocol"},
    {"kafka.topics", KT_CONF_LIST, OFF(topics), OFF(topic_cnt), NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, "TOPIC_NAME", "topics to consume. Required"},
    {"kafka.group_id", KT_CONF_STRING, OFF(group_id), NOCNT, NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, NULL, "consumer group id; default: the function handler"},
    {"kafka.start_from", KT_CONF_ENUM, OFF(start_from), NOCNT, "earliest", NORANGE, start_froms,
     NULL, KT_RELOAD_REJOIN, NULL, "where a group without a committed offset starts"},
    {"kafka.properties", KT_CONF_PROPS, OFF(props), OFF(prop_cnt), NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, NULL, "librdkafka consumer properties"},
    {"kafka.producer_properties", KT_CONF_PROPS, OFF(producer_props), OFF(producer_prop_cnt), NULL,
     NORANGE, NOENUM, KT_RELOAD_REJOIN, NULL,
     "librdkafka producer properties (dead letters, replies)"},
    {"kafka.static_membership", KT_CONF_BOOL, OFF(static_membership), NOCNT, "false", NORANGE,
     NOENUM, KT_RELOAD_REJOIN, NULL, "group.instance.id from POD_NAME or the host name"},

    {"runtime.host", KT_CONF_STRING, OFF(runtime_host), NOCNT, "127.0.0.1", NORANGE, NOENUM,
     KT_RELOAD_LIVE, NULL, "where the function runtime listens"},
    {"runtime.port", KT_CONF_INT, OFF(runtime_port), NOCNT, "8080", 1, 65535, NOENUM,
     KT_RELOAD_LIVE, "FUNC_PORT", "the runtime's port"},
    {"runtime.path", KT_CONF_STRING, OFF(runtime_path), NOCNT, "/", NORANGE, NOENUM, KT_RELOAD_LIVE,
     NULL, "the path records are POSTed to"},
    {"runtime.timeout_s", KT_CONF_INT, OFF(timeout_s), NOCNT, "180", 1, 86400, NOENUM,
     KT_RELOAD_LIVE, "FUNC_TIMEOUT", "seconds one call may take"},
    {"runtime.timeout_grace_ms", KT_CONF_INT, OFF(timeout_grace_ms), NOCNT, "2000", 0, 60000,
     NOENUM, KT_RELOAD_LIVE, NULL,
     "ktrigger waits timeout_s plus this for an answer, so the runtime's own 408 arrives"},
    {"runtime.health_path", KT_CONF_STRING, OFF(runtime_health_path), NOCNT, "/healthz", NORANGE,
     NOENUM, KT_RELOAD_LIVE, NULL, "probed while the runtime refuses connections"},
    {"runtime.wait_at_start", KT_CONF_BOOL, OFF(runtime_wait_at_start), NOCNT, "true", NORANGE,
     NOENUM, KT_RELOAD_LIVE, NULL, "join the group only once the runtime answers"},

    {"dispatch.ordering", KT_CONF_ENUM, OFF(ordering), NOCNT, "partition", NORANGE, orderings, NULL,
     KT_RELOAD_REJOIN, NULL, "which records may be in flight together"},
    {"dispatch.max_in_flight", KT_CONF_INT, OFF(max_in_flight), NOCNT, "64", 1, 10000, NOENUM,
     KT_RELOAD_LIVE, NULL, "most calls in flight, over all partitions"},
    {"dispatch.drain_timeout_ms", KT_CONF_INT, OFF(drain_timeout_ms), NOCNT, "30000", 0, 3600000,
     NOENUM, KT_RELOAD_LIVE, NULL, "how long calls may finish at revoke, reload and shutdown"},
    {"dispatch.partition_buffer_records", KT_CONF_INT, OFF(partition_buffer_records), NOCNT, "1000",
     1, 1000000, NOENUM, KT_RELOAD_LIVE, NULL, "records buffered per partition"},
    {"dispatch.partition_buffer_bytes", KT_CONF_INT, OFF(partition_buffer_bytes), NOCNT, "524288",
     1024, 1073741824, NOENUM, KT_RELOAD_LIVE, NULL, "bytes buffered per partition"},
    {"dispatch.retry.initial_backoff_ms", KT_CONF_INT, OFF(retry_initial_backoff_ms), NOCNT, "100",
     1, 3600000, NOENUM, KT_RELOAD_LIVE, NULL, "first retry back-off"},
    {"dispatch.retry.max_backoff_ms", KT_CONF_INT, OFF(retry_max_backoff_ms), NOCNT, "30000", 1,
     3600000, NOENUM, KT_RELOAD_LIVE, NULL, "back-off cap (and Retry-After cap)"},
    {"dispatch.retry.max_attempts", KT_CONF_INT, OFF(retry_max_attempts), NOCNT, "5", 1, 1000000,
     NOENUM, KT_RELOAD_LIVE, NULL, "calls per record, the first included"},
    {"dispatch.on_failure", KT_CONF_ENUM, OFF(on_failure), NOCNT, "block", NORANGE, failures, NULL,
     KT_RELOAD_LIVE, NULL, "what happens once a record's attempts are used up"},
    {"dispatch.dead_letter_topic", KT_CONF_STRING, OFF(dead_letter_topic), NOCNT, NULL, NORANGE,
     NOENUM, KT_RELOAD_REJOIN, NULL, "where on_failure = \"dead-letter\" writes"},
    {"dispatch.reply_topic", KT_CONF_STRING, OFF(reply_topic), NOCNT, NULL, NORANGE, NOENUM,
     KT_RELOAD_REJOIN, NULL, "where 2xx response bodies are produced; off if unset"},
    {"dispatch.event_format", KT_CONF_ENUM, OFF(event_format), NOCNT, "kubeless", NORANGE, formats,
     NULL, KT_RELOAD_LIVE, NULL, "request headers: Kubeless or CloudEvents binary"},
    {"dispatch.json_content_type_exact", KT_CONF_BOOL, OFF(json_content_type_exact), NOCNT, "true",
     NORANGE, NOENUM, KT_RELOAD_LIVE, NULL,
     "a record's application/json with parameters is sent as exactly application/json"},
    {"dispatch.batch.max_records", KT_CONF_INT, OFF(batch_max_records), NOCNT, "0", 0, 10000,
     NOENUM, KT_RELOAD_LIVE, NULL,
     "records per request in the CloudEvents JSON batch format; 0 or 1: one per request (off)"},
    {"dispatch.batch.max_bytes", KT_CONF_INT, OFF(batch_max_bytes), NOCNT, "1048576", 1024,
     67108864, NOENUM, KT_RELOAD_LIVE, NULL,
     "most bytes of an encoded batch body; a record bigger than this is sent alone"},
    {"dispatch.batch.max_wait_ms", KT_CONF_INT, OFF(batch_max_wait_ms), NOCNT, "0", 0, 60000,
     NOENUM, KT_RELOAD_LIVE, NULL,
     "a batch not full is sent once its oldest record waited this long; 0: send what is there"},

    {"metrics.listen", KT_CONF_STRING, OFF(metrics_listen), NOCNT, "0.0.0.0:9464", NORANGE, NOENUM,
     KT_RELOAD_RESTART, NULL,
     "host:port (or :port, every interface) of /metrics, /healthz, /readyz"},
    {"metrics.ready_requires_kafka", KT_CONF_BOOL, OFF(metrics_ready_kafka), NOCNT, "false",
     NORANGE, NOENUM, KT_RELOAD_LIVE, NULL,
     "/readyz also requires the consumer group joined (and a ZooKeeper broker)"},

    {"log.level", KT_CONF_ENUM, OFF(log_level), NOCNT, "info", NORANGE, log_levels,
     log_level_values, KT_RELOAD_LIVE, NULL, "most verbose level printed"},
    {"log.format", KT_CONF_ENUM, OFF(log_json), NOCNT, "text", NORANGE, log_formats, NULL,
     KT_RELOAD_LIVE, NULL, "text or json lines"},
};
const size_t kt_config_key_cnt = sizeof(kt_config_keys) / sizeof(kt_config_keys[0]);

const kt_config_key_t *kt_config_key_find(const char *path) {
        for (size_t i = 0; i < kt_config_key_cnt; i++)
                if (!strcmp(kt_config_keys[i].path, path))
                        return &kt_config_keys[i];
        return NULL;
}

void kt_config_key_env(const kt_config_key_t *key, char *buf, size_t size) {
        size_t n = (size_t)snprintf(buf, size, "KTRIGGER_");

        for (const char *p = key->path; *p && n + 1 < size; p++)
                buf[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
        if (n < size)
                buf[n] = '\0';
}

static const char *const type_names[] = {"string", "integer", "boolean",
                                         "enum",   "list",    "properties"};
static const char *const reload_names[] = {"live", "restart", "re-join"};

void kt_config_describe(void) {
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                char env[96];

                kt_config_key_env(k, env, sizeof(env));
                printf("%s (%s", k->path, type_names[k->type]);
                if (k->type == KT_CONF_INT)
                        printf(" %lld..%lld", k->min, k->max);
                if (k->type == KT_CONF_ENUM) {
                        for (size_t j = 0; k->names[j]; j++)
                                printf("%s%s", j ? "|" : " ", k->names[j]);
                }
                printf(", default %s%s%s)\n", k->def ? "\"" : "", k->def ? k->def : "unset",
                       k->def ? "\"" : "");
                printf("    %s\n    env %s%s%s; on reload: %s\n", k->doc, env, k->env ? ", " : "",
                       k->env ? k->env : "", reload_names[k->reload]);
        }
}
