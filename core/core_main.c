/* ktrigger: command line, start-up checks, then the loop. Only start-up may exit. */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include "../config/config.h"
#include "../metrics/metrics.h"

#include <curl/curl.h>
#include <getopt.h>
#include <malloc.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out) {
        fprintf(out,
                "Usage: ktrigger [--config FILE] [--set KEY=VALUE]... [--check-config |\n"
                "                --print-config | --describe-config]\n"
                "\n"
                "Consume Kafka records in the consumer group named after the function handler\n"
                "and POST each one to the function runtime; commit only what is done.\n"
                "\n"
                "  -c, --config FILE   libconfig settings file (see ktrigger.conf.example)\n"
                "  -s, --set KEY=VALUE set one setting, e.g. dispatch.max_in_flight=16; wins\n"
                "                      over the environment and the file (repeatable)\n"
                "      --check-config  validate the settings without connecting; exit 0 if\n"
                "                      valid, 78 with every error listed if not\n"
                "      --print-config  print the effective settings and where each came from\n"
                "                      (secrets redacted)\n"
                "      --describe-config  list every setting: type, default, range, env\n"
                "  -V, --version       print the version\n"
                "  -h, --help          print this help\n"
                "\n"
                "Environment (overrides the file): every setting as KTRIGGER_ + its key in\n"
                "upper case with dots as underscores (KTRIGGER_DISPATCH_RETRY_MAX_ATTEMPTS,\n"
                "KTRIGGER_METRICS_LISTEN, KTRIGGER_LOG_LEVEL, ...); Kubeless' FUNC_HANDLER,\n"
                "MOD_NAME, TOPIC_NAME, KAFKA_BROKERS, KUBELESS_KAFKA_SVC,\n"
                "KUBELESS_KAFKA_NAMESPACE, FUNC_PORT, FUNC_TIMEOUT (KTRIGGER_ ones win); POD_NAME\n"
                "(with kafka.static_membership).\n"
                "\n"
                "SIGHUP reloads the configuration: invalid -> logged, the running one is kept.\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'},  {"check-config", no_argument, NULL, 1},
            {"print-config", no_argument, NULL, 2},    {"version", no_argument, NULL, 'V'},
            {"help", no_argument, NULL, 'h'},          {"set", required_argument, NULL, 's'},
            {"describe-config", no_argument, NULL, 3}, {NULL, 0, NULL, 0}};
        char **sets = NULL;
        size_t set_cnt = 0;
        const char *path = NULL;
        int check = 0, print = 0, opt, status, log_json = 0;
        kt_config_t *conf;
        kt_metrics_t *km;
        char errstr[16384];
        sigset_t mask;

        if (!(sets = calloc((size_t)argc, sizeof(*sets))))
                return 1;
        while ((opt = getopt_long(argc, argv, "c:s:Vh", opts, NULL)) != -1) {
                switch (opt) {
                case 's':
                        sets[set_cnt++] = optarg;
                        break;
                case 3:
                        kt_config_describe();
                        free(sets);
                        return 0;
                case 'c':
                        path = optarg;
                        break;
                case 1:
                        check = 1;
                        break;
                case 2:
                        print = 1;
                        break;
                case 'V':
                        printf("ktrigger %s (librdkafka %s, %s)\n", KT_VERSION,
                               rd_kafka_version_str(), curl_version());
                        free(sets);
                        return 0;
                case 'h':
                        usage(stdout);
                        free(sets);
                        return 0;
                default:
                        usage(stderr);
                        free(sets);
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "ktrigger: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                free(sets);
                return 2;
        }

        /* In a child process with a deadline (config_reader.c): whatever reading does, this
         * process only ever sees a configuration or errors. */
        conf = kt_config_load_isolated(path, sets, set_cnt, errstr, sizeof(errstr), &log_json);
        free(sets); /* the config keeps its own copy, for reloads */
        if (!conf) {
                if (log_json && !check && !print) {
                        /* The daemon logs JSON lines: so are its start-up errors. */
                        kt_log_json_set(1);
                        for (const char *l = errstr; *l;) {
                                const char *nl = strchr(l, '\n');
                                int len = nl ? (int)(nl - l) : (int)strlen(l);
                                KT_ERR("CONFIG", "%.*s", len, l);
                                l = nl ? nl + 1 : l + len;
                        }
                        KT_ERR("CONFIG", "invalid configuration%s%s", path ? " in " : "",
                               path ? path : "");
                        return KT_EXIT_CONFIG;
                }
                fprintf(stderr, "%s\n", errstr);
                fprintf(stderr, "ktrigger: invalid configuration%s%s\n", path ? " in " : "",
                        path ? path : "");
                return KT_EXIT_CONFIG;
        }
        if (conf->warnings && (check || print))
                fprintf(stderr, "%s\n", conf->warnings);
        if (check || print) {
                if (print)
                        kt_config_print(conf, stdout);
                if (check)
                        printf("%s: OK: function %s, group %s, %zu topic(s), brokers %s%s%s\n",
                               path ? path : "(environment)", conf->handler, conf->group_id,
                               conf->topic_cnt, conf->brokers,
                               conf->zookeeper
                                   ? (*conf->brokers ? " + ZooKeeper " : "from ZooKeeper ")
                                   : "",
                               conf->zookeeper ? conf->zookeeper : "");
                kt_config_destroy(conf);
                return 0;
        }
        kt_log_level_set(conf->log_level);
        kt_log_json_set(conf->log_json);

#ifdef M_ARENA_MAX
        /* glibc gives each thread that allocates (librdkafka has one per broker, plus its main
         * and background threads; libmicrohttpd one) its own arena, and records allocated in
         * one and freed in another leave arenas half empty: measured 3-6 MiB of peak RSS on 8
         * partitions (bench/README.md). Two arenas are enough for one busy loop thread.
         * MALLOC_ARENA_MAX in the environment still decides if set. */
        if (!getenv("MALLOC_ARENA_MAX"))
                mallopt(M_ARENA_MAX, 2);
#endif
        /* Before any thread exists: threads inherit the mask, so only the loop's signalfd
         * sees these signals. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
                KT_ERR("MAIN", "curl_global_init failed");
                kt_config_destroy(conf);
                return 1;
        }
        srand((unsigned)time(NULL) ^ (unsigned)getpid());

        KT_INFO("MAIN", "ktrigger %s starting: function %s, group %s, config %s", KT_VERSION,
                conf->handler, conf->group_id, conf->hash);
        for (const char *w = conf->warnings; w && *w;) {
                const char *nl = strchr(w, '\n');
                int len = nl ? (int)(nl - w) : (int)strlen(w);
                KT_WARN("CONFIG", "%.*s", len, w);
                w = nl ? nl + 1 : w + len;
        }
        if (!(km = kt_metrics_new(conf))) {
                KT_ERR("MAIN", "out of memory");
                status = 1;
                goto out;
        }
        if (kt_metrics_server_start(km, errstr, sizeof(errstr))) {
                KT_ERR("MAIN", "%s", errstr);
                status = 1;
                goto out;
        }
        status = kt_loop_run(&conf, km); /* a reload may replace conf */

out:
        kt_metrics_destroy(km);
        curl_global_cleanup();
        kt_config_destroy(conf);
        return status;
}
