/* The classification of produce errors, and which producer settings the user's win over. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <stdlib.h>
#include <string.h>

static void test_produce_classes(void) {
        static const struct {
                rd_kafka_resp_err_t err;
                int permanent;
        } cases[] = {
            {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 1},
            {RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, 1},
            {RD_KAFKA_RESP_ERR_INVALID_RECORD, 1},
            {RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, 1},
            {RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, 1},
            {RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION, 1},
            {RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION, 1},
            {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 1},
            {RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED, 1},
            {RD_KAFKA_RESP_ERR_POLICY_VIOLATION, 1},
            {RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, 0},
            {RD_KAFKA_RESP_ERR__QUEUE_FULL, 0},
            {RD_KAFKA_RESP_ERR__TRANSPORT, 0},
            {RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, 0},
            {RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, 0},
            {RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0},
            {RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0},
            {RD_KAFKA_RESP_ERR_INVALID_MSG, 0},
            {RD_KAFKA_RESP_ERR__PURGE_QUEUE, 0},
            {RD_KAFKA_RESP_ERR__AUTHENTICATION, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int got = kt_produce_err_permanent(cases[i].err);
                KT_CHECK(!got == !cases[i].permanent, "%s: got %d want %d",
                         rd_kafka_err2name(cases[i].err), got, cases[i].permanent);
        }
}

/** \p name's value in the producer configuration built from \p props (name, value pairs). */
static void check_prop(kt_config_prop_t *props, size_t cnt, const char *name, const char *want) {
        kt_config_t conf = {0};
        char errstr[512] = "", got[256] = "";
        size_t size = sizeof(got);
        rd_kafka_conf_t *rkconf;

        conf.brokers = "127.0.0.1:9";
        conf.producer_props = props;
        conf.producer_prop_cnt = cnt;
        rkconf = kt_produce_rkconf(&conf, errstr, sizeof(errstr));
        KT_CHECK(rkconf != NULL, "kt_produce_rkconf: %s", errstr);
        if (!rkconf)
                return;
        KT_CHECK(rd_kafka_conf_get(rkconf, name, got, &size) == RD_KAFKA_CONF_OK, "%s: unknown",
                 name);
        KT_CHECK(!strcmp(got, want), "%s (%zu user properties): got '%s' want '%s'", name, cnt, got,
                 want);
        rd_kafka_conf_destroy(rkconf);
}

/* ktrigger's defaults give way to the user's producer_properties; what dead letters and the
 * log need (refused by the configuration, see config_load.c) is always ktrigger's. */
static void test_producer_properties_win(void) {
        kt_config_prop_t user[] = {
            {.name = "linger.ms", .value = "0"},
            {.name = "client.id", .value = "orders-replies"},
            {.name = "statistics.interval.ms", .value = "0"},
        };

        check_prop(NULL, 0, "linger.ms", "5");
        check_prop(NULL, 0, "client.id", "ktrigger-producer");
        check_prop(NULL, 0, "statistics.interval.ms", "5000");
        check_prop(user, 3, "linger.ms", "0");
        check_prop(user, 3, "client.id", "orders-replies");
        check_prop(user, 3, "statistics.interval.ms", "0");
        check_prop(user, 3, "acks", "-1");
        check_prop(user, 3, "enable.idempotence", "true");
        check_prop(user, 3, "log.queue", "true");
}

int main(void) {
        test_produce_classes();
        test_producer_properties_win();
        return kt_test_done("test_produce");
}
