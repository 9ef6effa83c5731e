/**
 * @file config.h
 * @brief The one validated, immutable settings struct, built from a libconfig file, the
 *        environment and --set flags (precedence: flags > env > file > defaults).
 *
 * Every setting is declared once, in kt_config_keys[] (config_schema.c): its type, default,
 * range or values, how a change applies on reload, and a one-line doc. The loader, the
 * validator, --print-config, --describe-config and the test of the example file all read it.
 *
 * kt_config_t is plain data: built by kt_config_load(), read by every module, never changed
 * afterwards. A reload (SIGHUP) builds a new one and the loop swaps it in.
 */
#ifndef KT_CONFIG_H
#define KT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** The largest response body kept for a reply (dispatch.reply_topic). */
#define KT_MAX_RESPONSE_BYTES (1024 * 1024)

/** Room for the headers ktrigger adds to a reply or dead letter, and the record framing: the
 *  producer's message.max.bytes must leave it above the largest value. */
#define KT_PRODUCE_HEADER_ROOM (16 * 1024)

/** The largest configuration file (and each file it @include's) that is read. */
#define KT_MAX_CONFIG_FILE_BYTES (16 * 1024 * 1024)

/** How long reading and checking the configuration may take (a child process does it, see
 *  kt_config_reader_start): past it the child is killed and the read fails. */
#define KT_CONFIG_READ_TIMEOUT_MS 10000

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

/** Where a setting's value came from (shown by --print-config, used in error messages). */
typedef enum kt_config_origin {
        KT_ORIGIN_DEFAULT,
        KT_ORIGIN_FILE, /**< the --config file, at line */
        KT_ORIGIN_ENV,  /**< the environment variable name */
        KT_ORIGIN_FLAG  /**< --set */
} kt_config_origin_t;

typedef struct kt_config_source {
        kt_config_origin_t origin;
        int line;      /**< KT_ORIGIN_FILE */
        char name[64]; /**< KT_ORIGIN_ENV: the variable */
} kt_config_source_t;

/** One librdkafka property. */
typedef struct kt_config_prop {
        char *name;
        char *value; /**< with ${ENV} / ${file:PATH} references expanded */
        char *raw;   /**< as written (what --print-config shows for a reference) */
        int line;    /**< line in the config file, 0 if not from a file */
        kt_config_source_t src;
} kt_config_prop_t;

/** How a changed setting takes effect when the configuration is reloaded (SIGHUP); ordered
 *  from weakest to strongest: a reload applies the strongest class among its changes. */
typedef enum kt_config_reload {
        KT_RELOAD_LIVE,    /**< at once, in place */
        KT_RELOAD_RESTART, /**< only at the next start; the running value is kept */
        KT_RELOAD_REJOIN   /**< drain, commit, new consumer (re-join the group) */
} kt_config_reload_t;

typedef enum kt_config_type {
        KT_CONF_STRING,
        KT_CONF_INT,
        KT_CONF_BOOL,
        KT_CONF_ENUM, /**< a string out of names[], stored as an int (values[] or the index) */
        KT_CONF_LIST, /**< a list of strings, or one comma-separated string */
        KT_CONF_PROPS /**< librdkafka ("name", "value") pairs */
} kt_config_type_t;

/** One setting of the schema. */
typedef struct kt_config_key {
        const char *path; /**< "dispatch.retry.max_attempts" */
        kt_config_type_t type;
        size_t offset;      /**< of the field in kt_config_t */
        size_t offset_cnt;  /**< KT_CONF_LIST, KT_CONF_PROPS: of the size_t count */
        const char *def;    /**< default as it would be written in the environment; NULL: unset */
        long long min, max; /**< KT_CONF_INT */
        const char *const *names; /**< KT_CONF_ENUM, NULL-terminated */
        const int *values;        /**< KT_CONF_ENUM: the value of names[i], NULL: i */
        kt_config_reload_t reload;
        const char *env; /**< a Kubeless variable also setting it, NULL if none */
        const char *doc;
} kt_config_key_t;

/** The schema: every setting, once. */
extern const kt_config_key_t kt_config_keys[];
extern const size_t kt_config_key_cnt;

/** @returns the schema entry of \p path, or NULL. */
const kt_config_key_t *kt_config_key_find(const char *path);

/** @brief Write the generic environment variable of \p key (KTRIGGER_ + path, upper case,
 *         dots as underscores) to \p buf. */
void kt_config_key_env(const kt_config_key_t *key, char *buf, size_t size);

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

        /* runtime */
        char *runtime_host;
        int runtime_port;
        char *runtime_path;
        char *runtime_url;    /**< derived: http://host:port/path */
        int timeout_s;        /**< per call: the runtime's FUNC_TIMEOUT */
        int timeout_grace_ms; /**< added to timeout_s for ktrigger's own call timeout */
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
        int json_content_type_exact; /**< send a JSON record's Content-Type as exactly
                                          application/json (its own value stays in
                                          event-header-content-type) */
        int batch_max_records;       /**< records per request; 0 or 1: batching off */
        int batch_max_bytes;         /**< most bytes of an encoded batch (one record may be more) */
        int batch_max_wait_ms;       /**< an unfull batch waits this long for its oldest record */

        /* metrics */
        char *metrics_listen; /**< host:port as given */
        char *metrics_host;
        int metrics_port;
        int metrics_ready_kafka; /**< metrics.ready_requires_kafka */

        /* log */
        int log_level;
        int log_json; /**< log.format = "json" */

        /* kafka, discovery */
        char *zookeeper; /**< host:port[,host:port][/chroot], NULL if off */
        char
            *zookeeper_listener; /**< listener name to pick from registrations, NULL: by protocol */

        /* bookkeeping */
        kt_config_source_t *sources; /**< one per kt_config_keys[] entry */
        char *warnings;              /**< newline-separated, NULL if none: log them */
        char hash[17];               /**< of the effective settings (hex), secrets excluded */
        char **sets;                 /**< the --set overrides, kept for a reload */
        size_t set_cnt;
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

/**
 * @brief kt_config_load() with \p set_cnt `path=value` overrides (--set), which win over
 *        everything else.
 */
kt_config_t *kt_config_load_with(const char *path, char *const *sets, size_t set_cnt, char *errstr,
                                 size_t errstr_size);

/**
 * @brief kt_config_load_with() that also says, when loading failed, whether log.format was
 *        "json" (as far as the settings were read), so the errors can be logged in that form.
 */
kt_config_t *kt_config_load_ex(const char *path, char *const *sets, size_t set_cnt, char *errstr,
                               size_t errstr_size, int *log_jsonp);

/**
 * A configuration read in a child process (config_reader.c), nginx-like: reading files and
 * the environment, libconfig's parser and the validation run in a fork()ed child that has at
 * most KT_CONFIG_READ_TIMEOUT_MS; a library that calls exit() or blocks costs the child only
 * (it is killed at the deadline and reaped). The child hands the fully resolved configuration
 * back as libconfig text over a pipe, which the parent parses from memory
 * (config_read_string): the parent touches no file again.
 */
typedef struct kt_config_reader kt_config_reader_t;

/**
 * @brief Start reading \p path (may be NULL), the environment and \p sets in a child.
 * @returns a reader, or NULL (fork or pipe failed) with the reason in \p errstr.
 * @remark The caller owns it: kt_config_reader_destroy(). Flushes stdio before fork().
 */
kt_config_reader_t *kt_config_reader_start(const char *path, char *const *sets, size_t set_cnt,
                                           char *errstr, size_t errstr_size);

/** @returns the fd to poll for input (readable, or hung up once the child is done). */
int kt_config_reader_fd(const kt_config_reader_t *kr);

/**
 * @brief Take what the child wrote so far; never blocks.
 * @returns 1 while the child is still at work; 0 once done: *\p confp is the new
 *          configuration, or NULL with every error in \p errstr (one per line) and, if
 *          \p log_jsonp, whether log.format was "json" in \p *log_jsonp.
 */
int kt_config_reader_step(kt_config_reader_t *kr, kt_config_t **confp, char *errstr,
                          size_t errstr_size, int *log_jsonp);

/** @brief Kill a child still at work, reap it, free \p kr. NULL is a no-op. */
void kt_config_reader_destroy(kt_config_reader_t *kr);

/**
 * @brief kt_config_load_ex() in a child process, waiting for it (start-up, --check-config).
 * @returns as kt_config_load_ex(); a child that exits, crashes or outlives its deadline is an
 *          error naming \p path.
 */
kt_config_t *kt_config_load_isolated(const char *path, char *const *sets, size_t set_cnt,
                                     char *errstr, size_t errstr_size, int *log_jsonp);

/**
 * @brief Compare two configurations setting by setting.
 * @returns the strongest reload class among the settings that differ (-1 if none), and writes
 *          the differing keys, comma-separated, to \p changed.
 */
int kt_config_diff(const kt_config_t *a, const kt_config_t *b, char *changed, size_t size);

/** @brief Print every setting of the schema to stdout: path, type, default, range or values,
 *         environment variable, reload class, doc. */
void kt_config_describe(void);

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

/** @brief Print the effective configuration (key = value  # source), one per line, to \p out,
 *         secrets redacted. */
void kt_config_print(const kt_config_t *conf, FILE *out);

#endif /* KT_CONFIG_H */
