/* Configuration: handler resolution, host:port, file + environment, every error reported. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../config.h"
#include "../config_int.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const env_vars[] = {
    "FUNC_HANDLER",      "MOD_NAME",           "TOPIC_NAME",
    "KAFKA_BROKERS",     "KUBELESS_KAFKA_SVC", "KUBELESS_KAFKA_NAMESPACE",
    "FUNC_PORT",         "FUNC_TIMEOUT",       "KTRIGGER_METRICS_LISTEN",
    "KTRIGGER_LOG_LEVEL"};

static void env_clear(void) {
        for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
                unsetenv(env_vars[i]);
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                char var[96];
                kt_config_key_env(&kt_config_keys[i], var, sizeof(var));
                unsetenv(var);
        }
}

static char path[64];

static const char *write_conf(const char *text) {
        FILE *f;
        int fd;

        snprintf(path, sizeof(path), "/tmp/kt-test-conf-XXXXXX");
        fd = mkstemp(path);
        f = fdopen(fd, "w");
        fputs(text, f);
        fclose(f);
        return path;
}

static void test_handler_resolve(void) {
        static const struct {
                const char *func, *mod, *want;
        } cases[] = {
            {"handler", "hello", "hello.handler"},
            {"hello.handler", NULL, "hello.handler"},
            {"hello.handler", "other", "hello.handler"},
            {"handler", NULL, NULL},
            {"handler", "", NULL},
            {"", "hello", NULL},
            {NULL, "hello", NULL},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *got = kt_config_handler_resolve(cases[i].func, cases[i].mod);
                if (cases[i].want)
                        KT_CHECK_STR(got, cases[i].want);
                else
                        KT_CHECK(got == NULL, "case %zu: got %s", i, got);
                free(got);
        }
}

static void test_hostport(void) {
        static const struct {
                const char *in, *host;
                int port;
        } cases[] = {
            {"0.0.0.0:9464", "0.0.0.0", 9464},
            {"localhost:1", "localhost", 1},
            {"[::1]:8080", "::1", 8080},
            {"h:65535", "h", 65535},
            {"h:65536", NULL, 0},
            {"h:0", NULL, 0},
            {"h", NULL, 0},
            {":80", NULL, 0},
            {"h:80x", NULL, 0},
            {"::1:80", NULL, 0},
            {"", NULL, 0},
            {"a b:80", NULL, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *host = NULL;
                int port = 0;
                int rc = kt_config_hostport_parse(cases[i].in, &host, &port);
                if (cases[i].host) {
                        KT_CHECK(rc == 0, "'%s' should parse", cases[i].in);
                        KT_CHECK_STR(host, cases[i].host);
                        KT_CHECK(port == cases[i].port, "'%s': port %d", cases[i].in, port);
                } else
                        KT_CHECK(rc == -1, "'%s' should be rejected", cases[i].in);
                free(host);
        }
}

static void test_good_file_and_env(void) {
        char err[4096];
        kt_config_t *conf;

        env_clear();
        conf = kt_config_load(
            write_conf("function = { handler = \"hello.handler\"; };\n"
                       "kafka = { brokers = \"b1:9092\"; topics = [\"t1\", \"t2\"];\n"
                       "  start_from = \"latest\";\n"
                       "  properties = ( (\"session.timeout.ms\", 45000),\n"
                       "                 [\"fetch.wait.max.ms\", \"10\"] ); };\n"
                       "runtime = { port = 9000; timeout_s = 30; };\n"
                       "dispatch = { ordering = \"key\"; on_failure = \"dead-letter\";\n"
                       "  dead_letter_topic = \"dlq\"; retry = { max_attempts = 3; }; };\n"),
            err, sizeof(err));
        unlink(path);
        KT_CHECK(conf != NULL, "load: %s", err);
        if (!conf)
                return;
        KT_CHECK_STR(conf->handler, "hello.handler");
        KT_CHECK_STR(conf->group_id, "hello.handler");
        KT_CHECK_STR(conf->brokers, "b1:9092");
        KT_CHECK(conf->topic_cnt == 2, "topics %zu", conf->topic_cnt);
        KT_CHECK(conf->start_from == KT_START_LATEST, "start_from");
        KT_CHECK(conf->prop_cnt == 2, "props %zu", conf->prop_cnt);
        KT_CHECK(conf->prop_cnt == 2 && !strcmp(conf->props[0].value, "45000"),
                 "integer property as string");
        KT_CHECK_STR(conf->runtime_url, "http://127.0.0.1:9000/");
        KT_CHECK(conf->timeout_s == 30, "timeout %d", conf->timeout_s);
        KT_CHECK(conf->metrics_port == 9464, "metrics default port %d", conf->metrics_port);
        KT_CHECK(conf->ordering == KT_ORDER_KEY, "ordering");
        KT_CHECK(conf->on_failure == KT_FAIL_DEAD_LETTER, "on_failure");
        KT_CHECK_STR(conf->dead_letter_topic, "dlq");
        KT_CHECK(conf->retry_max_attempts == 3, "max_attempts %d", conf->retry_max_attempts);
        KT_CHECK(conf->retry_initial_backoff_ms == 100, "initial backoff default");
        KT_CHECK_STR(conf->runtime_health_url, "http://127.0.0.1:9000/healthz");
        kt_config_destroy(conf);

        /* Kubeless environment wins over the file. */
        setenv("FUNC_HANDLER", "handler", 1);
        setenv("MOD_NAME", "mymod", 1);
        setenv("TOPIC_NAME", " a , b,c ", 1);
        setenv("KUBELESS_KAFKA_NAMESPACE", "kafka-ns", 1);
        setenv("FUNC_PORT", "8081", 1);
        setenv("FUNC_TIMEOUT", "5", 1);
        setenv("KTRIGGER_METRICS_LISTEN", "127.0.0.1:9999", 1);
        conf =
            kt_config_load(write_conf("function = { handler = \"file.handler\"; };\n"
                                      "kafka = { brokers = \"b1:9092\"; topics = [\"t1\"]; };\n"),
                           err, sizeof(err));
        unlink(path);
        KT_CHECK(conf != NULL, "load: %s", err);
        if (conf) {
                KT_CHECK_STR(conf->handler, "mymod.handler");
                KT_CHECK_STR(conf->group_id, "mymod.handler");
                KT_CHECK(conf->topic_cnt == 3 && !strcmp(conf->topics[0], "a") &&
                             !strcmp(conf->topics[1], "b") && !strcmp(conf->topics[2], "c"),
                         "TOPIC_NAME list");
                KT_CHECK_STR(conf->brokers, "kafka.kafka-ns:9092");
                KT_CHECK_STR(conf->runtime_url, "http://127.0.0.1:8081/");
                KT_CHECK(conf->timeout_s == 5, "FUNC_TIMEOUT %d", conf->timeout_s);
                KT_CHECK(conf->metrics_port == 9999, "metrics port %d", conf->metrics_port);
                kt_config_destroy(conf);
        }
        setenv("KAFKA_BROKERS", "k1:1,k2:2", 1);
        conf = kt_config_load(NULL, err, sizeof(err));
        KT_CHECK(conf != NULL, "env only: %s", err);
        if (conf) {
                KT_CHECK_STR(conf->brokers, "k1:1,k2:2");
                KT_CHECK(conf->path == NULL, "no path");
                kt_config_destroy(conf);
        }
        /* Defaults: Kubeless' Kafka service, runtime on 8080, 180 s. */
        env_clear();
        setenv("FUNC_HANDLER", "m.f", 1);
        setenv("TOPIC_NAME", "t", 1);
        conf = kt_config_load(NULL, err, sizeof(err));
        KT_CHECK(conf != NULL, "defaults: %s", err);
        if (conf) {
                KT_CHECK_STR(conf->brokers, "kafka.kubeless:9092");
                KT_CHECK_STR(conf->runtime_url, "http://127.0.0.1:8080/");
                KT_CHECK(conf->timeout_s == 180, "timeout %d", conf->timeout_s);
                KT_CHECK(conf->timeout_grace_ms == 2000, "grace %d", conf->timeout_grace_ms);
                KT_CHECK(conf->ordering == KT_ORDER_PARTITION, "default ordering");
                KT_CHECK(conf->on_failure == KT_FAIL_BLOCK, "default on_failure");
                KT_CHECK(conf->max_in_flight == 64, "default max_in_flight");
                kt_config_destroy(conf);
        }
        env_clear();
}

static void test_errors(void) {
        static const struct {
                const char *text;
                const char *want[8]; /* substrings that must all appear */
        } cases[] = {
            {"kafka = { brokers = \"b\"; topics = [\"t\"]; };\n",
             {"function.handler: no function handler"}},
            {"function = { handler = \"m.f\"; };\n", {"kafka.topics: no topic"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; };\n"
             "runtime = { port = 70000; };\n",
             {":3: runtime.port: 70000 is outside 1..65535"}},
            {"function = { handler = \"m.f\"; hanlder = \"x\"; };\nkafka = { topics = [\"t\"]; "
             "};\n",
             {":1: function: unknown key 'hanlder'"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "start_from = \"beginning\"; };\n",
             {":3: kafka.start_from: 'beginning' is not one of: earliest, latest"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"bad topic!\"]; };\n",
             {"kafka.topics: 'bad topic!' is not a valid topic name"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"enable.auto.offset.store\", \"true\"),\n"
             "(\"no.such.property\", \"1\"), (\"x\") ); };\n",
             {":3: kafka.properties: enable.auto.offset.store: not settable here",
              ":4: kafka.properties: ", "no.such.property", ":4: kafka.properties: element 2"}},
            /* ktrigger commits itself, with the completed-offset map. */
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"enable.auto.commit\", \"true\") ); };\n",
             {":3: kafka.properties: enable.auto.commit: not settable here"}},
            /* ktrigger reads librdkafka's logs from its queue (consumer and producer): set
             * after the user's properties, so refused rather than silently replaced. */
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"log.queue\", \"false\") );\n"
             "producer_properties = ( (\"log.queue\", \"false\") ); };\n",
             {":3: kafka.properties: log.queue: not settable here: set by ktrigger",
              ":4: kafka.producer_properties: log.queue: not settable here: set by ktrigger"}},
            /* Every error in one run. */
            {"function = { handler = 5; };\nkafka = { topics = [\"t\"]; };\n"
             "runtime = { timeout_s = 0; port = \"x\"; timeout_grace_ms = 60001; };\nmetrics = { "
             "listen = \"nope\"; };\n"
             "dispatch = { retry = { initial_backoff_ms = 500; max_backoff_ms = 100; }; };\nextra "
             "= {};\n",
             {":1: function.handler: must be a string", ":3: runtime.timeout_s: 0 is outside",
              ":3: runtime.port: must be an integer",
              ":3: runtime.timeout_grace_ms: 60001 is outside 0..60000",
              ":4: metrics.listen: 'nope'", ":5: dispatch.retry.max_backoff_ms: 100 is below",
              ":6: extra: unknown section"}},
            {"function = { handler = };\n", {":1: syntax:"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"max.poll.interval.ms\", \"20000\") ); };\n"
             "runtime = { host = \"localhost:8080\"; };\ndispatch = { drain_timeout_ms = 20000; "
             "};\n",
             {":4: runtime.host: 'localhost:8080' is not a host name",
              ":5: dispatch.drain_timeout_ms: 20000 must be below max.poll.interval.ms (20000)"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; };\n"
             "dispatch = { ordering = \"random\"; on_failure = \"dead-letter\";\n"
             "retry = { max_attempts = 0; typo = 1; }; };\n",
             {":3: dispatch.ordering: 'random' is not one of: partition, key, none",
              ":3: dispatch.on_failure: \"dead-letter\" needs dispatch.dead_letter_topic",
              ":4: dispatch.retry.max_attempts: 0 is outside",
              ":4: dispatch.retry: unknown key 'typo'"}},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "producer_properties = ( (\"acks\", \"1\") ); };\n"
             "dispatch = { on_failure = \"dead-letter\"; dead_letter_topic = \"t\";\n"
             "reply_topic = \"t\"; };\nruntime = { wait_at_start = \"yes\"; };\n",
             {":3: kafka.producer_properties: acks: not settable here",
              ":4: dispatch.dead_letter_topic: 't' is also a consumed topic",
              ":5: dispatch.reply_topic: 't' is also a consumed topic",
              ":6: runtime.wait_at_start: must be true or false"}},
        };
        char err[4096];

        env_clear();
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t *conf = kt_config_load(write_conf(cases[i].text), err, sizeof(err));
                unlink(path);
                KT_CHECK(conf == NULL, "case %zu should fail", i);
                kt_config_destroy(conf);
                for (size_t j = 0; j < 8 && cases[i].want[j]; j++)
                        KT_CHECK(strstr(err, cases[i].want[j]) != NULL,
                                 "case %zu: want '%s' in:\n%s", i, cases[i].want[j], err);
                KT_CHECK(err[0] && err[strlen(err) - 1] != '\n', "case %zu: no trailing newline",
                         i);
        }

        /* Unreadable file. */
        KT_CHECK(kt_config_load("/nonexistent/ktrigger.conf", err, sizeof(err)) == NULL,
                 "missing file");
        KT_CHECK(strstr(err, "/nonexistent/ktrigger.conf: cannot read") != NULL, "%s", err);

        /* Bad environment values. */
        setenv("FUNC_HANDLER", "handler", 1); /* bare, no MOD_NAME */
        setenv("TOPIC_NAME", "t", 1);
        setenv("FUNC_PORT", "80a", 1);
        KT_CHECK(kt_config_load(NULL, err, sizeof(err)) == NULL, "bad env");
        KT_CHECK(strstr(err, "FUNC_HANDLER: function.handler: 'handler' is not module.function") !=
                     NULL,
                 "%s", err);
        KT_CHECK(strstr(err, "FUNC_PORT: runtime.port: '80a' is not an integer") != NULL, "%s",
                 err);
        env_clear();
}

static void test_references(void) {
        char err[4096];
        kt_config_t *conf;
        FILE *f = fopen("/tmp/kt-test-secret", "w");

        env_clear();
        fputs("from-file\n", f);
        fclose(f);
        setenv("KT_TEST_PW", "s3cr3t", 1);
        setenv("KT_TEST_HOST", "b9", 1);
        conf = kt_config_load(
            write_conf("function = { handler = \"m.f\"; };\n"
                       "kafka = { topics = [\"t\"]; brokers = \"${KT_TEST_HOST}:9092\";\n"
                       "  properties = ( (\"sasl.username\", \"${file:/tmp/kt-test-secret}\"),\n"
                       "                 (\"sasl.password\", \"${KT_TEST_PW}\") ); };\n"),
            err, sizeof(err));
        unlink(path);
        KT_CHECK(conf != NULL, "load: %s", err);
        if (conf) {
                KT_CHECK_STR(conf->brokers, "b9:9092");
                KT_CHECK(conf->prop_cnt == 2, "props");
                KT_CHECK_STR(conf->props[0].value, "from-file");
                KT_CHECK_STR(conf->props[1].value, "s3cr3t");
                KT_CHECK_STR(conf->props[1].raw, "${KT_TEST_PW}");
                kt_config_destroy(conf);
        }
        conf = kt_config_load(
            write_conf("function = { handler = \"m.f\"; };\n"
                       "kafka = { topics = [\"t\"];\n"
                       "  properties = ( (\"sasl.password\", \"${KT_TEST_UNSET}\"),\n"
                       "                 (\"sasl.username\", \"${file:/nonexistent/x}\") ); };\n"),
            err, sizeof(err));
        unlink(path);
        KT_CHECK(conf == NULL, "unset reference must fail");
        KT_CHECK(
            strstr(err, ":3: kafka.properties: environment variable KT_TEST_UNSET is not set") !=
                NULL,
            "%s", err);
        KT_CHECK(strstr(err, ":4: kafka.properties: cannot read /nonexistent/x") != NULL, "%s",
                 err);
        unsetenv("KT_TEST_PW");
        unsetenv("KT_TEST_HOST");
        unlink("/tmp/kt-test-secret");
}

/* kafka.zookeeper: brokers from ZooKeeper only, unless kafka.brokers is given too. */
static void test_zookeeper(void) {
        static const struct {
                const char *text;
                const char *env_zk, *env_brokers;
                const char *zookeeper, *listener, *brokers;
        } good[] = {
            {"kafka = { zookeeper = \"zk1:2181,zk2:2181/kafka\"; };\n", NULL, NULL,
             "zk1:2181,zk2:2181/kafka", NULL, ""},
            {"kafka = { zookeeper = \"[::1]:2181\"; zookeeper_listener = \"EXTERNAL\";\n"
             "  brokers = \"b1:9092\"; };\n",
             NULL, NULL, "[::1]:2181", "EXTERNAL", "b1:9092"},
            {"kafka = { };\n", "zk:2181/a/b", NULL, "zk:2181/a/b", NULL, ""},
            {"kafka = { };\n", "zk:2181", "k1:9092", "zk:2181", NULL, "k1:9092"},
            /* The environment wins over the file. */
            {"kafka = { zookeeper = \"file:2181\"; brokers = \"b:1\"; };\n", "env:2181", NULL,
             "env:2181", NULL, "b:1"},
            {"kafka = { brokers = \"b:1\"; };\n", NULL, NULL, NULL, NULL, "b:1"},
        };
        static const struct {
                const char *text;
                const char *want;
        } bad[] = {
            {"kafka = {\n zookeeper = \"zk\"; };\n",
             ":3: kafka.zookeeper: 'zk' is not host:port[,host:port...][/chroot]: 'zk' is not "
             "host:port"},
            {"kafka = {\n zookeeper = \"zk:2181,\"; };\n",
             ":3: kafka.zookeeper: 'zk:2181,' is not host:port"},
            {"kafka = {\n zookeeper = \"zk:99999/x\"; };\n",
             ":3: kafka.zookeeper: 'zk:99999/x' is not host:port[,host:port...][/chroot]: "
             "'zk:99999' is not host:port with a port in 1..65535"},
            {"kafka = {\n zookeeper = \"zk:2181/\"; };\n",
             ":3: kafka.zookeeper: 'zk:2181/' is not host:port[,host:port...][/chroot]: the "
             "chroot must not end with '/'"},
            {"kafka = {\n zookeeper = \"zk:2181//a\"; };\n", "the chroot must be /name"},
            {"kafka = {\n zookeeper = \"/chroot\"; };\n", "no host:port"},
            {"kafka = {\n zookeeper = \"\"; };\n", ":3: kafka.zookeeper: '' is not"},
            {"kafka = {\n zookeeper = 2181; };\n", ":3: kafka.zookeeper: must be a string"},
            {"kafka = {\n zookeeper_listener = \"EXTERNAL\"; };\n",
             ":3: kafka.zookeeper_listener: needs kafka.zookeeper"},
            {"kafka = { zookeeper = \"zk:1\";\n zookeeper_listener = \"A B\"; };\n",
             ":3: kafka.zookeeper_listener: 'A B' is not a listener name"},
            {"kafka = {\n brokers = \"\"; };\n",
             ":3: kafka.brokers: must not be empty (unless kafka.zookeeper is set)"},
        };
        char err[4096], text[512];

        env_clear();
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                kt_config_t *conf;

                snprintf(text, sizeof(text), "function = { handler = \"m.f\"; };\n%s",
                         good[i].text);
                if (good[i].env_zk)
                        setenv("KTRIGGER_KAFKA_ZOOKEEPER", good[i].env_zk, 1);
                if (good[i].env_brokers)
                        setenv("KAFKA_BROKERS", good[i].env_brokers, 1);
                setenv("TOPIC_NAME", "t", 1);
                conf = kt_config_load(write_conf(text), err, sizeof(err));
                unlink(path);
                env_clear();
                KT_CHECK(conf != NULL, "good %zu: %s", i, err);
                if (!conf)
                        continue;
                if (good[i].zookeeper)
                        KT_CHECK_STR(conf->zookeeper, good[i].zookeeper);
                else
                        KT_CHECK(conf->zookeeper == NULL, "good %zu: zookeeper %s", i,
                                 conf->zookeeper);
                if (good[i].listener)
                        KT_CHECK_STR(conf->zookeeper_listener, good[i].listener);
                else
                        KT_CHECK(conf->zookeeper_listener == NULL, "good %zu: listener", i);
                KT_CHECK(conf->brokers && !strcmp(conf->brokers, good[i].brokers),
                         "good %zu: brokers '%s', want '%s'", i, conf->brokers, good[i].brokers);
                kt_config_destroy(conf);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                kt_config_t *conf;

                snprintf(text, sizeof(text), "function = { handler = \"m.f\"; };\n%s", bad[i].text);
                setenv("TOPIC_NAME", "t", 1);
                conf = kt_config_load(write_conf(text), err, sizeof(err));
                unlink(path);
                env_clear();
                KT_CHECK(conf == NULL, "bad %zu should fail", i);
                kt_config_destroy(conf);
                /* Line 1 is the function group: the key is on line 3. */
                KT_CHECK(strstr(err, bad[i].want) != NULL, "bad %zu: want '%s' in:\n%s", i,
                         bad[i].want, err);
        }
}

/** Replace the temporary file's path by "F" so expected messages can be written exactly. */
static void unpath(char *err) {
        size_t plen = strlen(path);
        char *p;

        while ((p = strstr(err, path))) {
                *p = 'F';
                memmove(p + 1, p + plen, strlen(p + plen) + 1);
        }
}

/* Bad files: the whole error text, exactly. Every error is reported: first those of single
 * values (type, range, enum) in schema order, then those between settings. */
static void test_errors_exact(void) {
        static const struct {
                const char *text, *want;
        } cases[] = {
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; };\n"
             "dispatch = { max_in_flight = 0; retry = { max_attempts = \"3\"; }; };\n",
             "F:3: dispatch.max_in_flight: 0 is outside 1..10000\n"
             "F:3: dispatch.retry.max_attempts: must be an integer"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "  zookeeper = \"zk:2181,zk2/\"; };\nlog = { level = \"loud\"; };\n",
             "F:4: log.level: 'loud' is not one of: error, warning, notice, info, debug, err, "
             "warn\n"
             "F:3: kafka.zookeeper: 'zk:2181,zk2/' is not host:port[,host:port...][/chroot]: "
             "'zk2' is not host:port with a port in 1..65535"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; };\n"
             "dispatch = { retry = 5; };\nlogs = { level = \"info\"; };\n",
             "F:3: dispatch.retry: must be a group: { ... }\nF:4: logs: unknown section"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; brokers = \"\";\n"
             "properties = ( (\"fetch.wait.max.ms\", \"soon\") ); };\n",
             "F:2: kafka.brokers: must not be empty (unless kafka.zookeeper is set)\n"
             "F:3: kafka.properties: Invalid value for configuration property "
             "\"fetch.wait.max.ms\""},
        };
        char err[4096];

        env_clear();
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t *conf = kt_config_load(write_conf(cases[i].text), err, sizeof(err));
                unlink(path);
                unpath(err);
                KT_CHECK(conf == NULL, "case %zu should fail", i);
                kt_config_destroy(conf);
                KT_CHECK(!strcmp(err, cases[i].want), "case %zu:\nwant:\n%s\ngot:\n%s", i,
                         cases[i].want, err);
        }
}

/* defaults < file < Kubeless env < KTRIGGER_ env < --set, and where each value came from. */
static void test_precedence(void) {
        char err[4096];
        char *sets[] = {"dispatch.max_in_flight=7", "kafka.properties=linger.ms=9"};
        kt_config_t *conf;
        const kt_config_key_t *k;

        env_clear();
        setenv("FUNC_PORT", "8081", 1);
        setenv("FUNC_TIMEOUT", "9", 1);
        setenv("KTRIGGER_RUNTIME_TIMEOUT_S", "11", 1);
        setenv("KTRIGGER_DISPATCH_MAX_IN_FLIGHT", "5", 1);
        setenv("KTRIGGER_DISPATCH_RETRY_MAX_ATTEMPTS", "4", 1);
        setenv("KTRIGGER_DISPATCH_ORDERING", "none", 1);
        setenv("KTRIGGER_KAFKA_STATIC_MEMBERSHIP", "false", 1);
        setenv("KTRIGGER_KAFKA_TOPICS", "x, y", 1);
        setenv("KTRIGGER_KAFKA_PROPERTIES", "session.timeout.ms=50000; debug=fetch,queue", 1);
        conf = kt_config_load_with(
            write_conf("function = { handler = \"m.f\"; };\n"
                       "kafka = { topics = [\"t\"]; static_membership = true;\n"
                       "  properties = ( (\"session.timeout.ms\", \"45000\"),\n"
                       "                 (\"fetch.wait.max.ms\", \"10\") ); };\n"
                       "dispatch = { max_in_flight = 3; retry = { max_attempts = 2; }; };\n"),
            sets, 2, err, sizeof(err));
        unlink(path);
        KT_CHECK(conf != NULL, "load: %s", err);
        if (!conf)
                goto out;
        KT_CHECK(conf->runtime_port == 8081, "FUNC_PORT over default: %d", conf->runtime_port);
        KT_CHECK(conf->timeout_s == 11, "KTRIGGER_ over Kubeless: %d", conf->timeout_s);
        KT_CHECK(conf->max_in_flight == 7, "--set over env and file: %d", conf->max_in_flight);
        KT_CHECK(conf->retry_max_attempts == 4, "env over file: %d", conf->retry_max_attempts);
        KT_CHECK(conf->ordering == KT_ORDER_NONE, "enum from env");
        KT_CHECK(conf->static_membership == 0, "bool from env over file");
        KT_CHECK(conf->topic_cnt == 2 && !strcmp(conf->topics[1], "y"), "list from env");
        /* Properties merge by name: the file's fetch.wait.max.ms stays. */
        KT_CHECK(conf->prop_cnt == 4, "props %zu", conf->prop_cnt);
        for (size_t i = 0; i < conf->prop_cnt; i++) {
                const kt_config_prop_t *p = &conf->props[i];
                if (!strcmp(p->name, "session.timeout.ms"))
                        KT_CHECK(!strcmp(p->value, "50000") && p->src.origin == KT_ORIGIN_ENV,
                                 "env property over file: %s", p->value);
                else if (!strcmp(p->name, "fetch.wait.max.ms"))
                        KT_CHECK(p->src.origin == KT_ORIGIN_FILE && p->line == 4,
                                 "file property kept, line %d", p->line);
                else if (!strcmp(p->name, "debug"))
                        KT_CHECK_STR(p->value, "fetch,queue");
                else
                        KT_CHECK(!strcmp(p->name, "linger.ms") && p->src.origin == KT_ORIGIN_FLAG,
                                 "unexpected %s", p->name);
        }
        k = kt_config_key_find("runtime.timeout_s");
        KT_CHECK(conf->sources[k - kt_config_keys].origin == KT_ORIGIN_ENV &&
                     !strcmp(conf->sources[k - kt_config_keys].name, "KTRIGGER_RUNTIME_TIMEOUT_S"),
                 "source of runtime.timeout_s");
        k = kt_config_key_find("runtime.port");
        KT_CHECK_STR(conf->sources[k - kt_config_keys].name, "FUNC_PORT");
        k = kt_config_key_find("function.handler");
        KT_CHECK(conf->sources[k - kt_config_keys].origin == KT_ORIGIN_FILE &&
                     conf->sources[k - kt_config_keys].line == 1,
                 "handler from file line 1");
        k = kt_config_key_find("runtime.host");
        KT_CHECK(conf->sources[k - kt_config_keys].origin == KT_ORIGIN_DEFAULT, "default");
        KT_CHECK(conf->set_cnt == 2, "sets kept for reload");
        kt_config_destroy(conf);
out:
        env_clear();
}

/* --print-config: sources shown, secrets redacted (even from the environment), references as
 * written; a literal secret in a file others can read is warned about. */
static void test_print_and_secrets(void) {
        char err[4096], *buf = NULL;
        size_t len = 0;
        FILE *f;
        kt_config_t *conf;

        env_clear();
        setenv("KT_TEST_PW", "hunter2", 1);
        setenv("KTRIGGER_KAFKA_PRODUCER_PROPERTIES", "sasl.password=envsecret", 1);
        conf = kt_config_load(
            write_conf("function = { handler = \"m.f\"; };\n"
                       "kafka = { topics = [\"t\"];\n"
                       "  properties = ( (\"sasl.password\", \"literal-pw\"),\n"
                       "                 (\"sasl.username\", \"${KT_TEST_PW}\") ); };\n"),
            err, sizeof(err));
        KT_CHECK(conf != NULL, "load: %s", err);
        if (conf) {
                f = open_memstream(&buf, &len);
                kt_config_print(conf, f);
                fclose(f);
                KT_CHECK(!strstr(buf, "literal-pw") && !strstr(buf, "hunter2") &&
                             !strstr(buf, "envsecret"),
                         "a secret is printed:\n%s", buf);
                KT_CHECK(strstr(buf, "kafka.properties.\"sasl.password\" = \"(redacted)\"  # ") !=
                             NULL,
                         "%s", buf);
                KT_CHECK(strstr(buf, "kafka.properties.\"sasl.username\" = \"${KT_TEST_PW}\"") !=
                             NULL,
                         "reference as written:\n%s", buf);
                KT_CHECK(strstr(buf,
                                "kafka.producer_properties.\"sasl.password\" = "
                                "\"(redacted)\"  # env KTRIGGER_KAFKA_PRODUCER_PROPERTIES") != NULL,
                         "%s", buf);
                KT_CHECK(strstr(buf, "dispatch.max_in_flight = 64  # default\n") != NULL, "%s",
                         buf);
                KT_CHECK(strstr(buf, "function.handler = \"m.f\"  # ") != NULL &&
                             strstr(buf, ":1\n") != NULL,
                         "file source:\n%s", buf);
                KT_CHECK(strlen(conf->hash) == 16 && !strstr(buf, "hunter2"), "hash");
                free(buf);
                buf = NULL;
                /* mkstemp made it 0600: nobody else can read it. */
                KT_CHECK(conf->warnings == NULL, "warning for a private file: %s", conf->warnings);
                kt_config_destroy(conf);
        }
        chmod(path, 0644);
        conf = kt_config_load(path, err, sizeof(err));
        KT_CHECK(conf && conf->warnings &&
                     strstr(conf->warnings, ":3: kafka.properties: "
                                            "sasl.password holds a literal "
                                            "secret in a file readable by "
                                            "other users (mode 644)"),
                 "warning: %s", conf ? conf->warnings : err);
        KT_CHECK(conf && conf->warnings && !strstr(conf->warnings, "sasl.username"),
                 "a reference is not a literal secret");
        kt_config_destroy(conf);
        unlink(path);
        unsetenv("KT_TEST_PW");
        env_clear();
}

/* A producer message.max.bytes a reply may not fit is warned about, located; others are not. */
static void test_producer_size(void) {
        static const struct {
                const char *value, *reply;
                int warned;
        } cases[] = {
            {"1000000", "r", 1},
            {"1064959", "r", 1},
            {"1064960", "r", 0},
            {"1000000", NULL, 0}, /* no replies: dead letters are the topic's business */
        };
        char text[512], err[1024];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t *conf;
                snprintf(text, sizeof(text),
                         "function = { handler = \"m.f\"; };\n"
                         "kafka = { topics = [\"t\"];\n"
                         "  producer_properties = ( (\"message.max.bytes\", \"%s\") ); };\n"
                         "%s%s%s",
                         cases[i].value, cases[i].reply ? "dispatch = { reply_topic = \"" : "",
                         cases[i].reply ? cases[i].reply : "", cases[i].reply ? "\"; };\n" : "");
                conf = kt_config_load(write_conf(text), err, sizeof(err));
                KT_CHECK(conf != NULL, "%s: load: %s", cases[i].value, err);
                if (conf) {
                        const char *w = conf->warnings
                                            ? strstr(conf->warnings, ":3: kafka."
                                                                     "producer_properties: "
                                                                     "message.max.bytes: ")
                                            : NULL;
                        KT_CHECK(!w == !cases[i].warned, "%s (reply %s): warnings: %s",
                                 cases[i].value, cases[i].reply ? "on" : "off",
                                 conf->warnings ? conf->warnings : "(none)");
                }
                kt_config_destroy(conf);
                unlink(path);
        }
}

/* Reload classes: what changed decides how it applies. */
static void test_diff(void) {
        static const struct {
                const char *set;
                int want;
                const char *changed;
        } cases[] = {
            {"dispatch.max_in_flight=64", -1, ""},
            {"dispatch.max_in_flight=8", KT_RELOAD_LIVE, "dispatch.max_in_flight"},
            {"log.level=debug", KT_RELOAD_LIVE, "log.level"},
            {"kafka.topics=t,u", KT_RELOAD_REJOIN, "kafka.topics"},
            {"kafka.properties=fetch.wait.max.ms=5", KT_RELOAD_REJOIN, "kafka.properties"},
            {"dispatch.ordering=key", KT_RELOAD_REJOIN, "dispatch.ordering"},
            {"metrics.listen=127.0.0.1:1", KT_RELOAD_RESTART, "metrics.listen"},
            {"dispatch.reply_topic=r", KT_RELOAD_REJOIN, "dispatch.reply_topic"},
        };
        char err[4096], changed[256];
        kt_config_t *a, *b;

        env_clear();
        setenv("FUNC_HANDLER", "m.f", 1);
        setenv("TOPIC_NAME", "t", 1);
        a = kt_config_load(NULL, err, sizeof(err));
        KT_CHECK(a != NULL, "%s", err);
        for (size_t i = 0; a && i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *sets[] = {(char *)cases[i].set};
                int got;
                b = kt_config_load_with(NULL, sets, 1, err, sizeof(err));
                KT_CHECK(b != NULL, "case %zu: %s", i, err);
                if (!b)
                        continue;
                got = kt_config_diff(a, b, changed, sizeof(changed));
                KT_CHECK(got == cases[i].want, "case %zu: class %d", i, got);
                KT_CHECK(!strcmp(changed, cases[i].changed), "case %zu: changed %s", i, changed);
                KT_CHECK((got < 0) == !strcmp(a->hash, b->hash), "case %zu: hash", i);
                kt_config_destroy(b);
        }
        /* Several at once: the strongest class wins (a restart-only key never hides a
         * re-join). */
        if (a) {
                char *sets[] = {"metrics.listen=127.0.0.1:1", "kafka.topics=t,u",
                                "dispatch.max_in_flight=3"};
                b = kt_config_load_with(NULL, sets, 3, err, sizeof(err));
                KT_CHECK(b && kt_config_diff(a, b, changed, sizeof(changed)) == KT_RELOAD_REJOIN,
                         "mixed change: %s", changed);
                KT_CHECK(!strcmp(changed, "kafka.topics, dispatch.max_in_flight, metrics.listen"),
                         "changed: %s", changed);
                kt_config_destroy(b);
        }
        kt_config_destroy(a);
        env_clear();
}

/* Secrets stay out of error messages and of the hash, yet a changed secret is a change. */
static void test_secret_values_hidden(void) {
        char err[4096];
        char *bad_entry[] = {"kafka.properties=sasl.password: hunter2"};
        kt_config_t *a, *b;
        char changed[256];

        env_clear();
        setenv("FUNC_HANDLER", "m.f", 1);
        setenv("TOPIC_NAME", "t", 1);
        KT_CHECK(kt_config_load_with(NULL, bad_entry, 1, err, sizeof(err)) == NULL, "bad entry");
        KT_CHECK(strstr(err, "--set: kafka.properties: entry 1 is not name=value") &&
                     !strstr(err, "hunter2"),
                 "%s", err);
        setenv("KT_TEST_PW", "hunter2", 1);
        setenv("KTRIGGER_KAFKA_PROPERTIES", "security.protocol=${KT_TEST_PW}", 1);
        KT_CHECK(kt_config_load(NULL, err, sizeof(err)) == NULL, "bad protocol");
        KT_CHECK(strstr(err, "KTRIGGER_KAFKA_PROPERTIES: kafka.properties: ") &&
                     strstr(err, "(redacted)") && !strstr(err, "hunter2"),
                 "%s", err);
        setenv("KTRIGGER_KAFKA_PROPERTIES", "sasl.password=${KT_TEST_PW}", 1);
        a = kt_config_load(NULL, err, sizeof(err));
        setenv("KT_TEST_PW", "other", 1);
        b = kt_config_load(NULL, err, sizeof(err));
        KT_CHECK(a && b, "%s", err);
        if (a && b) {
                KT_CHECK(!strcmp(a->hash, b->hash), "the hash must not depend on a secret");
                KT_CHECK(kt_config_diff(a, b, changed, sizeof(changed)) == KT_RELOAD_REJOIN &&
                             !strcmp(changed, "kafka.properties"),
                         "a changed secret is a change: %s", changed);
        }
        kt_config_destroy(a);
        kt_config_destroy(b);
        unsetenv("KT_TEST_PW");
        env_clear();
}

/* The example file: loads, and documents every key of the schema; every key has a doc. */
static void test_example_file(void) {
        char err[4096], *text = NULL;
        size_t len = 0;
        FILE *f = fopen(KT_EXAMPLE_CONF, "r"), *m;
        kt_config_t *conf;

        env_clear();
        KT_CHECK(f != NULL, "cannot open %s", KT_EXAMPLE_CONF);
        if (!f)
                return;
        m = open_memstream(&text, &len);
        for (int c; (c = fgetc(f)) != EOF;)
                fputc(c, m);
        fclose(f);
        fclose(m);
        conf = kt_config_load(KT_EXAMPLE_CONF, err, sizeof(err));
        KT_CHECK(conf != NULL, "example: %s", err);
        /* The values it writes are the defaults it documents, except these examples. */
        {
                char *sets[] = {"function.handler=hello.handler", "kafka.topics=hello-topic"};
                kt_config_t *def = kt_config_load_with(NULL, sets, 2, err, sizeof(err));
                char changed[512] = "";
                KT_CHECK(def != NULL, "defaults: %s", err);
                if (conf && def)
                        kt_config_diff(def, conf, changed, sizeof(changed));
                KT_CHECK(!strcmp(changed, "kafka.brokers, kafka.properties, "
                                          "kafka.producer_properties"),
                         "the example file differs from the defaults in: %s", changed);
                kt_config_destroy(def);
        }
        kt_config_destroy(conf);
        for (size_t i = 0; i < kt_config_key_cnt; i++) {
                const kt_config_key_t *k = &kt_config_keys[i];
                const char *leaf = strrchr(k->path, '.') + 1;
                char set[128], commented[128];
                snprintf(set, sizeof(set), " %s = ", leaf);
                snprintf(commented, sizeof(commented), "# %s = ", leaf);
                KT_CHECK(strstr(text, set) || strstr(text, commented),
                         "%s is not in the example file", k->path);
                KT_CHECK(k->doc && *k->doc, "%s has no doc", k->path);
        }
        free(text);
}

/** Load \p text (a file), put the errors in \p err. @returns the config or NULL. */
static kt_config_t *load_text(const char *text, char *err, size_t size) {
        kt_config_t *conf = kt_config_load(write_conf(text), err, size);
        unlink(path);
        return conf;
}

static int count_of(const char *hay, const char *needle) {
        int n = 0;
        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

#define BASE                                                                                       \
        "function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"]; brokers = \"b:1\"; };\n"

/* Files are checked before they are read: an @include of a directory (libconfig 1.5 exits(2)
 * in its scanner) or of a FIFO (blocks), a ${file:} of a FIFO (blocks), of a directory (read
 * as an empty secret), an empty secret: each an error naming file:line, in this process. */
static void test_files_checked(void) {
        static const char *const fifo = "/tmp/kt-test-fifo", *const dir = "/tmp/kt-test-dir",
                                 *const empty = "/tmp/kt-test-empty", *const nl = "/tmp/kt-test-nl";
        static const struct {
                const char *text;
                const char *want;
        } cases[] = {
            {BASE "@include \"/tmp/kt-test-dir\"\n",
             ":3: @include: cannot read \"/tmp/kt-test-dir\": it is a directory"},
            {BASE "  @include \"/tmp/kt-test-fifo\"\n",
             ":3: @include: cannot read \"/tmp/kt-test-fifo\": it is a FIFO"},
            {BASE "@include \"/nonexistent/x.conf\"\n",
             ":3: @include: cannot read \"/nonexistent/x.conf\": No such file"},
            {BASE "dispatch = {\n dead_letter_topic = \"${file:/tmp/kt-test-fifo}\"; };\n",
             ":4: dispatch.dead_letter_topic: cannot read /tmp/kt-test-fifo: it is a FIFO, not a "
             "regular file"},
            {BASE "dispatch = {\n reply_topic = \"${file:/tmp/kt-test-dir}\"; };\n",
             ":4: dispatch.reply_topic: cannot read /tmp/kt-test-dir: it is a directory"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"sasl.password\", \"${file:/tmp/kt-test-empty}\") ); };\n",
             ":3: kafka.properties: /tmp/kt-test-empty is empty"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"sasl.password\", \"${file:/tmp/kt-test-nl}\") ); };\n",
             ":3: kafka.properties: /tmp/kt-test-nl is empty"},
            {"function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
             "properties = ( (\"sasl.password\", \"${KT_TEST_EMPTY}\") ); };\n",
             ":3: kafka.properties: environment variable KT_TEST_EMPTY is empty"},
            {BASE "@include \"/tmp/kt-test-self\"\n", "more than 10 nested includes"},
            {BASE "@include \"/tmp/kt-test-self2\"\n", "more than 10 nested includes"},
            {BASE "@include \"/tmp/kt-test-many\"\n", "more than 64 included files"},
        };
        char err[4096];
        FILE *f;

        env_clear();
        unlink(fifo);
        rmdir(dir);
        KT_CHECK(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
        KT_CHECK(mkdir(dir, 0700) == 0, "mkdir: %s", strerror(errno));
        if ((f = fopen(empty, "w")))
                fclose(f);
        if ((f = fopen(nl, "w"))) {
                fputs("\n", f);
                fclose(f);
        }
        if ((f = fopen("/tmp/kt-test-self", "w"))) {
                fputs("@include \"/tmp/kt-test-self\"\n", f);
                fclose(f);
        }
        if ((f = fopen("/tmp/kt-test-self2", "w"))) { /* 10 deep, 10 wide: 10^10 reads */
                for (int i = 0; i < 10; i++)
                        fputs("@include \"/tmp/kt-test-self2\"\n", f);
                fclose(f);
        }
        if ((f = fopen("/tmp/kt-test-many", "w"))) {
                for (int i = 0; i < 70; i++)
                        fputs("@include \"/tmp/kt-test-empty\"\n", f);
                fclose(f);
        }
        setenv("KT_TEST_EMPTY", "", 1);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t *conf = load_text(cases[i].text, err, sizeof(err));
                KT_CHECK(conf == NULL, "files %zu should fail", i);
                kt_config_destroy(conf);
                KT_CHECK(strstr(err, cases[i].want) != NULL, "files %zu: want '%s' in:\n%s", i,
                         cases[i].want, err);
                KT_CHECK(count_of(err, "@include") <= 1, "files %zu: one include error:\n%s", i,
                         err);
        }
        /* Errors in an @include'd file name that file. */
        if ((f = fopen("/tmp/kt-test-incl", "w"))) {
                fputs("runtime = { port = 0;\n  prot = 1; };\nfoo = 1;\n", f);
                fclose(f);
        }
        KT_CHECK(!load_text(BASE "@include \"/tmp/kt-test-incl\"\n", err, sizeof(err)) &&
                     strstr(err, "/tmp/kt-test-incl:1: runtime.port: 0 is outside") &&
                     strstr(err, "/tmp/kt-test-incl:2: runtime: unknown key 'prot'") &&
                     strstr(err, "/tmp/kt-test-incl:3: foo: unknown section"),
                 "include errors: %s", err);
        unlink("/tmp/kt-test-incl");
        /* The config file itself. */
        KT_CHECK(kt_config_load(dir, err, sizeof(err)) == NULL && strstr(err, "is a directory"),
                 "a directory as the config: %s", err);
        KT_CHECK(kt_config_load(fifo, err, sizeof(err)) == NULL && strstr(err, "is a FIFO"),
                 "a FIFO as the config: %s", err);
        /* A NUL byte would end libconfig's input early, silently. */
        {
                static const char text[] = BASE "runtime = { port = 1; };\n\0runtime = { x };";
                int fd;
                snprintf(path, sizeof(path), "/tmp/kt-test-conf-XXXXXX");
                fd = mkstemp(path);
                KT_CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)sizeof(text) - 1, "write");
                close(fd);
                KT_CHECK(kt_config_load(path, err, sizeof(err)) == NULL &&
                             strstr(err, ":4: syntax: a NUL byte"),
                         "NUL: %s", err);
                unlink(path);
        }
        unsetenv("KT_TEST_EMPTY");
        unlink(fifo);
        rmdir(dir);
        unlink(empty);
        unlink(nl);
        unlink("/tmp/kt-test-self");
        unlink("/tmp/kt-test-self2");
        unlink("/tmp/kt-test-many");
}

/* Integers are read in 64 bits and range-checked as written: libconfig 1.5 wraps a literal
 * beyond 32 bits (4294967360 reads as 64). */
static void test_int64(void) {
        static const struct {
                const char *line;
                const char *want; /* NULL: loads */
                int max_in_flight;
        } cases[] = {
            {"dispatch = { max_in_flight = 4294967360; };",
             ":3: dispatch.max_in_flight: 4294967360 is outside 1..10000", 0},
            {"dispatch = { max_in_flight = -4294967232; };",
             ":3: dispatch.max_in_flight: -4294967232 is outside 1..10000", 0},
            {"dispatch = { max_in_flight = 0x100000040; };",
             ":3: dispatch.max_in_flight: 4294967360 is outside 1..10000", 0},
            {"dispatch = { max_in_flight = 4294967360L; };",
             ":3: dispatch.max_in_flight: 4294967360 is outside 1..10000", 0},
            {"dispatch = { max_in_flight = 99999999999999999999; };",
             ":3: syntax: 99999999999999999999 does not fit in 64 bits", 0},
            {"dispatch = { max_in_flight = 2147483648; };",
             ":3: dispatch.max_in_flight: 2147483648 is outside", 0},
            {"dispatch = { max_in_flight = 64; };", NULL, 64},
            {"dispatch = { max_in_flight = 0x10; };", NULL, 16},
            /* digits in names and strings are not numbers */
            {"dispatch = { max_in_flight = 7; dead_letter_topic = \"t4294967360\"; };", NULL, 7},
            {"# 4294967360\ndispatch = { max_in_flight = 8; /* 99999999999999999999 */ };", NULL,
             8},
        };
        char err[4096], text[512];

        env_clear();
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t *conf;
                snprintf(text, sizeof(text), BASE "%s\n", cases[i].line);
                conf = load_text(text, err, sizeof(err));
                if (cases[i].want) {
                        KT_CHECK(conf == NULL, "int %zu should fail", i);
                        KT_CHECK(strstr(err, cases[i].want) != NULL, "int %zu: want '%s' in:\n%s",
                                 i, cases[i].want, err);
                } else {
                        KT_CHECK(conf != NULL, "int %zu: %s", i, err);
                        KT_CHECK(conf && conf->max_in_flight == cases[i].max_in_flight,
                                 "int %zu: max_in_flight %d", i, conf ? conf->max_in_flight : -1);
                }
                kt_config_destroy(conf);
        }
        /* In properties too: the value as written reaches librdkafka (which range-checks). */
        {
                kt_config_t *conf =
                    load_text("function = { handler = \"m.f\"; };\nkafka = { topics = [\"t\"];\n"
                              "properties = ( (\"fetch.wait.max.ms\", 4294967360) ); };\n",
                              err, sizeof(err));
                KT_CHECK(conf == NULL &&
                             strstr(err, ":3: kafka.properties: fetch.wait.max.ms: 4294967360 "
                                         "does not fit in librdkafka's 32-bit integer"),
                         "property beyond 32 bits: %s", err);
                kt_config_destroy(conf);
        }
        /* The environment: out of range, not "not an integer". */
        setenv("FUNC_HANDLER", "m.f", 1);
        setenv("TOPIC_NAME", "t", 1);
        setenv("KTRIGGER_DISPATCH_MAX_IN_FLIGHT", "4294967360", 1);
        KT_CHECK(kt_config_load(NULL, err, sizeof(err)) == NULL &&
                     strstr(err, "KTRIGGER_DISPATCH_MAX_IN_FLIGHT: dispatch.max_in_flight: "
                                 "4294967360 is outside 1..10000"),
                 "env: %s", err);
        env_clear();
}

/* A long string parses in linear time (libconfig reading a file itself: 28 s for 8 MiB). */
static void test_long_string(void) {
        size_t n = 8u << 20;
        char *text = malloc(n + 256), err[1024];
        struct timespec a, b;
        kt_config_t *conf;
        double s;

        env_clear();
        if (!text)
                return;
        snprintf(text, 256, BASE "dispatch = { dead_letter_topic = \"");
        memset(text + strlen(text), 'a', n);
        snprintf(text + strlen(BASE) + 34 + n, 64, "\"; };\n");
        clock_gettime(CLOCK_MONOTONIC, &a);
        conf = load_text(text, err, sizeof(err));
        clock_gettime(CLOCK_MONOTONIC, &b);
        s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        /* Not a valid topic name (> 249): the point is how long it takes to say so. */
        KT_CHECK(conf == NULL && strstr(err, ":3: dispatch.dead_letter_topic: "), "%.200s", err);
        KT_CHECK(s < 5.0, "8 MiB string: %.1f s", s);
        kt_config_destroy(conf);
        free(text);
}

/* Issue 14's rough edges. */
static void test_rough_edges(void) {
        static const struct {
                const char *func, *mod, *brokers;
                const char *want; /* NULL: loads */
        } env_cases[] = {
            {"mod.", NULL, NULL,
             "FUNC_HANDLER: function.handler: 'mod.' is not module.function: an empty module "
             "or function name"},
            {".fn", NULL, NULL, "'.fn' is not module.function"},
            {"a..b", NULL, NULL, "'a..b' is not module.function"},
            {"my mod.fn", NULL, NULL,
             "FUNC_HANDLER: function.handler: 'my mod.fn' is not module.function: white space"},
            {"fn", "my mod", NULL, "'my mod.fn' is not module.function"},
            {"m.f", NULL, "kafka:notaport",
             "KAFKA_BROKERS: kafka.brokers: 'kafka:notaport' is not host:port"},
            {"m.f", NULL, "a:1,b:99999", "'b:99999' is not host:port"},
            {"m.f", NULL, "a:1,b:", "'b:' is not host:port"},
            {"m.f", NULL, "kafka", NULL},
            {"m.f", NULL, "a:1, b:2 c:3", NULL},
            {"m.f", NULL, "SSL://a:9093,[::1]:9092", NULL},
            {"pkg.mod.fn", NULL, NULL, NULL},
            {"handler", "hello", NULL, NULL},
        };
        static const struct {
                const char *listen, *host;
                int port;
        } listens[] = {
            {":9464", "0.0.0.0", 9464},
            {"127.0.0.1:1", "127.0.0.1", 1},
            {"[::]:80", "::", 80},
            {":0", NULL, 0},
            {":x", NULL, 0},
            {":", NULL, 0},
        };
        char err[4096];
        kt_config_t *conf;

        for (size_t i = 0; i < sizeof(env_cases) / sizeof(env_cases[0]); i++) {
                env_clear();
                setenv("FUNC_HANDLER", env_cases[i].func, 1);
                if (env_cases[i].mod)
                        setenv("MOD_NAME", env_cases[i].mod, 1);
                if (env_cases[i].brokers)
                        setenv("KAFKA_BROKERS", env_cases[i].brokers, 1);
                setenv("TOPIC_NAME", "t", 1);
                conf = kt_config_load(NULL, err, sizeof(err));
                if (env_cases[i].want)
                        KT_CHECK(!conf && strstr(err, env_cases[i].want),
                                 "env %zu: want '%s' in:\n%s", i, env_cases[i].want,
                                 conf ? "(loaded)" : err);
                else
                        KT_CHECK(conf != NULL, "env %zu: %s", i, err);
                kt_config_destroy(conf);
        }
        for (size_t i = 0; i < sizeof(listens) / sizeof(listens[0]); i++) {
                char *sets[] = {NULL};
                char set[64];
                env_clear();
                setenv("FUNC_HANDLER", "m.f", 1);
                setenv("TOPIC_NAME", "t", 1);
                snprintf(set, sizeof(set), "metrics.listen=%s", listens[i].listen);
                sets[0] = set;
                conf = kt_config_load_with(NULL, sets, 1, err, sizeof(err));
                if (listens[i].host) {
                        KT_CHECK(conf && !strcmp(conf->metrics_host, listens[i].host) &&
                                     conf->metrics_port == listens[i].port,
                                 "listen '%s': %s", listens[i].listen, conf ? "" : err);
                } else
                        KT_CHECK(!conf && strstr(err, "--set: metrics.listen: '"),
                                 "listen '%s' must fail", listens[i].listen);
                kt_config_destroy(conf);
        }
        /* FUNC_HANDLER=handler without MOD_NAME: exactly one error, about that. */
        env_clear();
        setenv("FUNC_HANDLER", "handler", 1);
        setenv("TOPIC_NAME", "t", 1);
        conf = kt_config_load(NULL, err, sizeof(err));
        KT_CHECK(!conf && count_of(err, "function.handler") == 1 && !strchr(err, '\n') &&
                     strstr(err, "MOD_NAME is not set"),
                 "one error, got:\n%s", err);
        kt_config_destroy(conf);
        env_clear();
}

/* The reader: the child's answer loads to the same configuration as an in-process load; a
 * child that exits (as libconfig does), crashes or hangs is an error, killed at its deadline. */
static void child_exit2(int fd, void *arg) {
        (void)fd;
        (void)arg;
        exit(2);
}

static void child_hang(int fd, void *arg) {
        (void)fd;
        (void)arg;
        for (;;)
                pause();
}

static void child_crash(int fd, void *arg) {
        (void)fd;
        (void)arg;
        raise(SIGKILL);
}

static void child_garbage(int fd, void *arg) {
        (void)arg;
        if (write(fd, "Ovalues = (", 11) != 11)
                _exit(3);
        _exit(0);
}

static void test_reader(void) {
        static const struct {
                void (*fn)(int, void *);
                const char *want;
        } bad[] = {
            {child_exit2, "F: cannot read: reading it ended the reader with exit status 2"},
            {child_hang, "F: cannot read: not read and checked within 300 ms"},
            {child_crash, "F: cannot read: reading it killed the reader (signal 9"},
            {child_garbage, "config: the reader's answer does not parse"},
        };
        char err[4096], err2[4096], *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0;
        char *sets[] = {"dispatch.max_in_flight=9", "kafka.producer_properties=linger.ms=5"};
        kt_config_t *a, *b;
        FILE *f;
        int json = -1;

        env_clear();
        setenv("KT_TEST_PW", "hunter2", 1);
        setenv("POD_NAME", "pod-1", 1);
        write_conf("function = { handler = \"m.f\"; };\n"
                   "kafka = { topics = [\"t\", \"u\"]; brokers = \"b:1\"; static_membership = "
                   "true;\n"
                   "  properties = ( (\"sasl.password\", \"${KT_TEST_PW}\"),\n"
                   "    (\"fetch.wait.max.ms\", 10) );\n"
                   "  producer_properties = ( (\"message.max.bytes\", \"100000\") ); };\n"
                   "dispatch = { reply_topic = \"r\"; ordering = \"key\"; };\n"
                   "metrics = { listen = \":9999\"; };\nlog = { level = \"debug\"; };\n");
        a = kt_config_load_with(path, sets, 2, err, sizeof(err));
        b = kt_config_load_isolated(path, sets, 2, err2, sizeof(err2), &json);
        KT_CHECK(a && b, "load: %s / isolated: %s", err, err2);
        if (a && b) {
                char changed[256];
                KT_CHECK(kt_config_diff(a, b, changed, sizeof(changed)) == -1, "differ: %s",
                         changed);
                KT_CHECK_STR(b->hash, a->hash);
                KT_CHECK(b->set_cnt == 2 && !strcmp(b->sets[1], a->sets[1]), "sets");
                KT_CHECK(b->warnings && a->warnings && !strcmp(a->warnings, b->warnings),
                         "warnings: %s", b->warnings);
                KT_CHECK_STR(b->instance_id, "pod-1");
                KT_CHECK(b->metrics_port == 9999 && !strcmp(b->metrics_host, "0.0.0.0"), "listen");
                KT_CHECK(b->prop_cnt == 2 && !strcmp(b->props[0].value, "hunter2") &&
                             !strcmp(b->props[0].raw, "${KT_TEST_PW}") && b->props[0].line == 3,
                         "props");
                KT_CHECK(b->producer_prop_cnt == 2, "producer props %zu", b->producer_prop_cnt);
                f = open_memstream(&pa, &la);
                kt_config_print(a, f);
                fclose(f);
                f = open_memstream(&pb, &lb);
                kt_config_print(b, f);
                fclose(f);
                KT_CHECK(la == lb && !memcmp(pa, pb, la), "--print-config differs:\n%s\n%s", pa,
                         pb);
                free(pa);
                free(pb);
        }
        kt_config_destroy(a);
        kt_config_destroy(b);
        /* Errors come back as they are, with the log format. */
        setenv("KTRIGGER_LOG_FORMAT", "json", 1);
        setenv("KTRIGGER_RUNTIME_PORT", "0", 1);
        KT_CHECK(!kt_config_load_isolated(path, NULL, 0, err2, sizeof(err2), &json) &&
                     strstr(err2, "KTRIGGER_RUNTIME_PORT: runtime.port: 0 is outside") && json == 1,
                 "errors: %s (json %d)", err2, json);
        unlink(path);
        unsetenv("KT_TEST_PW");
        unsetenv("POD_NAME");
        env_clear();

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                kt_config_reader_t *kr =
                    kt_config_reader_run(bad[i].fn, NULL, "F", 300, err, sizeof(err));
                kt_config_t *conf = NULL;
                struct timespec t0, t1;
                double s;

                KT_CHECK(kr != NULL, "bad %zu: start: %s", i, err);
                if (!kr)
                        continue;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                while (kt_config_reader_step(kr, &conf, err, sizeof(err), NULL))
                        poll(NULL, 0, 10);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
                KT_CHECK(conf == NULL && strstr(err, bad[i].want), "bad %zu: want '%s' in '%s'", i,
                         bad[i].want, err);
                KT_CHECK(s < 3.0, "bad %zu: took %.1f s", i, s);
                kt_config_reader_destroy(kr);
                kt_config_destroy(conf);
        }
}

int main(void) {
        test_handler_resolve();
        test_references();
        test_hostport();
        test_good_file_and_env();
        test_errors();
        test_errors_exact();
        test_zookeeper();
        test_precedence();
        test_print_and_secrets();
        test_diff();
        test_producer_size();
        test_secret_values_hidden();
        test_example_file();
        test_files_checked();
        test_int64();
        test_long_string();
        test_rough_edges();
        test_reader();
        return kt_test_done("test_config");
}
