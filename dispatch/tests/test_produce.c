/* The classification of produce errors. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../dispatch.h"

#include <stdlib.h>

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

int main(void) {
        test_produce_classes();
        return kt_test_done("test_produce");
}
