/*
 * bare_forwarder: the ceiling for per-record delivery with ktrigger's own dependencies.
 * Benchmark only, not part of the product (bench/README.md).
 *
 *   bare_forwarder BROKERS TOPIC GROUP URL CONCURRENCY RECORDS [--event-headers] [PROPERTY=VALUE ...]
 *
 * DESIGN: the least a Kafka -> HTTP forwarder can do with librdkafka and libcurl. One thread:
 * the librdkafka high-level consumer (auto commit, offsets stored as records are polled, no
 * tracking), CONCURRENCY reused curl easy handles on one multi handle (keep-alive, HTTP/1.1,
 * TCP_NODELAY, no Expect:, no signals), no ordering, no retries, no event headers. The loop
 * polls Kafka only while a handle is free, and sleeps in curl_multi_poll() on the sockets plus
 * the consumer queue's io-event pipe only when every handle is busy or a poll found the queue
 * empty (the pipe is written only when the queue goes from empty to non-empty).
 * The one thing beyond bare: librdkafka 2.0.2 fetches a partition again only on its broker
 * thread's ~1 s wake-up once a fetch put the queue over queued.min.messages or
 * queued.max.messages.kbytes (a whole producer batch does), so, as ktrigger does, when the queue
 * is read empty after at least that much, every assigned partition is sought to its position
 * (what rd_kafka_position() says: the offset after the last record polled), which wakes the
 * fetcher and, the queue being empty, drops nothing but a response in flight.
 * stdout gets one line per event, for bench.py: "first <CLOCK_MONOTONIC ns>" at the first call,
 * "done <calls> <ns>" once RECORDS calls completed, "exit calls=<n> errors=<n>" at SIGTERM or
 * SIGINT. A call that fails (curl error, non-2xx) is counted in errors, never retried.
 * --event-headers: each request also carries the header lines ktrigger's event contract puts
 * on such a record (event-id, event-time, event-timestamp-type, event-type, Content-Type,
 * event-namespace, event-topic, event-partition, event-offset, event-key, Expect:), formatted
 * with snprintf into the slot's own storage: what libcurl costs for ktrigger's request, so that
 * ktrigger against this run measures ktrigger's own code and not the contract's bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 1024
/** --event-headers: lines a request carries, and bytes for them (ktrigger's are ~490). */
#define EVENT_LINES 11
#define EVENT_BYTES 2048

typedef struct slot {
        CURL *easy;
        rd_kafka_message_t *msg; /**< owned while the call is in flight: its value is the body */
        struct curl_slist lines[EVENT_LINES]; /**< --event-headers: this call's header list */
        char buf[EVENT_BYTES];
} slot_t;

static volatile sig_atomic_t run = 1;

static void on_signal(int sig) {
        (void)sig;
        run = 0;
}

static long long mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *opaque) {
        (void)ptr;
        (void)opaque;
        return size * nmemb;
}

static int parse_count(const char *s, long long max, long long *out) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || *end || v < 1 || v > max)
                return -1;
        *out = v;
        return 0;
}

static long long conf_num(rd_kafka_conf_t *conf, const char *name) {
        char buf[64];
        size_t size = sizeof(buf);
        long long v;
        if (rd_kafka_conf_get(conf, name, buf, &size) != RD_KAFKA_CONF_OK ||
            parse_count(buf, 1LL << 40, &v))
                return 1;
        return v;
}

/** The queue was read empty after a burst over the prefetch bounds: wake the fetcher. */
static void fetch_wakeup(rd_kafka_t *rk) {
        rd_kafka_topic_partition_list_t *parts = NULL, *seek;
        rd_kafka_error_t *error;

        if (rd_kafka_assignment(rk, &parts) || rd_kafka_position(rk, parts)) {
                if (parts)
                        rd_kafka_topic_partition_list_destroy(parts);
                return;
        }
        seek = rd_kafka_topic_partition_list_new(parts->cnt);
        for (int i = 0; i < parts->cnt; i++)
                if (parts->elems[i].offset >= 0)
                        rd_kafka_topic_partition_list_add(seek, parts->elems[i].topic,
                                                          parts->elems[i].partition)
                            ->offset = parts->elems[i].offset;
        if (seek->cnt > 0 && (error = rd_kafka_seek_partitions(rk, seek, 0 /* async */))) {
                fprintf(stderr, "bare_forwarder: seek: %s\n", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        }
        rd_kafka_topic_partition_list_destroy(seek);
        rd_kafka_topic_partition_list_destroy(parts);
}

/** --event-headers: \p s's header list for \p msg, as ktrigger's event contract shapes it. */
static struct curl_slist *event_headers(slot_t *s, const rd_kafka_message_t *msg) {
        rd_kafka_timestamp_type_t tstype;
        long long ts = rd_kafka_message_timestamp(msg, &tstype);
        time_t sec = (time_t)(ts / 1000);
        struct tm tm;
        char tbuf[32];
        size_t off = 0, n = 0;
        const char *type = "application/octet-stream";
        const char *topic = rd_kafka_topic_name(msg->rkt);

        gmtime_r(&sec, &tm);
        strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
#define LINE(...)                                                                                  \
        do {                                                                                       \
                int w = snprintf(s->buf + off, sizeof(s->buf) - off, __VA_ARGS__);                \
                if (w < 0 || (size_t)w >= sizeof(s->buf) - off || n >= EVENT_LINES)               \
                        return NULL;                                                               \
                s->lines[n].data = s->buf + off;                                                   \
                s->lines[n].next = n + 1 < EVENT_LINES ? &s->lines[n + 1] : NULL;                  \
                n++;                                                                               \
                off += (size_t)w + 1;                                                              \
        } while (0)
        LINE("event-id: %s/%d/%lld", topic, (int)msg->partition, (long long)msg->offset);
        LINE("event-time: %s.%03dZ", tbuf, (int)(ts % 1000));
        LINE("event-timestamp-type: %s", tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME
                                             ? "log-append"
                                             : "create");
        LINE("event-type: %s", type);
        LINE("Content-Type: %s", type);
        LINE("event-namespace: kafkatriggers.kubeless.io");
        LINE("event-topic: %s", topic);
        LINE("event-partition: %d", (int)msg->partition);
        LINE("event-offset: %lld", (long long)msg->offset);
        LINE("event-key: %.*s", (int)msg->key_len, msg->key ? (const char *)msg->key : "");
        LINE("Expect:");
#undef LINE
        s->lines[n - 1].next = NULL;
        return s->lines;
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
        char errstr[512];
        if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "bare_forwarder: %s=%s: %s\n", name, value, errstr);
                return -1;
        }
        return 0;
}

int main(int argc, char **argv) {
        int rc = 1, wake[2] = {-1, -1}, started = 0, event_hdrs = 0;
        long long concurrency, records, calls = 0, errors = 0;
        long long prefetch_msgs, prefetch_bytes, burst_msgs = 0, burst_bytes = 0;
        rd_kafka_conf_t *conf = NULL;
        rd_kafka_t *rk = NULL;
        rd_kafka_queue_t *rkq = NULL;
        rd_kafka_topic_partition_list_t *topics = NULL;
        CURLM *multi = NULL;
        slot_t *slots = NULL, **free_slots = NULL;
        size_t free_cnt = 0;
        struct curl_slist *hdrs = NULL;
        CURLU *url = NULL;
        char errstr[512];

        if (argc < 7 || parse_count(argv[5], MAX_CONCURRENCY, &concurrency) ||
            parse_count(argv[6], 1LL << 40, &records)) {
                fprintf(stderr,
                        "usage: bare_forwarder BROKERS TOPIC GROUP URL CONCURRENCY(1..%d) "
                        "RECORDS [--event-headers] [PROPERTY=VALUE ...]\n",
                        MAX_CONCURRENCY);
                return 2;
        }
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        conf = rd_kafka_conf_new();
        if (conf_set(conf, "bootstrap.servers", argv[1]) || conf_set(conf, "group.id", argv[3]) ||
            conf_set(conf, "auto.offset.reset", "earliest") ||
            conf_set(conf, "enable.auto.commit", "true") ||
            conf_set(conf, "enable.auto.offset.store", "true") ||
            conf_set(conf, "enable.partition.eof", "false"))
                goto out;
        /* From 2.1.0 a partition over its prefetch bounds is fetched again only after
         * fetch.queue.backoff.ms (1000 by default): with the seek above alone it delivered 13.7k
         * rec/s on 2.14.2. 0 makes the broker thread spin in rd_kafka_toppar_fetch_decide (81 %
         * of the process's instructions under callgrind), which on 2 cores halved the rate
         * (27-29k rec/s at 52-56 us a record); 10 gave 51-54k at 18-19 us, 1 the same rate at
         * a little more CPU (bench/README.md, 2026-12-03). A PROPERTY argument wins. */
        if (rd_kafka_version() >= 0x020100ff && conf_set(conf, "fetch.queue.backoff.ms", "10"))
                goto out;
        for (int i = 7; i < argc; i++) {
                char *eq = strchr(argv[i], '=');
                if (!strcmp(argv[i], "--event-headers")) {
                        event_hdrs = 1;
                        continue;
                }
                if (!eq) {
                        fprintf(stderr, "bare_forwarder: %s: expected PROPERTY=VALUE\n", argv[i]);
                        goto out;
                }
                *eq = '\0';
                if (conf_set(conf, argv[i], eq + 1))
                        goto out;
        }
        prefetch_msgs = conf_num(conf, "queued.min.messages");
        prefetch_bytes = conf_num(conf, "queued.max.messages.kbytes") * 1024;
        if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr)))) {
                fprintf(stderr, "bare_forwarder: %s\n", errstr);
                goto out;
        }
        conf = NULL; /* now owned by rk */
        rd_kafka_poll_set_consumer(rk);
        rkq = rd_kafka_queue_get_consumer(rk);
        if (pipe(wake) == -1 || fcntl(wake[0], F_SETFL, O_NONBLOCK) == -1 ||
            fcntl(wake[1], F_SETFL, O_NONBLOCK) == -1) {
                perror("bare_forwarder: pipe");
                goto out;
        }
        rd_kafka_queue_io_event_enable(rkq, wake[1], "1", 1);
        topics = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, argv[2], RD_KAFKA_PARTITION_UA);
        if (rd_kafka_subscribe(rk, topics)) {
                fprintf(stderr, "bare_forwarder: subscribe %s failed\n", argv[2]);
                goto out;
        }

        /* Parsed once: with CURLOPT_URL curl parses the string again for every call (~12k
         * instructions a call in callgrind), as ktrigger avoids too. */
        if (!(url = curl_url()) || curl_url_set(url, CURLUPART_URL, argv[4], 0)) {
                fprintf(stderr, "bare_forwarder: %s: not a URL curl can parse\n", argv[4]);
                goto out;
        }
        multi = curl_multi_init();
        curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)concurrency);
        hdrs = curl_slist_append(NULL, "Expect:");
        hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");
        slots = calloc((size_t)concurrency, sizeof(*slots));
        free_slots = calloc((size_t)concurrency, sizeof(*free_slots));
        if (!multi || !hdrs || !slots || !free_slots)
                goto out;
        for (size_t i = 0; i < (size_t)concurrency; i++) {
                CURL *e = slots[i].easy = curl_easy_init();
                if (!e)
                        goto out;
                curl_easy_setopt(e, CURLOPT_CURLU, url);
                curl_easy_setopt(e, CURLOPT_POST, 1L);
                curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
                curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
                curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
                curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
                curl_easy_setopt(e, CURLOPT_PROXY, "");
                curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
                curl_easy_setopt(e, CURLOPT_PRIVATE, &slots[i]);
                free_slots[free_cnt++] = &slots[i];
        }

        while (run) {
                int queue_empty = 0, running, pending;
                CURLMsg *cm;

                while (free_cnt > 0) {
                        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 0);
                        if (!msg) {
                                queue_empty = 1;
                                if (burst_msgs >= prefetch_msgs || burst_bytes >= prefetch_bytes)
                                        fetch_wakeup(rk);
                                burst_msgs = burst_bytes = 0;
                                break;
                        }
                        if (msg->err) {
                                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                        fprintf(stderr, "bare_forwarder: consume: %s\n",
                                                rd_kafka_message_errstr(msg));
                                rd_kafka_message_destroy(msg);
                                continue;
                        }
                        burst_msgs++;
                        burst_bytes += (long long)(msg->len + msg->key_len);
                        slot_t *s = free_slots[--free_cnt];
                        s->msg = msg;
                        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                         (curl_off_t)msg->len);
                        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS,
                                         msg->payload ? (const char *)msg->payload : "");
                        if (event_hdrs) {
                                struct curl_slist *l = event_headers(s, msg);
                                if (!l) {
                                        fprintf(stderr, "bare_forwarder: event headers over "
                                                        "%d bytes\n", EVENT_BYTES);
                                        goto out;
                                }
                                curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, l);
                        }
                        if (!started) {
                                started = 1;
                                printf("first %lld\n", mono_ns());
                                fflush(stdout);
                        }
                        curl_multi_add_handle(multi, s->easy);
                }
                curl_multi_perform(multi, &running);
                while ((cm = curl_multi_info_read(multi, &pending))) {
                        slot_t *s;
                        long status = 0;
                        if (cm->msg != CURLMSG_DONE)
                                continue;
                        curl_easy_getinfo(cm->easy_handle, CURLINFO_PRIVATE, (char **)&s);
                        curl_easy_getinfo(cm->easy_handle, CURLINFO_RESPONSE_CODE, &status);
                        if (cm->data.result != CURLE_OK || status < 200 || status > 299)
                                errors++;
                        curl_multi_remove_handle(multi, s->easy);
                        rd_kafka_message_destroy(s->msg);
                        s->msg = NULL;
                        free_slots[free_cnt++] = s;
                        if (++calls == records) {
                                printf("done %lld %lld\n", calls, mono_ns());
                                fflush(stdout);
                        }
                }
                /* Sleep only if there is nothing to do without waiting: every slot busy, or
                 * Kafka's queue was found empty (then its pipe wakes us). */
                if (free_cnt == 0 || queue_empty) {
                        struct curl_waitfd wfd = {.fd = wake[0], .events = CURL_WAIT_POLLIN};
                        char buf[64];
                        curl_multi_poll(multi, &wfd, 1, 100, NULL);
                        /* Drained before the next poll of Kafka: a record arriving after that
                         * poll writes the pipe again. A stale byte only wakes us once early. */
                        while (read(wake[0], buf, sizeof(buf)) > 0)
                                ;
                }
        }
        rc = 0;
        printf("exit calls=%lld errors=%lld\n", calls, errors);
        fflush(stdout);
out:
        for (size_t i = 0; slots && i < (size_t)concurrency; i++) {
                if (slots[i].easy) {
                        curl_multi_remove_handle(multi, slots[i].easy);
                        curl_easy_cleanup(slots[i].easy);
                }
                if (slots[i].msg)
                        rd_kafka_message_destroy(slots[i].msg);
        }
        free(slots);
        free(free_slots);
        curl_slist_free_all(hdrs);
        curl_url_cleanup(url);
        if (multi)
                curl_multi_cleanup(multi);
        if (topics)
                rd_kafka_topic_partition_list_destroy(topics);
        if (rkq)
                rd_kafka_queue_destroy(rkq);
        if (rk) {
                rd_kafka_consumer_close(rk);
                rd_kafka_destroy(rk);
        }
        if (conf)
                rd_kafka_conf_destroy(conf);
        if (wake[0] != -1)
                close(wake[0]);
        if (wake[1] != -1)
                close(wake[1]);
        curl_global_cleanup();
        return rc;
}
