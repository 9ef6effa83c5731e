/* Configuration: handler resolution, host:port, file + environment, every error reported. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../config.h"

#include <stdlib.h>
#include <unistd.h>

static const char *const env_vars[] = {"FUNC_HANDLER",
                                       "MOD_NAME",
                                       "TOPIC_NAME",
                                       "KAFKA_BROKERS",
                                       "KUBELESS_KAFKA_SVC",
                                       "KUBELESS_KAFKA_NAMESPACE",
                                       "FUNC_PORT",
                                       "FUNC_TIMEOUT",
                                       "KTRIGGER_METRICS_LISTEN",
                                       "KTRIGGER_LOG_LEVEL",
                                       "KTRIGGER_KAFKA_ZOOKEEPER"};

static void env_clear(void) {
        for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
                unsetenv(env_vars[i]);
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
            /* Every error in one run. */
            {"function = { handler = 5; };\nkafka = { topics = [\"t\"]; };\n"
             "runtime = { timeout_s = 0; port = \"x\"; };\nmetrics = { listen = \"nope\"; };\n"
             "dispatch = { retry = { initial_backoff_ms = 500; max_backoff_ms = 100; }; };\nextra "
             "= {};\n",
             {":1: function.handler: must be a string", ":3: runtime.timeout_s: 0 is outside",
              ":3: runtime.port: must be an integer", ":4: metrics.listen: 'nope'",
              ":5: dispatch.retry.max_backoff_ms: 100 is below", ":6: extra: unknown section"}},
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
        KT_CHECK(strstr(err, "FUNC_HANDLER: 'handler' is not module.function") != NULL, "%s", err);
        KT_CHECK(strstr(err, "FUNC_PORT: '80a' is not an integer") != NULL, "%s", err);
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

int main(void) {
        test_handler_resolve();
        test_references();
        test_hostport();
        test_good_file_and_env();
        test_errors();
        test_zookeeper();
        return kt_test_done("test_config");
}
