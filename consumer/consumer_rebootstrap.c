/*
 * DESIGN: adding the bootstrap brokers again when librdkafka has stranded a client.
 *
 * librdkafka 2.10 and later (the 2.14.2 ktrigger links by default) can lose every broker for
 * good when a KRaft broker restarts (README, librdkafka): during its controlled shutdown the
 * broker answers a Metadata request with 0 brokers, librdkafka decommissions the ones it knew,
 * and if the re-bootstrap it then starts is cancelled in a race (rd_kafka_rebootstrap_tmr_stop),
 * its in-progress flag stays set and no later re-bootstrap runs: no broker is left to connect
 * to, ever. rd_kafka_brokers_add() with the bootstrap list brings such a client back.
 *
 * The sign is in librdkafka's statistics: the "brokers" object lists every broker the client
 * has, with its "source": "configured" (bootstrap.servers, rd_kafka_brokers_add), "learned"
 * (from metadata), "logical" (the group coordinator's alias), "internal". A client with neither
 * a configured nor a learned broker has nothing to connect to. That is normal only for the
 * moment a working re-bootstrap takes, so the list is added again once it has lasted
 * KT_REBOOTSTRAP_AFTER_MS (two statistics intervals at the default 5 s), and again at most every
 * KT_REBOOTSTRAP_EVERY_MS while it lasts. Adding a broker librdkafka has as "configured" is a
 * no-op, so a wrong guess costs nothing; 2.0.2 never drops its configured brokers, so there the
 * guard never fires. The list is bootstrap.servers plus every broker added at run time (found
 * in ZooKeeper), up to KT_REBOOTSTRAP_MAX_BYTES.
 *
 * Pure bookkeeping: the caller (the consumer's and the producer's statistics callbacks, on the
 * loop thread) passes the parsed "brokers" object and the time, and adds the list it is given.
 * Without statistics (statistics.interval.ms = 0) there is no guard.
 */
#define _POSIX_C_SOURCE 200809L
#include "consumer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define FAC "KAFKA"

struct kt_rebootstrap {
        const char *client; /**< "consumer" or "producer", for the log (static) */
        char *brokers;      /**< bootstrap.servers plus every broker added since, comma-separated */
        size_t len;
        int64_t stranded_since_ms; /**< statistics first showed no broker; -1: not stranded */
        int64_t added_ms;          /**< when the list was last added again; -1: never */
        uint64_t count;            /**< times it was added again */
};

kt_rebootstrap_t *kt_rebootstrap_new(const char *client, const char *bootstrap) {
        kt_rebootstrap_t *rb = calloc(1, sizeof(*rb));

        if (!rb)
                return NULL;
        rb->client = client;
        rb->stranded_since_ms = rb->added_ms = -1;
        rb->brokers = strdup(bootstrap ? bootstrap : "");
        if (!rb->brokers) {
                free(rb);
                return NULL;
        }
        rb->len = strlen(rb->brokers);
        return rb;
}

void kt_rebootstrap_destroy(kt_rebootstrap_t *rb) {
        if (!rb)
                return;
        free(rb->brokers);
        free(rb);
}

/** \p name is one of the comma-separated entries of \p list. */
static int listed(const char *list, const char *name, size_t n) {
        for (const char *s = list; *s;) {
                size_t l = strcspn(s, ",");
                if (l == n && !memcmp(s, name, n))
                        return 1;
                s += l;
                if (*s == ',')
                        s++;
        }
        return 0;
}

int kt_rebootstrap_remember(kt_rebootstrap_t *rb, const char *brokers) {
        for (const char *s = brokers; s && *s;) {
                size_t n = strcspn(s, ",");
                if (n && !listed(rb->brokers, s, n)) {
                        char *grown;
                        size_t need = rb->len + (rb->len ? 1 : 0) + n;
                        if (need > KT_REBOOTSTRAP_MAX_BYTES ||
                            !(grown = realloc(rb->brokers, need + 1))) {
                                KT_WARN(FAC,
                                        "%s: broker list over %d bytes: %s is not added again "
                                        "if librdkafka loses every broker",
                                        rb->client, KT_REBOOTSTRAP_MAX_BYTES, brokers);
                                return -1;
                        }
                        rb->brokers = grown;
                        if (rb->len)
                                rb->brokers[rb->len++] = ',';
                        memcpy(rb->brokers + rb->len, s, n);
                        rb->len += n;
                        rb->brokers[rb->len] = '\0';
                }
                s += n;
                if (*s == ',')
                        s++;
        }
        return 0;
}

/** The client has a broker to connect to: a configured or a learned one. */
static int has_broker(const cJSON *brokers) {
        const cJSON *b;

        cJSON_ArrayForEach(b, brokers) {
                const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
                if (!cJSON_IsString(src))
                        return 1; /* a statistics shape we do not know: assume all is well */
                if (!strcmp(src->valuestring, "configured") || !strcmp(src->valuestring, "learned"))
                        return 1;
        }
        return 0;
}

const char *kt_rebootstrap_check(kt_rebootstrap_t *rb, const struct cJSON *brokers,
                                 int64_t now_ms) {
        if (!cJSON_IsObject(brokers) || has_broker(brokers)) {
                if (rb->stranded_since_ms >= 0 && rb->added_ms >= rb->stranded_since_ms)
                        KT_INFO(FAC, "%s: librdkafka has a broker to connect to again", rb->client);
                rb->stranded_since_ms = -1;
                return NULL;
        }
        if (rb->stranded_since_ms < 0) {
                rb->stranded_since_ms = now_ms;
                return NULL;
        }
        if (now_ms - rb->stranded_since_ms < KT_REBOOTSTRAP_AFTER_MS ||
            (rb->added_ms >= 0 && now_ms - rb->added_ms < KT_REBOOTSTRAP_EVERY_MS) || !rb->len)
                return NULL;
        rb->added_ms = now_ms;
        rb->count++;
        KT_WARN(FAC,
                "%s: librdkafka has had no broker to connect to for %lld ms (its re-bootstrap "
                "stalled): adding the bootstrap brokers again: %s",
                rb->client, (long long)(now_ms - rb->stranded_since_ms), rb->brokers);
        return rb->brokers;
}

uint64_t kt_rebootstrap_count(const kt_rebootstrap_t *rb) {
        return rb ? rb->count : 0;
}
