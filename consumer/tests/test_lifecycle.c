/*
 * Partition lifecycle, revoke and commit logic of consumer_group.c, against librdkafka's
 * in-process mock cluster (loopback only): ACTIVE -> DRAINING -> RELEASED, the completed-offset
 * map a drain commits and the next owner honours, lost partitions, refused commits.
 *
 * Each scenario has its own group and topic. The mock's joins take ~3 s and a member joining
 * a running group waits session.timeout.ms - 1 s, hence session.timeout.ms=6000.
 * KT_TEST_VERBOSE=1 prints the consumer's info logs, 2 also its debug logs (librdkafka's cgrp).
 */
#define _GNU_SOURCE
#include "../../core/tests/kt_test.h"
#include "../consumer_lifecycle.h"

#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define NPART 2  /* partitions of every test topic */
#define NREC  10 /* records produced to each partition */

/* Kafka protocol ApiKeys (librdkafka's rdkafka_protocol.h is not installed). */
#define API_OFFSET_COMMIT 8
#define API_JOIN_GROUP    11

static rd_kafka_t *mock_rk; /* the handle that owns the mock cluster */
static rd_kafka_mock_cluster_t *mc;
static const char *bootstraps;

/** One kt_consumer_t and what its hooks saw. */
typedef struct member {
        const char *name;
        kt_config_t *conf;
        kt_consumer_t *kc;
        kt_record_t *recs[NPART][NREC]; /* buffered, not done by us, not released */
        int delivered[NPART][NREC];     /* record hook calls */
        int released[NPART];            /* release hook calls */
        int released_lost[NPART];       /* of which with lost=1 */
        int bad_release;                /* release hook on a partition already RELEASED */
} member_t;

static void hook_release(void *opaque, kt_partition_t *p, int lost) {
        member_t *m = opaque;

        if (p->state == KT_PART_RELEASED)
                m->bad_release++;
        if (p->partition < 0 || p->partition >= NPART)
                return;
        m->released[p->partition]++;
        m->released_lost[p->partition] += lost != 0;
        /* As the loop does: forget its records, they are never marked done now. */
        memset(m->recs[p->partition], 0, sizeof(m->recs[p->partition]));
}

static void hook_record(void *opaque, kt_record_t *rec) {
        member_t *m = opaque;
        int32_t part = rec->part->partition;

        if (part < 0 || part >= NPART || rec->offset < 0 || rec->offset >= NREC)
                return;
        m->delivered[part][rec->offset]++;
        m->recs[part][rec->offset] = rec;
}

static int member_start(member_t *m, const char *name, const char *topic, const char *group,
                        int drain_ms, const char *props) {
        char topics[64], brokers[256], gid[64], drain[64], kprops[512];
        char *sets[] = {"function.handler=test.lifecycle", topics, brokers, gid, drain, kprops};
        kt_consumer_hooks_t hooks = {hook_release, hook_record, m};
        char err[4096];

        memset(m, 0, sizeof(*m));
        m->name = name;
        snprintf(topics, sizeof(topics), "kafka.topics=%s", topic);
        snprintf(brokers, sizeof(brokers), "kafka.brokers=%s", bootstraps);
        snprintf(gid, sizeof(gid), "kafka.group_id=%s", group);
        snprintf(drain, sizeof(drain), "dispatch.drain_timeout_ms=%d", drain_ms);
        snprintf(kprops, sizeof(kprops),
                 "kafka.properties=session.timeout.ms=6000;heartbeat.interval.ms=500;"
                 "statistics.interval.ms=0%s%s",
                 props ? ";" : "", props ? props : "");
        m->conf = kt_config_load_with(NULL, sets, sizeof(sets) / sizeof(sets[0]), err, sizeof(err));
        KT_CHECK(m->conf != NULL, "%s: config: %s", name, err);
        if (!m->conf)
                return -1;
        m->kc = kt_consumer_new(m->conf, &hooks, err, sizeof(err));
        KT_CHECK(m->kc != NULL, "%s: consumer: %s", name, err);
        return m->kc ? 0 : -1;
}

static void member_stop(member_t *m) {
        kt_consumer_destroy(m->kc);
        m->kc = NULL;
        kt_config_destroy(m->conf);
        m->conf = NULL;
}

/** Mark record \p off of \p part done, as the loop does when its call succeeded. */
static int mark_done(member_t *m, int part, int64_t off) {
        kt_record_t *rec = m->recs[part][off];

        KT_CHECK(rec != NULL, "%s: [%d] @%lld is not buffered", m->name, part, (long long)off);
        if (!rec)
                return -1;
        m->recs[part][off] = NULL;
        kt_consumer_record_done(m->kc, rec);
        return 0;
}

static kt_partition_t *part_get(member_t *m, int32_t partition) {
        for (kt_partition_t *p = kt_consumer_partitions(m->kc); p; p = p->next)
                if (p->partition == partition)
                        return p;
        return NULL;
}

static int delivered_cnt(const member_t *m) {
        int n = 0;
        for (int p = 0; p < NPART; p++)
                for (int o = 0; o < NREC; o++)
                        n += m->delivered[p][o];
        return n;
}

typedef int(cond_fn)(void *arg);

/**
 * Run the loop's Kafka side for the members (NULL entries skipped) until \p cond holds or
 * \p timeout_ms passes; \p step: also drive kt_consumer_revoke_step().
 * @returns non-zero if \p cond held.
 */
static int pump(member_t **ms, int cnt, int step, cond_fn *cond, void *arg, int timeout_ms) {
        int64_t end = kt_now_ms() + timeout_ms;

        for (;;) {
                struct pollfd fds[4];
                int nfds = 0;

                for (int i = 0; i < cnt; i++) {
                        if (!ms[i] || !ms[i]->kc)
                                continue;
                        while (kt_consumer_poll(ms[i]->kc, 100))
                                ;
                        if (step)
                                kt_consumer_revoke_step(ms[i]->kc, 0);
                        fds[nfds].fd = kt_consumer_wakeup_fd(ms[i]->kc);
                        fds[nfds++].events = POLLIN;
                }
                if (cond && cond(arg))
                        return 1;
                if (kt_now_ms() >= end)
                        return 0;
                poll(fds, (nfds_t)nfds, 20);
        }
}

static int cond_never(void *arg) {
        (void)arg;
        return 0;
}

static void produce(const char *topic) {
        char err[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_t *rk;

        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        KT_CHECK(rk != NULL, "producer: %s", err);
        if (!rk)
                return;
        for (int p = 0; p < NPART; p++)
                for (int o = 0; o < NREC; o++) {
                        char val[32];
                        snprintf(val, sizeof(val), "p%d-r%d", p, o);
                        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(p),
                                          RD_KAFKA_V_VALUE(val, strlen(val)),
                                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                }
        KT_CHECK(rd_kafka_flush(rk, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR, "flush to %s", topic);
        rd_kafka_destroy(rk);
}

/** A plain group client (never joins): reads and writes the group's committed offsets. */
static rd_kafka_t *group_client(const char *group) {
        char err[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();

        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err));
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        return rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
}

/** The committed offset of \p topic [\p part] in \p group and its metadata (copied to \p md,
 *  "" if none). @returns the offset, or a negative logical offset / -1000000 on error. */
static int64_t committed(const char *group, const char *topic, int32_t part, char *md,
                         size_t size) {
        rd_kafka_t *rk = group_client(group);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        int64_t off = -1000000;

        md[0] = '\0';
        rd_kafka_topic_partition_list_add(l, topic, part);
        if (rk && !rd_kafka_committed(rk, l, 5000) && !l->elems[0].err) {
                off = l->elems[0].offset;
                if (l->elems[0].metadata_size && l->elems[0].metadata_size < size) {
                        memcpy(md, l->elems[0].metadata, l->elems[0].metadata_size);
                        md[l->elems[0].metadata_size] = '\0';
                }
        }
        rd_kafka_topic_partition_list_destroy(l);
        if (rk)
                rd_kafka_destroy(rk);
        return off;
}

/** Check that \p md, committed with \p off, lists exactly the offsets in \p want (cnt). */
static void check_map(const char *what, const char *md, int64_t off, const int64_t *want,
                      size_t cnt) {
        kt_offsetmap_t *om = NULL;
        char why[256] = "";

        KT_CHECK(kt_consumer_offsetmap_decode(md, strlen(md), off, &om, why, sizeof(why)) == KT_OK,
                 "%s: metadata \"%s\" does not decode: %s", what, md, why);
        KT_CHECK(kt_consumer_offsetmap_cnt(om) == cnt, "%s: map lists %zu offsets, want %zu", what,
                 kt_consumer_offsetmap_cnt(om), cnt);
        for (int64_t o = 0; o < NREC; o++) {
                int in = 0;
                for (size_t i = 0; i < cnt; i++)
                        in |= want[i] == o;
                KT_CHECK(kt_consumer_offsetmap_done(om, o) == in, "%s: offset %lld %s the map",
                         what, (long long)o, in ? "missing from" : "wrongly in");
        }
        kt_consumer_offsetmap_destroy(om);
}

/* ------------------------------------------------------------------ conditions */

struct want_cnt {
        member_t *m;
        int assigned, delivered;
};

static int cond_assigned_delivered(void *arg) {
        struct want_cnt *w = arg;
        return kt_consumer_assigned_cnt(w->m->kc) == w->assigned &&
               delivered_cnt(w->m) >= w->delivered;
}

static int cond_committed(void *arg) {
        member_t *m = arg;
        return kt_consumer_uncommitted_done(m->kc) == 0;
}

static int cond_revoked(void *arg) {
        member_t *m = arg;
        return kt_consumer_stats(m->kc)->revokes > 0;
}

static int cond_released(void *arg) {
        member_t *m = arg;
        int n = 0;
        for (int p = 0; p < NPART; p++)
                n += m->released[p];
        return n > 0;
}

struct want_commit {
        member_t *m;
        uint64_t seq;
};

static int cond_commit_answered(void *arg) {
        struct want_commit *w = arg;
        return kt_consumer_commit_status(w->m->kc, w->seq, NULL) != KT_COMMIT_PENDING;
}

struct want_assigns {
        member_t *m;
        uint64_t more_than;
        int delivered;
};

static int cond_assigns(void *arg) {
        struct want_assigns *w = arg;
        return kt_consumer_stats(w->m->kc)->assigns > w->more_than &&
               kt_consumer_assigned_cnt(w->m->kc) == NPART && delivered_cnt(w->m) >= w->delivered;
}

struct want_owner {
        member_t *m;
        int32_t part;
};

static int cond_owner_delivered(void *arg) {
        struct want_owner *w = arg;
        return w->m->delivered[w->part][NREC - 1] > 0;
}

/**
 * Stop \p m once it holds every partition again (the other member left). Closing a member in
 * the middle of a join hung rd_kafka_consumer_close() for good once in three runs
 * (librdkafka 2.0.2 with the mock): a daemon keeps polling, so the test does too.
 */
static void settle_stop(member_t *m) {
        struct want_cnt w = {m, NPART, 0};
        member_t *one[] = {m};

        if (m->kc && !pump(one, 1, 1, cond_assigned_delivered, &w, 20000))
                printf("test_lifecycle: %s did not get every partition back before its close\n",
                       m->name);
        member_stop(m);
}

/* ------------------------------------------------------------------ cases */

/* Cases 1 and 2: a cooperative revoke (a second member joins) drains, then releases at the
 * drain deadline with a gap, commits the first not-done offset with the offsets done above it,
 * and the partition's next owner skips exactly those. */
static void test_revoke_drain_commit_handover(void) {
        static const char *topic = "t-revoke", *group = "g-revoke";
        static const int64_t done_before[] = {0, 1, 3, 4, 6}; /* 2 is the gap */
        static const int64_t map_want[] = {3, 4, 5, 6};       /* 5 finishes while draining */
        member_t a, b, *both[] = {&a, &b};
        struct want_cnt wa = {&a, NPART, NPART * NREC};
        kt_partition_t *pr = NULL, *pk = NULL;
        int64_t t0 = kt_now_ms(), off, deadline;
        int32_t r = -1;
        char md[4096];
        uint64_t failures0 = 0;
        int refused = 0;

        rd_kafka_mock_topic_create(mc, topic, NPART, 1);
        produce(topic);
        if (member_start(&a, "A", topic, group, 1500, NULL))
                return;
        KT_CHECK(pump(both, 1, 1, cond_assigned_delivered, &wa, 20000),
                 "A: assigned %d partitions, %d records delivered", kt_consumer_assigned_cnt(a.kc),
                 delivered_cnt(&a));
        for (int p = 0; p < NPART; p++)
                for (size_t i = 0; i < sizeof(done_before) / sizeof(done_before[0]); i++)
                        mark_done(&a, p, done_before[i]);
        for (int p = 0; p < NPART; p++) {
                kt_partition_t *pp = part_get(&a, p);
                KT_CHECK(pp && pp->stored == 2 && pp->state == KT_PART_ACTIVE,
                         "A [%d]: stored %lld, the first not done is 2", p,
                         pp ? (long long)pp->stored : -2LL);
        }
        /* The records not done, not the tracker's length: that also holds the records done
         * behind an unfinished head (here 3, 4, 6), which the counts logged at a shutdown,
         * reload or drain timeout ("N records not done ... delivered again") must not count. */
        KT_CHECK(kt_consumer_undone(a.kc) == NPART * 5, "undone %zu", kt_consumer_undone(a.kc));

        /* B joins: cooperative-sticky gives it one of A's partitions, revoked from A first.
         * revoke_step is held back so the DRAINING state can be looked at. */
        if (member_start(&b, "B", topic, group, 1500, NULL))
                goto out;
        KT_CHECK(pump(both, 2, 0, cond_revoked, &a, 30000), "A got no revoke");
        for (kt_partition_t *p = kt_consumer_partitions(a.kc); p; p = p->next) {
                if (p->state == KT_PART_DRAINING) {
                        KT_CHECK(!pr, "A: more than one partition revoked");
                        pr = p;
                } else
                        pk = p;
        }
        KT_CHECK(pr && pk && pk->state == KT_PART_ACTIVE,
                 "A: want one partition DRAINING and one ACTIVE");
        if (!pr || !pk)
                goto out;
        r = pr->partition;
        KT_CHECK(pr->paused, "a DRAINING partition is paused");
        KT_CHECK(!a.released[r] && !a.released[pk->partition], "released before the drain");
        KT_CHECK(kt_consumer_draining(a.kc) == 5, "draining %zu, want 5 (2, 5, 7, 8, 9)",
                 kt_consumer_draining(a.kc));
        KT_CHECK(kt_consumer_draining(a.kc) >= 5 && kt_consumer_draining(a.kc) <= 8, "draining %zu",
                 kt_consumer_draining(a.kc));
        deadline = kt_consumer_revoke_step(a.kc, 0);
        KT_CHECK(deadline > kt_now_ms() && deadline < INT64_MAX,
                 "revoke_step wants the drain deadline");
        KT_CHECK(pr->state == KT_PART_DRAINING && !a.released[r],
                 "released while records remain, before the deadline");
        /* A draining partition's records go on finishing. */
        mark_done(&a, r, 5);
        KT_CHECK(kt_consumer_draining(a.kc) == 4, "draining %zu", kt_consumer_draining(a.kc));
        KT_CHECK(kt_consumer_draining(a.kc) >= 4, "draining %zu", kt_consumer_draining(a.kc));
        kt_consumer_revoke_step(a.kc, 0);
        KT_CHECK(pr->state == KT_PART_DRAINING && !a.released[r], "released with 2 not done");

        /* The drain deadline passes with 2 (and 7..9) not done: released once, not lost, and
         * the commit starts. pr is not touched after this: it is freed at the hand-back. */
        failures0 = kt_consumer_stats(a.kc)->commit_failures;
        KT_CHECK(pump(both, 2, 1, cond_released, &a, 5000), "not released at the deadline");
        KT_CHECK(kt_now_ms() - t0 >= 1500, "released before the drain deadline");
        KT_CHECK(a.released[r] == 1 && !a.released_lost[r] && !a.released[1 - r],
                 "release hook: [%d] %d times (lost %d), [%d] %d times", r, a.released[r],
                 a.released_lost[r], 1 - r, a.released[1 - r]);

        /* The drain's own commit, before the hand-back (revoke_step held back again). */
        for (int i = 0; i < 25; i++) {
                pump(both, 2, 0, cond_never, NULL, 200);
                if ((off = committed(group, topic, r, md, sizeof(md))) == 2 && *md)
                        break;
        }
        /* About one run in five the mock group is still (or again) joining when the drain
         * ends and refuses the commit with REBALANCE_IN_PROGRESS; by design it is then not
         * retried before the next assignment and the partition goes back uncommitted. */
        refused = off < 0 && kt_consumer_stats(a.kc)->commit_failures > failures0;
        if (refused)
                printf("test_lifecycle: SKIP drain commit checks: the mock refused the drain "
                       "commit (group re-joining); the partition was handed back uncommitted\n");
        else {
                KT_CHECK(off == 2, "drain commit: offset %lld, want 2 (the first not done)",
                         (long long)off);
                KT_CHECK(*md, "drain commit carries no completed-offset map");
                if (*md)
                        check_map("drain commit", md, 2, map_want, 4);
        }

        /* Hand-back; B gets the partition (case 2). */
        {
                struct want_owner wo = {&b, r};
                KT_CHECK(pump(both, 2, 1, cond_owner_delivered, &wo, 30000),
                         "B never delivered [%d] @%d", r, NREC - 1);
        }
        KT_CHECK(a.released[r] == 1 && a.bad_release == 0, "A: release hook %d times",
                 a.released[r]);
        KT_CHECK(kt_consumer_assigned_cnt(a.kc) == 1 && !part_get(&a, r),
                 "A still holds the revoked partition");
        KT_CHECK(kt_consumer_stats(a.kc)->losts == 0, "A lost partitions");
        off = committed(group, topic, r, md, sizeof(md));
        if (refused) {
                /* Handed back uncommitted: A's progress is committed once, at its next
                 * assignment, racing B's start (by design). Only at-least-once holds here:
                 * B delivers every record that was not done. */
                for (int o = 0; o < NREC; o++)
                        if (o == 2 || o >= 7)
                                KT_CHECK(b.delivered[r][o] >= 1,
                                         "B: [%d] @%d (not done by A) never delivered", r, o);
        } else {
                /* librdkafka's auto-commit is off: nothing commits the partition again without
                 * the map after ours (it once did, at rd_kafka_incremental_unassign()). */
                KT_CHECK(off == 2 && *md, "after the hand-back: offset %lld, metadata \"%s\"",
                         (long long)off, md);
                KT_CHECK(kt_consumer_stats(b.kc)->already_done == 4, "B: already_done %llu, want 4",
                         (unsigned long long)kt_consumer_stats(b.kc)->already_done);
                for (int o = 0; o < NREC; o++) {
                        int want = o == 2 || o >= 7;
                        KT_CHECK(b.delivered[r][o] == want,
                                 "B: [%d] @%d delivered %d times, want %d", r, o, b.delivered[r][o],
                                 want);
                }
        }
out:
        member_stop(&a);
        settle_stop(&b);
        printf("test_lifecycle: revoke/drain/commit/hand-over: %lld ms\n",
               (long long)(kt_now_ms() - t0));
}

/* Case 3 (and case 2 without a rebalance): a map committed by a plain client is honoured on
 * [1]; "garbage" on [0] is ignored, nothing skipped there. Then case 4: a revoke pends
 * (a second member joined) when the consumer closes: the closing revoke joins the pending
 * one and every partition is released exactly once, nothing is used after it is freed. */
static void test_foreign_metadata_and_close_while_pending(void) {
        static const char *topic = "t-meta", *group = "g-meta";
        static const int64_t good[] = {4, 5};
        member_t c, f, *both[] = {&c, &f};
        struct want_cnt wc = {&c, NPART, (NREC - 2) + (NREC - 2 - 2)};
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
        rd_kafka_t *rk = group_client(group);
        char buf[256];
        size_t len = 0;
        int64_t t0 = kt_now_ms();

        rd_kafka_mock_topic_create(mc, topic, NPART, 1);
        produce(topic);
        KT_CHECK(kt_consumer_offsetmap_encode(2, good, 2, buf, sizeof(buf), &len, NULL) == KT_OK,
                 "encode");
        rd_kafka_topic_partition_list_add(l, topic, 0)->offset = 2;
        l->elems[0].metadata = strdup("garbage");
        l->elems[0].metadata_size = strlen("garbage");
        rd_kafka_topic_partition_list_add(l, topic, 1)->offset = 2;
        l->elems[1].metadata = strdup(buf);
        l->elems[1].metadata_size = len;
        KT_CHECK(rk && rd_kafka_commit(rk, l, 0) == RD_KAFKA_RESP_ERR_NO_ERROR,
                 "plain client commit");
        rd_kafka_topic_partition_list_destroy(l);
        if (rk)
                rd_kafka_destroy(rk);

        if (member_start(&c, "C", topic, group, 30000, NULL))
                return;
        KT_CHECK(pump(both, 1, 1, cond_assigned_delivered, &wc, 20000),
                 "C: assigned %d, delivered %d", kt_consumer_assigned_cnt(c.kc), delivered_cnt(&c));
        pump(both, 1, 1, cond_never, NULL, 300); /* nothing more may come */
        KT_CHECK(kt_consumer_stats(c.kc)->already_done == 2, "C: already_done %llu, want 2",
                 (unsigned long long)kt_consumer_stats(c.kc)->already_done);
        for (int p = 0; p < NPART; p++)
                for (int o = 0; o < NREC; o++) {
                        int want = o >= 2 && !(p == 1 && (o == 4 || o == 5));
                        KT_CHECK(c.delivered[p][o] == want,
                                 "C: [%d] @%d delivered %d times, want %d (%s)", p, o,
                                 c.delivered[p][o], want, p ? "valid map" : "garbage metadata");
                }

        /* Case 4. Only a close can add a second revoke to a pending one: librdkafka (2.0.2
         * and 2.14.2 alike) calls no rebalance callback while a rebalance is in progress, and
         * ours is until we unassign (rd_kafka_cgrp_revoke_all_rejoin_maybe skips "already in
         * progress"). */
        printf("test_lifecycle: SKIP second rebalance revoke while one pends: librdkafka %s "
               "never calls the rebalance callback during an unfinished rebalance; the close "
               "path (destroy while a revoke pends) is tested instead\n",
               rd_kafka_version_str());
        /* C's periodic commit ([1] @4 and @5) may go out just as F's join starts a
         * rebalance; librdkafka before 2.10.0 then drops the assignment (case 7): no revoke
         * pends. There, let the commit go through before F joins. */
        if (rd_kafka_version() < 0x020a0000)
                KT_CHECK(pump(both, 1, 1, cond_committed, &c, 10000),
                         "C: the periodic commit did not go through (%llu done not committed)",
                         (unsigned long long)kt_consumer_uncommitted_done(c.kc));
        if (member_start(&f, "F", topic, group, 30000, NULL))
                goto out;
        KT_CHECK(pump(both, 2, 1, cond_revoked, &c, 30000), "C got no revoke");
        KT_CHECK(kt_consumer_draining(c.kc) > 0, "C: nothing draining (the revoke must pend)");
        KT_CHECK(!c.released[0] && !c.released[1], "C: released before the drain deadline");
        member_stop(&c);
        KT_CHECK(c.released[0] == 1 && c.released[1] == 1 && !c.bad_release,
                 "close while pending: release hook [0] %d, [1] %d times, %d on RELEASED",
                 c.released[0], c.released[1], c.bad_release);
        KT_CHECK(!c.released_lost[0] && !c.released_lost[1], "close releases as lost");
out:
        member_stop(&c);
        settle_stop(&f);
        printf("test_lifecycle: foreign metadata/close while pending: %lld ms\n",
               (long long)(kt_now_ms() - t0));
}

/* Cases 5 and 6: refused commits. REBALANCE_IN_PROGRESS: FAILED, not retried before the next
 * assignment. ILLEGAL_GENERATION: FAILED, librdkafka takes the assignment as lost: released
 * with lost=1, nothing committed; after the re-join the retry is ready and a commit succeeds,
 * carrying the progress kept from the lost partitions (carry_save). */
static void test_commit_failures_and_lost(void) {
        static const char *topic = "t-commit", *group = "g-commit";
        static const rd_kafka_resp_err_t errs[] = {RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                                   RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION};
        static const int64_t map_want[] = {3};
        member_t d, *one[] = {&d};
        struct want_cnt wd = {&d, NPART, NPART * NREC};
        int64_t t0 = kt_now_ms(), off;
        char md[4096];

        rd_kafka_mock_topic_create(mc, topic, NPART, 1);
        produce(topic);
        /* No auto-commit in the way of the pushed errors. */
        if (member_start(&d, "D", topic, group, 1500, "auto.commit.interval.ms=600000"))
                return;
        KT_CHECK(pump(one, 1, 1, cond_assigned_delivered, &wd, 20000),
                 "D: assigned %d, delivered %d", kt_consumer_assigned_cnt(d.kc), delivered_cnt(&d));
        for (int o = 0; o < 5; o++)
                mark_done(&d, 0, o); /* [0] done up to 5 */
        mark_done(&d, 1, 0);
        mark_done(&d, 1, 1);
        mark_done(&d, 1, 3); /* [1] done up to 2, and 3 */

        for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
                uint64_t assigns = kt_consumer_stats(d.kc)->assigns, losts;
                struct want_commit wcm = {&d, 0};
                rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
                const char *name = rd_kafka_err2name(errs[i]);

                rd_kafka_mock_push_request_errors(mc, API_OFFSET_COMMIT, 1, errs[i]);
                losts = kt_consumer_stats(d.kc)->losts;
                wcm.seq = kt_consumer_commit_start(d.kc);
                KT_CHECK(pump(one, 1, 1, cond_commit_answered, &wcm, 5000), "%s: no answer", name);
                KT_CHECK(kt_consumer_commit_status(d.kc, wcm.seq, &err) == KT_COMMIT_FAILED &&
                             err == errs[i],
                         "%s: status %d, err %s", name,
                         kt_consumer_commit_status(d.kc, wcm.seq, NULL), rd_kafka_err2name(err));
                KT_CHECK(kt_consumer_stats(d.kc)->assigns > assigns ||
                             !kt_consumer_commit_retry_ready(d.kc),
                         "%s: retry ready before a new assignment", name);
                off = committed(group, topic, 0, md, sizeof(md));
                KT_CHECK(off < 0, "%s: a refused commit committed %lld", name, (long long)off);
                if (errs[i] == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS) {
                        pump(one, 1, 1, cond_never, NULL, 1000);
                        KT_CHECK(!kt_consumer_commit_retry_ready(d.kc) &&
                                     kt_consumer_stats(d.kc)->assigns == assigns,
                                 "%s: retry ready without a new assignment", name);
                        continue;
                }
                /* ILLEGAL_GENERATION: the assignment is lost, then the group is joined again. */
                {
                        struct want_assigns wa = {&d, assigns, 0};
                        /* Not done, so delivered again: [0] 5..9 and [1] 2, 4..9 (5 + 7). With
                         * one too few the wait could end before [1] @9 came in its own batch. */
                        wa.delivered = delivered_cnt(&d) + 5 + 7;
                        KT_CHECK(pump(one, 1, 1, cond_assigns, &wa, 20000),
                                 "%s: no new assignment (assigns %llu, delivered %d)", name,
                                 (unsigned long long)kt_consumer_stats(d.kc)->assigns,
                                 delivered_cnt(&d));
                }
                KT_CHECK(kt_consumer_stats(d.kc)->losts == losts + 1, "%s: losts %llu", name,
                         (unsigned long long)kt_consumer_stats(d.kc)->losts);
                for (int p = 0; p < NPART; p++)
                        KT_CHECK(d.released[p] == 1 && d.released_lost[p] == 1,
                                 "%s: [%d] released %d times, %d lost", name, p, d.released[p],
                                 d.released_lost[p]);
                KT_CHECK(!d.bad_release, "release hook on a RELEASED partition");
                /* Nothing is committed for a lost partition when it is lost; what was finished
                 * there is kept and committed once the group hands out an assignment again
                 * (offset 5 for [0]), maybe not yet here. */
                off = committed(group, topic, 0, md, sizeof(md));
                KT_CHECK(off < 0 || off == 5, "%s: [0] committed at %lld, want none yet or 5", name,
                         (long long)off);
                KT_CHECK(kt_consumer_commit_retry_ready(d.kc),
                         "%s: retry not ready after the "
                         "re-assignment",
                         name);
        }
        /* What we finished before the loss is not delivered again: [0] 0..4, [1] 0, 1 (below
         * the offset kept) and 3 (its map) are done on arrival, or not fetched at all when the
         * kept progress was committed before librdkafka looked up where to start ([1] 3 is
         * above that offset: done on arrival either way). The counts below say which. */
        KT_CHECK(kt_consumer_stats(d.kc)->already_done >= 1 &&
                     kt_consumer_stats(d.kc)->already_done <= 8,
                 "D: already_done %llu, want 1..8",
                 (unsigned long long)kt_consumer_stats(d.kc)->already_done);
        for (int p = 0; p < NPART; p++)
                for (int o = 0; o < NREC; o++) {
                        int once = p == 0 ? o < 5 : (o < 2 || o == 3);
                        KT_CHECK(d.delivered[p][o] == (once ? 1 : 2),
                                 "D: [%d] @%d delivered %d times, want %d", p, o, d.delivered[p][o],
                                 once ? 1 : 2);
                }
        {
                struct want_commit wcm = {&d, 0};
                wcm.seq = kt_consumer_commit_start(d.kc);
                KT_CHECK(pump(one, 1, 1, cond_commit_answered, &wcm, 5000), "retry: no answer");
                KT_CHECK(kt_consumer_commit_status(d.kc, wcm.seq, NULL) == KT_COMMIT_DONE,
                         "the commit after the re-join failed");
        }
        off = committed(group, topic, 0, md, sizeof(md));
        KT_CHECK(off == 5 && !*md, "[0]: committed %lld \"%s\", want 5 without a map",
                 (long long)off, md);
        off = committed(group, topic, 1, md, sizeof(md));
        KT_CHECK(off == 2, "[1]: committed %lld, want 2", (long long)off);
        check_map("[1] after the re-join", md, 2, map_want, 1);
        member_stop(&d);
        printf("test_lifecycle: commit failures/lost: %lld ms\n", (long long)(kt_now_ms() - t0));
}

/** Wait, running only \p m, until the mock broker has taken every JoinGroup entry pushed on
 *  its error stack, i.e. that many JoinGroup requests have reached it. */
static int join_seen(member_t *m, int timeout_ms) {
        member_t *one[] = {m};
        int64_t end = kt_now_ms() + timeout_ms;
        size_t cnt = 1;

        while (kt_now_ms() < end) {
                if (rd_kafka_mock_broker_error_stack_cnt(mc, 1, API_JOIN_GROUP, &cnt) || cnt == 0)
                        break;
                pump(one, 1, 1, cond_never, NULL, 10);
        }
        return cnt == 0;
}

/* Case 7: a commit sent while the group re-joins, before our loop has read the join state
 * (librdkafka issue #4059). F joins; C's heartbeat is answered REBALANCE_IN_PROGRESS and C
 * sends its JoinGroup; C is not polled, so its join state lines are unread and the gate still
 * lets the commit out. The mock reads no more from C's connection until the join is done,
 * then refuses the commit (old generation) with ILLEGAL_GENERATION. librdkafka 2.0.2 then
 * sets the generation to -1 and drops the assignment as lost; from 2.10.0 the error is
 * ignored while rebalancing and the re-join revokes normally: C drains, commits, and F skips
 * what C finished. */
static void test_commit_refused_while_rejoining(void) {
        static const char *topic = "t-rejoin", *group = "g-rejoin";
        /* Instead of member_start's 6000: the mock's joins of a running group wait
         * session.timeout.ms - 1 s. */
        static const char *props = "auto.commit.interval.ms=600000;session.timeout.ms=3000";
        member_t c, f, *both[] = {&c, &f};
        struct want_cnt wc = {&c, NPART, NPART * NREC};
        struct want_commit wcm = {&c, 0};
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        int64_t t0 = kt_now_ms();
        int f_parts = 0;

        if (rd_kafka_version() < 0x020a0000) {
                printf("test_lifecycle: SKIP commit refused while re-joining: librdkafka %s "
                       "drops the assignment (issue #4059, fixed in 2.10.0)\n",
                       rd_kafka_version_str());
                return;
        }
        rd_kafka_mock_topic_create(mc, topic, NPART, 1);
        produce(topic);
        if (member_start(&c, "C", topic, group, 1000, props))
                return;
        KT_CHECK(pump(both, 1, 1, cond_assigned_delivered, &wc, 20000),
                 "C: assigned %d, delivered %d", kt_consumer_assigned_cnt(c.kc), delivered_cnt(&c));
        for (int p = 0; p < NPART; p++)
                for (int o = 0; o < 5; o++)
                        mark_done(&c, p, o); /* done up to 5, nothing committed */

        /* One marker per JoinGroup: F's, then C's re-join. C's answer is held back 500 ms
         * (the commit's answer stays behind it): the mock refuses a SyncGroup that comes
         * after the leader's (C, the first member) with REBALANCE_IN_PROGRESS, and the
         * rebalance that would follow refuses C's drain commit too. */
        rd_kafka_mock_broker_push_request_error_rtts(mc, 1, API_JOIN_GROUP, 1,
                                                     RD_KAFKA_RESP_ERR_NO_ERROR, 0);
        if (member_start(&f, "F", topic, group, 1000, props))
                goto out;
        KT_CHECK(join_seen(&f, 10000), "F's JoinGroup never reached the broker");
        rd_kafka_mock_broker_push_request_error_rtts(mc, 1, API_JOIN_GROUP, 1,
                                                     RD_KAFKA_RESP_ERR_NO_ERROR, 500);
        KT_CHECK(join_seen(&f, 3000), "C's re-join never reached the broker");
        wcm.seq = kt_consumer_commit_start(c.kc);
        KT_CHECK(pump(both, 2, 1, cond_commit_answered, &wcm, 15000), "C: commit not answered");
        KT_CHECK(kt_consumer_commit_status(c.kc, wcm.seq, &err) == KT_COMMIT_FAILED &&
                     err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
                 "C: commit %d, err %s: not sent behind the JoinGroup",
                 kt_consumer_commit_status(c.kc, wcm.seq, NULL), rd_kafka_err2name(err));

        /* F takes a partition over and delivers up to its end. */
        {
                struct want_cnt wf = {&f, 1, NREC - 5};
                KT_CHECK(pump(both, 2, 1, cond_assigned_delivered, &wf, 20000),
                         "F: assigned %d, delivered %d", kt_consumer_assigned_cnt(f.kc),
                         delivered_cnt(&f));
                pump(both, 2, 1, cond_never, NULL, 500); /* nothing more may come */
        }
        KT_CHECK(kt_consumer_stats(c.kc)->losts == 0, "C: losts %llu",
                 (unsigned long long)kt_consumer_stats(c.kc)->losts);
        KT_CHECK(!c.bad_release, "C: release hook on a RELEASED partition");
        for (int p = 0; p < NPART; p++) {
                KT_CHECK(!c.released_lost[p] && c.released[p] <= 1,
                         "C: [%d] released %d times, %d lost", p, c.released[p],
                         c.released_lost[p]);
                f_parts += part_get(&f, p) != NULL;
                for (int o = 0; o < 5; o++)
                        KT_CHECK(c.delivered[p][o] == 1 && !f.delivered[p][o],
                                 "[%d] @%d (done by C) delivered %d times to C, %d to F", p, o,
                                 c.delivered[p][o], f.delivered[p][o]);
        }
        KT_CHECK(f_parts == 1 && kt_consumer_assigned_cnt(c.kc) == 1, "F holds %d partitions, C %d",
                 f_parts, kt_consumer_assigned_cnt(c.kc));
out:
        member_stop(&c);
        settle_stop(&f);
        printf("test_lifecycle: commit refused while re-joining: %lld ms\n",
               (long long)(kt_now_ms() - t0));
}

int main(void) {
        char err[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        const char *v = getenv("KT_TEST_VERBOSE");

        kt_log_level_set(v && *v == '2'   ? KT_LOG_DEBUG
                         : v && *v == '1' ? KT_LOG_INFO
                                          : KT_LOG_WARNING);
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
        mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        KT_CHECK(mock_rk != NULL, "mock handle: %s", err);
        if (!mock_rk)
                return kt_test_done("test_lifecycle");
        mc = rd_kafka_mock_cluster_new(mock_rk, 1);
        KT_CHECK(mc != NULL, "mock cluster");
        if (!mc) {
                rd_kafka_destroy(mock_rk);
                return kt_test_done("test_lifecycle");
        }
        bootstraps = rd_kafka_mock_cluster_bootstraps(mc);

        test_revoke_drain_commit_handover();
        test_foreign_metadata_and_close_while_pending();
        test_commit_failures_and_lost();
        test_commit_refused_while_rejoining();

        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(mock_rk);
        return kt_test_done("test_lifecycle");
}
