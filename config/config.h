/**
 * @file config.h
 * @brief The one validated, immutable settings struct, built from a libconfig file, the
 *        Kubeless environment variables and defaults (precedence: env > file > defaults).
 *
 * kt_config_t is plain data: built once at start-up by kt_config_load(), read by every module,
 * never changed afterwards.
 */
#ifndef KT_CONFIG_H
#define KT_CONFIG_H

#include <stddef.h>

/** Where a new consumer group starts reading (auto.offset.reset). */
typedef enum kt_start_from { KT_START_EARLIEST, KT_START_LATEST } kt_start_from_t;

/** How records may be reordered relative to each other (dispatch.ordering). */
typedef enum kt_ordering {
        KT_ORDER_PARTITION, /**< one call in flight per partition */
        KT_ORDER_KEY,       /**< equal keys in order, different keys in parallel */
        KT_ORDER_NONE       /**< any order */
} kt_ordering_t;

/** What happens to a record whose retries are exhausted (dispatch.on_failure). */
typedef enum kt_on_failure {
        KT_FAIL_BLOCK,      /**< retry forever; the records behind it wait */
        KT_FAIL_SKIP,       /**< count, log, move on */
        KT_FAIL_DEAD_LETTER /**< produce to dispatch.dead_letter_topic, then move on */
} kt_on_failure_t;

/** How a record is described in the request headers (dispatch.event_format). */
typedef enum kt_event_format {
        KT_EVENT_KUBELESS,   /**< event-id, event-time, ... (Kubeless' contract) */
        KT_EVENT_CLOUDEVENTS /**< CloudEvents 1.0 binary mode: ce-id, ce-source, ... */
} kt_event_format_t;

/** One librdkafka property from the config file. */
typedef struct kt_config_prop {
        char *name;
        char *value; /**< with ${ENV} / ${file:PATH} references expanded */
        char *raw;   /**< as written (what --print-config shows for a reference) */
        int line;    /**< line in the config file, 0 if not from a file */
} kt_config_prop_t;

typedef struct kt_config {
        char *path; /**< config file, NULL if none */

        /* function */
        char *handler; /**< module.function, e.g. "hello.handler" */

        /* kafka */
        char *brokers; /**< "" when only brokers discovered through ZooKeeper are used */
        char **topics;
        size_t topic_cnt;
        char *group_id; /**< defaults to handler */
        kt_start_from_t start_from;
        kt_config_prop_t *props; /**< librdkafka consumer properties, applied last */
        size_t prop_cnt;
        int static_membership;            /**< group.instance.id from POD_NAME or the host name */
        char *instance_id;                /**< derived when static_membership */
        kt_config_prop_t *producer_props; /**< librdkafka producer properties (dead letters) */
        size_t producer_prop_cnt;
        char *zookeeper; /**< host:port[,host:port][/chroot] to discover brokers from, or NULL */
        char *zookeeper_listener; /**< listener name whose endpoint to use, or NULL */

        /* runtime */
        char *runtime_host;
        int runtime_port;
        char *runtime_path;
        char *runtime_url; /**< derived: http://host:port/path */
        int timeout_s;     /**< per call */
        char *runtime_health_path;
        int runtime_wait_at_start; /**< join the group only once the runtime answers */
        char *runtime_health_url;  /**< derived: http://host:port/health_path */

        /* dispatch */
        kt_ordering_t ordering;
        int max_in_flight;
        int drain_timeout_ms;
        int partition_buffer_records;
        int partition_buffer_bytes;
        int retry_initial_backoff_ms;
        int retry_max_backoff_ms;
        int retry_max_attempts; /**< calls per record, the first one included */
        kt_on_failure_t on_failure;
        char *dead_letter_topic;
        char *reply_topic; /**< successful response bodies produced here, NULL if off */
        kt_event_format_t event_format;

        /* metrics */
        char *metrics_listen; /**< host:port as given */
        char *metrics_host;
        int metrics_port;

        /* log */
        int log_level;
        int log_json; /**< log.format = "json" */
} kt_config_t;

/**
 * @brief Build the configuration from \p path (may be NULL), the environment and defaults,
 *        and validate every setting.
 *
 * @returns a new config, or NULL with every problem found written to \p errstr, one per line
 *          as `file:line: key: reason` (or `key: reason` when no file line applies).
 * @remark The caller owns the result: kt_config_destroy().
 */
kt_config_t *kt_config_load(const char *path, char *errstr, size_t errstr_size);

/** @brief Free \p conf. NULL is a no-op. */
void kt_config_destroy(kt_config_t *conf);

/**
 * @brief Resolve the Kubeless handler from FUNC_HANDLER and MOD_NAME values.
 *
 * `module.function` is kept as is; a bare function name is prefixed with `mod.`.
 * @returns a new string, or NULL if \p func is empty or bare without \p mod.
 */
char *kt_config_handler_resolve(const char *func, const char *mod);

/**
 * @brief Parse `host:port` (IPv6 as `[addr]:port`) into a new \p *hostp and \p *portp.
 * @returns 0 on success, -1 if malformed or the port is outside 1..65535.
 */
int kt_config_hostport_parse(const char *s, char **hostp, int *portp);

/** @brief Print the effective configuration (key = value), one per line, to stdout. */
void kt_config_print(const kt_config_t *conf);

#endif /* KT_CONFIG_H */
