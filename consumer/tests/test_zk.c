/* ZooKeeper discovery: Kafka's broker registrations parsed into the endpoint to bootstrap from
 * (good and bad data), and a discovery handle that cannot reach ZooKeeper. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../consumer.h"

#include <stdlib.h>
#include <time.h>

/* Kafka 2.x/3.x (ZooKeeper mode) registration, version 5. */
#define V5                                                                                         \
        "{\"listener_security_protocol_map\":{\"PLAINTEXT\":\"PLAINTEXT\",\"SSL\":\"SSL\"},"       \
        "\"endpoints\":[\"PLAINTEXT://h1:9092\",\"SSL://h1:9093\"],\"jmx_port\":-1,"               \
        "\"features\":{},\"host\":\"h1\",\"port\":9092,\"timestamp\":\"1700000000000\","           \
        "\"version\":5}"
/* Listener names that are not protocol names. */
#define NAMED                                                                                      \
        "{\"listener_security_protocol_map\":{\"INTERNAL\":\"PLAINTEXT\","                         \
        "\"EXTERNAL\":\"SASL_SSL\"},\"endpoints\":[\"INTERNAL://10.0.0.1:9092\","                  \
        "\"EXTERNAL://kafka-0.example.com:9094\"],\"host\":\"10.0.0.1\",\"port\":9092,"            \
        "\"version\":4}"

static void test_parse(void) {
        static const struct {
                const char *json;
                const char *protocol, *listener;
                const char *want; /* hostport, or NULL for an error */
                const char *why;  /* with an error: a substring of the reason */
        } cases[] = {
            /* good */
            {V5, NULL, NULL, "h1:9092", NULL},
            {V5, "PLAINTEXT", NULL, "h1:9092", NULL},
            {V5, "ssl", NULL, "h1:9093", NULL},
            {V5, NULL, "ssl", "h1:9093", NULL},
            {V5, "SSL", "", "h1:9093", NULL},
            {NAMED, "SASL_SSL", NULL, "kafka-0.example.com:9094", NULL},
            {NAMED, "plaintext", NULL, "10.0.0.1:9092", NULL},
            {NAMED, "SSL", "EXTERNAL", "kafka-0.example.com:9094", NULL},
            {NAMED, NULL, "internal", "10.0.0.1:9092", NULL},
            {"{\"version\":1,\"host\":\"broker_1.local\",\"port\":9092,\"jmx_port\":-1}", NULL,
             NULL, "broker_1.local:9092", NULL},
            {"{\"version\":2,\"host\":\"h\",\"port\":9092,\"endpoints\":[\"PLAINTEXT://h:9092\","
             "\"SSL://h2:9093\"]}",
             "SSL", NULL, "h2:9093", NULL},
            {"{\"endpoints\":[\"PLAINTEXT://[::1]:9092\"]}", NULL, NULL, "[::1]:9092", NULL},
            {"{\"endpoints\":[\"PLAINTEXT://[fe80::1:2]:1\"]}", NULL, NULL, "[fe80::1:2]:1", NULL},
            {"{\"host\":\"2001:db8::7\",\"port\":65535}", NULL, NULL, "[2001:db8::7]:65535", NULL},
            {"{\"endpoints\":[],\"host\":\"h\",\"port\":9092}", NULL, NULL, "h:9092", NULL},
            {"{\"endpoints\":null,\"host\":\"h\",\"port\":9092.0}", NULL, NULL, "h:9092", NULL},
            {"  {\"host\":\"h\",\"port\":1}  ", NULL, NULL, "h:1", NULL},
            /* not JSON, wrong shapes */
            {"not json", NULL, NULL, NULL, "not JSON"},
            {"{\"host\":\"h\",\"port\":", NULL, NULL, NULL, "not JSON"},
            {"[\"PLAINTEXT://h:9092\"]", NULL, NULL, NULL, "not a JSON object"},
            {"\"PLAINTEXT://h:9092\"", NULL, NULL, NULL, "not a JSON object"},
            {"{}", NULL, NULL, NULL, "no endpoints and no string host"},
            {"{\"version\":4,\"host\":null,\"port\":-1,\"endpoints\":[]}", NULL, NULL, NULL,
             "no endpoints and no string host"},
            {"{\"endpoints\":\"PLAINTEXT://h:9092\"}", NULL, NULL, NULL,
             "endpoints is not an array"},
            {"{\"endpoints\":{\"PLAINTEXT\":\"h:9092\"}}", NULL, NULL, NULL,
             "endpoints is not an array"},
            {"{\"endpoints\":[9092]}", NULL, NULL, NULL, "an endpoint is not a string"},
            {"{\"endpoints\":[\"h:9092\"]}", NULL, NULL, NULL, "is not LISTENER://host:port"},
            {"{\"endpoints\":[\"://h:9092\"]}", NULL, NULL, NULL, "is not LISTENER://host:port"},
            {"{\"listener_security_protocol_map\":[],\"endpoints\":[\"PLAINTEXT://h:1\"]}", NULL,
             NULL, NULL, "listener_security_protocol_map is not an object"},
            {"{\"listener_security_protocol_map\":{\"A\":\"PLAINTEXT\"},"
             "\"endpoints\":[\"B://h:1\"]}",
             NULL, NULL, NULL, "listener 'B' is not in listener_security_protocol_map"},
            {"{\"listener_security_protocol_map\":{\"A\":7},\"endpoints\":[\"A://h:1\"]}", NULL,
             NULL, NULL, "listener 'A' is not in"},
            {"{\"host\":\"h\",\"port\":\"9092\"}", NULL, NULL, NULL, "numeric port"},
            {"{\"host\":7,\"port\":9092}", NULL, NULL, NULL, "string host"},
            /* no endpoint for us */
            {V5, "SASL_SSL", NULL, NULL, "no endpoint with security protocol SASL_SSL"},
            {NAMED, "SSL", NULL, NULL, "no endpoint with security protocol SSL"},
            {NAMED, NULL, "REPLICATION", NULL, "no endpoint for listener REPLICATION"},
            {"{\"endpoints\":[\"SSL://h:9093\"]}", NULL, NULL, NULL,
             "no endpoint with security protocol PLAINTEXT"},
            {"{\"version\":1,\"host\":\"h\",\"port\":9092}", "SSL", NULL, NULL,
             "host and port are PLAINTEXT only"},
            {"{\"version\":1,\"host\":\"h\",\"port\":9092}", NULL, "PLAINTEXT", NULL,
             "host and port are PLAINTEXT only"},
            /* bad ports */
            {"{\"endpoints\":[\"PLAINTEXT://h:65536\"]}", NULL, NULL, NULL,
             "port 65536 is outside 1..65535"},
            {"{\"endpoints\":[\"PLAINTEXT://h:0\"]}", NULL, NULL, NULL, "port 0 is outside"},
            {"{\"endpoints\":[\"PLAINTEXT://h:99999999999999999999\"]}", NULL, NULL, NULL,
             "port is not 1..65535"},
            {"{\"endpoints\":[\"PLAINTEXT://h:90x\"]}", NULL, NULL, NULL, "port is not 1..65535"},
            {"{\"endpoints\":[\"PLAINTEXT://h:-1\"]}", NULL, NULL, NULL, "port is not 1..65535"},
            {"{\"endpoints\":[\"PLAINTEXT://h:\"]}", NULL, NULL, NULL, "has an empty port"},
            {"{\"endpoints\":[\"PLAINTEXT://h\"]}", NULL, NULL, NULL, "has no port"},
            {"{\"host\":\"h\",\"port\":70000}", NULL, NULL, NULL, "port 70000 is not 1..65535"},
            {"{\"host\":\"h\",\"port\":9092.5}", NULL, NULL, NULL, "is not 1..65535"},
            {"{\"host\":\"h\",\"port\":-1}", NULL, NULL, NULL, "port -1 is not 1..65535"},
            {"{\"host\":\"h\",\"port\":1e300}", NULL, NULL, NULL, "is not 1..65535"},
            /* bad hosts */
            {"{\"endpoints\":[\"PLAINTEXT://:9092\"]}", NULL, NULL, NULL, "has an empty host"},
            {"{\"host\":\"\",\"port\":9092}", NULL, NULL, NULL, "is not a host name"},
            {"{\"endpoints\":[\"PLAINTEXT://a,b:9092\"]}", NULL, NULL, NULL,
             "host 'a,b' is not a host name"},
            {"{\"endpoints\":[\"PLAINTEXT://a b:9092\"]}", NULL, NULL, NULL, "is not a host name"},
            {"{\"endpoints\":[\"PLAINTEXT://a\\nb:9092\"]}", NULL, NULL, NULL,
             "host 'a?b' is not a host name"},
            {"{\"endpoints\":[\"PLAINTEXT://::1:9092\"]}", NULL, NULL, NULL,
             "an IPv6 address must be in brackets"},
            {"{\"endpoints\":[\"PLAINTEXT://[::1]9092\"]}", NULL, NULL, NULL,
             "is not [address]:port"},
            {"{\"endpoints\":[\"PLAINTEXT://[zz::q]:9092\"]}", NULL, NULL, NULL,
             "is not a host name or address"},
            {"{\"endpoints\":[\"PLAINTEXT://[]:9092\"]}", NULL, NULL, NULL, "has an empty host"},
            {"{\"host\":\"1:2:3\",\"port\":9092}", NULL, NULL, NULL, "is not a host name"},
        };
        char hp[KT_ZK_HOSTPORT_SIZE], why[256];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_err_t err;

                why[0] = '\0';
                memcpy(hp, "junk", 5);
                err = kt_consumer_zk_broker_parse(cases[i].json, strlen(cases[i].json),
                                                  cases[i].protocol, cases[i].listener, hp,
                                                  sizeof(hp), why, sizeof(why));
                if (cases[i].want) {
                        KT_CHECK(err == KT_OK, "case %zu (%s): %s", i, cases[i].json, why);
                        KT_CHECK(!strcmp(hp, cases[i].want), "case %zu: got '%s', want '%s'", i, hp,
                                 cases[i].want);
                } else {
                        KT_CHECK(err == KT_ERR_INVALID, "case %zu (%s): accepted as '%s'", i,
                                 cases[i].json, hp);
                        KT_CHECK(strstr(why, cases[i].why) != NULL, "case %zu: want '%s' in '%s'",
                                 i, cases[i].why, why);
                        KT_CHECK(hp[0] == '\0', "case %zu: hostport '%s' left on error", i, hp);
                }
        }
}

/** Bounds: the length given is what is read, oversize input, too small an output buffer. */
static void test_parse_bounds(void) {
        static const char v1[] = "{\"host\":\"h1\",\"port\":9092}";
        char hp[KT_ZK_HOSTPORT_SIZE], small[7], why[256];
        size_t big_len = KT_ZK_MAX_ZNODE_BYTES + 1;
        char *big = malloc(big_len + 1);

        /* Cut short: only the length given is parsed (a znode is not NUL-terminated). */
        KT_CHECK(kt_consumer_zk_broker_parse(v1, 10, NULL, NULL, hp, sizeof(hp), why,
                                             sizeof(why)) == KT_ERR_INVALID,
                 "prefix parsed");
        KT_CHECK(strstr(why, "not JSON") != NULL, "%s", why);
        KT_CHECK(kt_consumer_zk_broker_parse(v1, 0, NULL, NULL, hp, sizeof(hp), why, sizeof(why)) ==
                     KT_ERR_INVALID,
                 "empty parsed");
        KT_CHECK(strstr(why, "empty registration") != NULL, "%s", why);
        KT_CHECK(kt_consumer_zk_broker_parse(NULL, 5, NULL, NULL, hp, sizeof(hp), why,
                                             sizeof(why)) == KT_ERR_INVALID,
                 "NULL parsed");
        /* "h1:9092" needs 8 bytes. */
        KT_CHECK(kt_consumer_zk_broker_parse(v1, strlen(v1), NULL, NULL, small, sizeof(small), why,
                                             sizeof(why)) == KT_ERR_INVALID,
                 "truncated endpoint accepted: '%s'", small);
        KT_CHECK(small[0] == '\0' && strstr(why, "longer than 7 bytes") != NULL, "%s", why);
        KT_CHECK(big != NULL, "malloc");
        if (!big)
                return;
        /* Valid JSON, but one byte over the cap. */
        memset(big, ' ', big_len);
        memcpy(big, v1, strlen(v1));
        big[big_len] = '\0';
        KT_CHECK(kt_consumer_zk_broker_parse(big, big_len, NULL, NULL, hp, sizeof(hp), why,
                                             sizeof(why)) == KT_ERR_INVALID,
                 "oversize accepted");
        KT_CHECK(strstr(why, "over the 65536-byte cap") != NULL, "%s", why);
        /* At the cap exactly: fine. */
        KT_CHECK(kt_consumer_zk_broker_parse(big, big_len - 1, NULL, NULL, hp, sizeof(hp), why,
                                             sizeof(why)) == KT_OK,
                 "at the cap: %s", why);
        KT_CHECK(!strcmp(hp, "h1:9092"), "at the cap: got %s", hp);
        free(big);
}

/** Nothing listens: the handle keeps trying, never connects, never discovers, frees cleanly
 *  (its ZooKeeper threads joined; ASan sees any use after free or leak). */
static void test_unreachable(void) {
        kt_config_t conf = {0};
        char errstr[256];
        kt_zk_t *zk;

        conf.zookeeper = NULL;
        KT_CHECK(kt_consumer_zk_new(&conf, NULL, NULL, errstr, sizeof(errstr)) == NULL,
                 "no kafka.zookeeper accepted");
        KT_CHECK(strstr(errstr, "kafka.zookeeper is not set") != NULL, "%s", errstr);
        kt_consumer_zk_destroy(NULL);

        conf.zookeeper = "127.0.0.1:1/kt-test";
        zk = kt_consumer_zk_new(&conf, NULL, NULL, errstr, sizeof(errstr));
        KT_CHECK(zk != NULL, "new: %s", errstr);
        if (!zk)
                return;
        KT_CHECK(kt_consumer_zk_wakeup_fd(zk) >= 0, "wake-up fd");
        for (int i = 0; i < 10; i++) {
                struct timespec ts = {0, 30 * 1000 * 1000};
                int64_t due = kt_consumer_zk_poll(zk);
                KT_CHECK(due > 0, "due %lld", (long long)due);
                nanosleep(&ts, NULL);
        }
        KT_CHECK(!kt_consumer_zk_stats(zk)->connected, "connected to nothing");
        KT_CHECK(!kt_consumer_zk_stats(zk)->discovered && !kt_consumer_zk_stats(zk)->brokers,
                 "discovered from nothing");
        kt_consumer_zk_destroy(zk);
}

/** Connect strings resolved to numeric addresses (off the loop, see consumer_zk.c). Only
 *  numeric hosts and localhost (/etc/hosts): no network. */
static void test_connect_resolve(void) {
        static const struct {
                const char *in;
                size_t size;      /* of the output buffer */
                const char *want; /* the output, or a part of the error text */
                int ok;
        } cases[] = {
            {"127.0.0.1:2181", 256, "127.0.0.1:2181", 1},
            {"127.0.0.1:2181,127.0.0.2:2182/kafka", 256, "127.0.0.1:2181,127.0.0.2:2182/kafka", 1},
            {"127.0.0.1:2181,  127.0.0.3:1/a/b", 256, "127.0.0.1:2181,127.0.0.3:1/a/b", 1},
            {"[127.0.0.1]:7", 256, "127.0.0.1:7", 1},
            {"127.0.0.1", 256, "has no port", 0},
            {"127.0.0.1:", 256, "has no port", 0},
            {":2181", 256, "has no host", 0},
            {"127.0.0.1:2181,127.0.0.2:2182", 20, "over 20 bytes", 0},
            {"127.0.0.1:2181/kafka", 16, "over 16 bytes", 0},
        };
        char out[256], errstr[256];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_err_t err;
                errstr[0] = '\0';
                err = kt_consumer_zk_connect_resolve(cases[i].in, out, cases[i].size, errstr,
                                                     sizeof(errstr));
                if (cases[i].ok) {
                        KT_CHECK(err == KT_OK, "%s: %s", cases[i].in, errstr);
                        if (!err)
                                KT_CHECK(!strcmp(out, cases[i].want), "%s -> '%s', want '%s'",
                                         cases[i].in, out, cases[i].want);
                } else
                        KT_CHECK(err != KT_OK && strstr(errstr, cases[i].want), "%s: %d '%s'",
                                 cases[i].in, (int)err, errstr);
        }
        /* A name from /etc/hosts: resolved to its numeric address(es), the chroot kept. */
        KT_CHECK(kt_consumer_zk_connect_resolve("localhost:2181/k", out, sizeof(out), errstr,
                                                sizeof(errstr)) == KT_OK,
                 "localhost: %s", errstr);
        KT_CHECK(!strstr(out, "localhost") && strstr(out, ":2181") && strlen(out) > 2 &&
                     !strcmp(out + strlen(out) - 2, "/k"),
                 "localhost:2181/k -> '%s'", out);
}

int main(void) {
        test_parse();
        test_connect_resolve();
        test_parse_bounds();
        test_unreachable();
        return kt_test_done("test_zk");
}
