/*
 * Reload (SIGHUP), as the loop's DESIGN block (core_loop.c) says: live changes apply between
 * two iterations; a re-join drains (REJOIN_DRAIN), commits and makes a new consumer.
 */
#define _GNU_SOURCE
#include "core_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "LOOP"

/** Map the configuration's topics to their metrics. @returns 0, -1 out of memory. */
int kt_loop_topic_map_build(kt_loop_t *kl) {
        size_t *map = calloc(kl->conf->topic_cnt + 1, sizeof(*map));

        if (!map)
                return -1;
        for (size_t i = 0; i < kl->conf->topic_cnt; i++)
                if ((map[i] = kt_metrics_topic_index(kl->km, kl->conf->topics[i])) == (size_t)-1)
                        KT_WARN(FAC, "topic %s: no room for its call metrics (restart to count it)",
                                kl->conf->topics[i]);
        free(kl->topic_map);
        kl->topic_map = map;
        return 0;
}

static int needs_producer(const kt_config_t *conf) {
        return conf->on_failure == KT_FAIL_DEAD_LETTER || conf->reply_topic != NULL;
}

void kt_loop_log_lines(int level, const char *prefix, const char *text) {
        for (const char *l = text; l && *l;) {
                const char *nl = strchr(l, '\n');
                int len = nl ? (int)(nl - l) : (int)strlen(l);
                kt_log(level, "CONFIG", "%s%.*s", prefix, len, l);
                l = nl ? nl + 1 : l + len;
        }
}

/** Make the producer if \p c needs one. @returns 0, or -1 with the reason in \p errstr. */
int kt_loop_producer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (needs_producer(c) &&
            !(kl->kp = kt_produce_new(c, kt_loop_produced, kl, errstr, errstr_size)))
                return -1;
        return 0;
}

/** Make the consumer of \p c and its ZooKeeper discovery. @returns 0, or -1 with nothing
 *  made and the reason in \p errstr. */
int kt_loop_consumer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (!(kl->kc = kt_consumer_new(c, &kl->hooks, errstr, errstr_size)))
                return -1;
        if (c->zookeeper &&
            !(kl->zk = kt_consumer_zk_new(c, kt_loop_zk_broker, kl, errstr, errstr_size))) {
                kt_consumer_destroy(kl->kc);
                kl->kc = NULL;
                return -1;
        }
        return 0;
}

/** Both, for a re-join. @returns 0, or -1 with nothing made. */
static int kafka_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (kt_loop_producer_build(kl, c, errstr, errstr_size))
                return -1;
        if (kt_loop_consumer_build(kl, c, errstr, errstr_size)) {
                kt_produce_destroy(kl->kp);
                kl->kp = NULL;
                return -1;
        }
        return 0;
}

/** Point every module at \p nc, free the old configuration. A new scheduler when
 *  \p new_sched (nothing is scheduled: between consumers). */
static void conf_switch(kt_loop_t *kl, kt_config_t *nc, int new_sched) {
        kt_config_t *old = kl->conf;
        kt_sched_t *ks;

        if (kt_dispatch_conf_set(kl->kd, nc))
                KT_WARN(FAC, "reload: out of memory adding call slots: fewer than %d in flight",
                        nc->max_in_flight);
        if (new_sched && (ks = kt_sched_new(nc))) {
                kt_sched_destroy(kl->ks);
                kl->ks = ks;
        } else
                kt_sched_conf_set(kl->ks, nc);
        if (kl->kp)
                kt_produce_conf_set(kl->kp, nc);
        if (kl->kc)
                kt_consumer_conf_set(kl->kc, nc);
        if (kl->zk)
                kt_consumer_zk_conf_set(kl->zk, nc);
        kl->conf = nc;
        *kl->confp = nc;
        if (kt_loop_topic_map_build(kl))
                KT_WARN(FAC, "reload: out of memory: call metrics by topic are off");
        kt_log_level_set(nc->log_level);
        kt_log_json_set(nc->log_json);
        kt_metrics_readiness_kafka_set(kl->km, nc->metrics_ready_kafka);
        kt_config_destroy(old);
}

/** REJOIN_COMMIT is over (drained, committed or given up): leave, join again with
 *  kl->rejoin_conf. If its consumer cannot be made, join again with the running
 *  configuration. @returns 0, -1 if no consumer could be made at all (the loop stops). */
int kt_loop_rejoin(kt_loop_t *kl) {
        kt_config_t *nc = kl->rejoin_conf;
        char errstr[512], errstr2[512];

        kl->rejoin_conf = NULL;
        kt_loop_fds_forget(kl);         /* their wake-up fds are closed below; numbers get reused */
        kt_consumer_zk_destroy(kl->zk); /* first: its broker callback uses the clients */
        kl->zk = NULL;
        kt_loop_kafka_close(kl); /* leaves the group (its partitions were drained), beating */
        kl->next_due_ms = INT64_MAX;
        if (kafka_build(kl, nc, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "reload: %s: joining again with the running configuration (config %s)",
                       errstr, kl->conf->hash);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                kt_config_destroy(nc);
                if (kafka_build(kl, kl->conf, errstr2, sizeof(errstr2))) {
                        KT_ERR(FAC, "consumer: %s", errstr2);
                        return -1;
                }
        } else {
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
                conf_switch(kl, nc, 1);
        }
        kt_metrics_zookeeper_enable(kl->km, kl->zk != NULL);
        kt_loop_state_set(kl, KT_LOOP_RUNNING); /* holds the new consumer if the runtime is down */
        return 0;
}

/** Before the group was joined (waiting for the runtime): everything applies at once. */
static void apply_before_join(kt_loop_t *kl, kt_config_t *nc) {
        kt_produce_t *kp = kl->kp;
        char errstr[512];

        kl->kp = NULL;
        if (kt_loop_producer_build(kl, nc, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "reload: %s: still running on the previous configuration (config %s)",
                       errstr, kl->conf->hash);
                kl->kp = kp;
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                kt_config_destroy(nc);
                return;
        }
        kt_loop_fds_forget(kl); /* the old producer's fd is closed next */
        kt_produce_destroy(kp);
        kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
        conf_switch(kl, nc, 1);
}

/** A re-join still draining is no longer wanted: fetch again. */
static void rejoin_cancel(kt_loop_t *kl) {
        KT_INFO(FAC, "reload: the waiting re-join is cancelled");
        kt_config_destroy(kl->rejoin_conf);
        kl->rejoin_conf = NULL;
        kt_loop_state_set(kl, KT_LOOP_RUNNING);
}

/** SIGHUP: start reading the configuration again, in a child process (config_reader.c), so
 *  nothing it reads can end or stall the loop; kt_loop_reload_poll() applies what it gives. */
void kt_loop_reload(kt_loop_t *kl) {
        char errstr[512];

        kl->reload_asked = 0;
        if (kl->state == KT_LOOP_SHUTDOWN_DRAIN || kl->state == KT_LOOP_SHUTDOWN_COMMIT) {
                KT_INFO(FAC, "reload: ignored while shutting down");
                return;
        }
        if (kl->reader) {
                KT_INFO(FAC, "reload: SIGHUP again while reading: reading again");
                kt_loop_fds_forget(kl); /* its fd is closed next; numbers get reused */
                kt_config_reader_destroy(kl->reader);
                kl->reader = NULL;
        }
        if (!(kl->reader = kt_config_reader_start(kl->conf->path, kl->conf->sets, kl->conf->set_cnt,
                                                  errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "reload: %s: still running on the previous configuration (config %s)",
                       errstr, kl->conf->hash);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
        }
}

/** Apply the configuration a reload read (see the loop's DESIGN block). */
static void reload_apply(kt_loop_t *kl, kt_config_t *nc) {
        char changed[1024];
        int cls;

        kt_loop_log_lines(KT_LOG_WARNING, "", nc->warnings);
        cls = kt_config_diff(kl->conf, nc, changed, sizeof(changed));
        if (needs_producer(kl->conf) != needs_producer(nc))
                cls = KT_RELOAD_REJOIN;
        if (kl->state == KT_LOOP_REJOIN_COMMIT)
                cls = KT_RELOAD_REJOIN; /* released already: the re-join happens, with nc */
        if (kl->state == KT_LOOP_REJOIN_DRAIN && cls < KT_RELOAD_REJOIN)
                rejoin_cancel(kl); /* changed back while a re-join waited */
        if (cls < 0) {
                KT_INFO(FAC, "reload: no setting changed (config %s)", nc->hash);
                kt_config_destroy(nc);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_UNCHANGED, kl->conf->hash);
                return;
        }
        if (strcmp(kl->conf->metrics_listen, nc->metrics_listen)) {
                KT_WARN(FAC,
                        "reload: metrics.listen changed to %s: it applies at the next "
                        "start; still serving on %s",
                        nc->metrics_listen, kl->conf->metrics_listen);
                /* The running value stays what the running configuration says. */
                free(nc->metrics_listen);
                nc->metrics_listen = strdup(kl->conf->metrics_listen);
        }
        if (!kl->kc) {
                KT_INFO(FAC, "reload: %s changed: applied before joining (config %s -> %s)",
                        changed, kl->conf->hash, nc->hash);
                apply_before_join(kl, nc);
                return;
        }
        if (cls == KT_RELOAD_REJOIN) {
                KT_INFO(FAC,
                        "reload: %s changed: finishing %zu buffered records (at most %d ms), "
                        "then committing and re-joining the group (config %s -> %s)",
                        changed, kt_consumer_undone(kl->kc), kl->conf->drain_timeout_ms,
                        kl->conf->hash, nc->hash);
                kt_config_destroy(kl->rejoin_conf); /* a newer reload replaces a waiting one */
                kl->rejoin_conf = nc;
                if (kl->state == KT_LOOP_RUNNING)
                        kt_loop_state_set(kl, KT_LOOP_REJOIN_DRAIN);
                return;
        }
        KT_INFO(FAC, "reload: %s changed: applied (config %s -> %s)", changed, kl->conf->hash,
                nc->hash);
        kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
        conf_switch(kl, nc, 0);
}

int kt_loop_reload_poll(kt_loop_t *kl) {
        static char errstr[16384]; /* loop thread only */
        kt_config_t *nc = NULL;

        if (!kl->reader)
                return 0;
        if (kt_config_reader_step(kl->reader, &nc, errstr, sizeof(errstr), NULL))
                return 0;       /* still reading */
        kt_loop_fds_forget(kl); /* its fd is closed next; numbers get reused */
        kt_config_reader_destroy(kl->reader);
        kl->reader = NULL;
        if (kl->state == KT_LOOP_SHUTDOWN_DRAIN || kl->state == KT_LOOP_SHUTDOWN_COMMIT ||
            kl->state == KT_LOOP_STOPPED) {
                KT_INFO(FAC, "reload: ignored while shutting down");
                kt_config_destroy(nc);
                return 0;
        }
        if (!nc) {
                kt_loop_log_lines(KT_LOG_ERR, "reload: ", errstr);
                KT_ERR(FAC,
                       "reload: invalid configuration: still running on the previous one "
                       "(config %s)",
                       kl->conf->hash);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                return 0;
        }
        reload_apply(kl, nc);
        return 1;
}
