/* process_* metrics: /proc/self/stat parsing (comm with spaces and parentheses, malformed
 * lines) and the live values in the exposition (fds opened show, limits and start time). */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../metrics_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void test_parse(void) {
        static const struct {
                const char *line;
                int ok;
                unsigned long long utime, stime, start, vsize, rss;
        } cases[] = {
            {"1234 (ktrigger) S 1 1234 1234 0 -1 4194560 1513 0 0 0 17 5 0 0 20 0 9 0 "
             "123456 260071424 2563 18446744073709551615 1 1 0 0 0 0 0 4096 17000 0 0 0 17 1 "
             "0 0 0 0 0\n",
             1, 17, 5, 123456, 260071424, 2563},
            /* comm may hold spaces and ')': the last ')' ends it. */
            {"7 (a) b (c) ) R 1 7 7 0 -1 0 0 0 0 0 300 200 0 0 20 0 1 0 99 4096 3 0\n", 1, 300, 200,
             99, 4096, 3},
            {"7 (x) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 3 4 5", 1, 1, 2, 3, 4, 5},
            {"7 (a\n) 1 2\n) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 3 4 5\n", 1, 1, 2, 3, 4, 5},
            {"7 (x) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 3 4\n", 0, 0, 0, 0, 0, 0},
            {"7 x R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 3 4 5\n", 0, 0, 0, 0, 0, 0},
            {"7 (x) R 1 7 7 0 -1 0 0 0 0 0 1x 2 0 0 20 0 1 0 3 4 5\n", 0, 0, 0, 0, 0, 0},
            {"7 (x) \n", 0, 0, 0, 0, 0, 0},
            {"", 0, 0, 0, 0, 0, 0},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_metrics_proc_stat_t st = {0};
                int rc = kt_metrics_proc_stat_parse(cases[i].line, &st);

                KT_CHECK((rc == 0) == cases[i].ok, "case %zu: rc %d", i, rc);
                if (rc || !cases[i].ok)
                        continue;
                KT_CHECK(st.utime_ticks == cases[i].utime && st.stime_ticks == cases[i].stime &&
                             st.start_ticks == cases[i].start && st.vsize_bytes == cases[i].vsize &&
                             st.rss_pages == cases[i].rss,
                         "case %zu: %llu %llu %llu %llu %llu", i, st.utime_ticks, st.stime_ticks,
                         st.start_ticks, st.vsize_bytes, st.rss_pages);
        }
}

/** The value of the sample line "name value" in \p text, or -1. */
static double sample(const char *text, const char *name) {
        char want[64];
        const char *p;

        snprintf(want, sizeof(want), "\n%s ", name);
        if (!(p = strstr(text, want)))
                return -1;
        return strtod(p + strlen(want), NULL);
}

static char *format(void) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        fputc('\n', f);
        kt_metrics_process_format(f);
        fclose(f);
        return buf;
}

static void test_live(void) {
        static const char *const types[] = {
            "# TYPE process_cpu_seconds_total counter\n",
            "# TYPE process_virtual_memory_bytes gauge\n",
            "# TYPE process_resident_memory_bytes gauge\n",
            "# TYPE process_start_time_seconds gauge\n",
            "# TYPE process_open_fds gauge\n",
            "# TYPE process_max_fds gauge\n",
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n",
            "# HELP process_open_fds Number of open file descriptors.\n",
            "# HELP process_max_fds Maximum number of open file descriptors.\n",
            "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n",
        };
        struct rlimit rl;
        int fds[10];
        char *a = format(), *b;
        double now = (double)time(NULL);

        KT_CHECK(a != NULL, "format");
        if (!a)
                return;
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
                KT_CHECK(strstr(a, types[i]) != NULL, "missing: %s", types[i]);
        for (int i = 0; i < 10; i++)
                fds[i] = open("/dev/null", O_RDONLY);
        b = format();
        for (int i = 0; i < 10; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        KT_CHECK(b != NULL, "format");
        if (b) {
                KT_CHECK(sample(b, "process_open_fds") - sample(a, "process_open_fds") == 10,
                         "10 more fds: %g -> %g", sample(a, "process_open_fds"),
                         sample(b, "process_open_fds"));
                free(b);
        }
        KT_CHECK(sample(a, "process_open_fds") >= 3, "open fds %g", sample(a, "process_open_fds"));
        getrlimit(RLIMIT_NOFILE, &rl);
        KT_CHECK(sample(a, "process_max_fds") == (double)rl.rlim_cur, "max fds %g",
                 sample(a, "process_max_fds"));
        KT_CHECK(sample(a, "process_start_time_seconds") > now - 600 &&
                     sample(a, "process_start_time_seconds") <= now + 1,
                 "start time %f, now %f", sample(a, "process_start_time_seconds"), now);
        KT_CHECK(sample(a, "process_resident_memory_bytes") > 1e6, "rss %g",
                 sample(a, "process_resident_memory_bytes"));
        KT_CHECK(sample(a, "process_virtual_memory_bytes") >=
                     sample(a, "process_resident_memory_bytes"),
                 "vsize %g", sample(a, "process_virtual_memory_bytes"));
        KT_CHECK(sample(a, "process_cpu_seconds_total") >= 0, "cpu %g",
                 sample(a, "process_cpu_seconds_total"));
        free(a);
}

/* comm is whatever the process calls itself (prctl, or the executable's name): a newline
 * in it must not hide the CPU and memory metrics. */
static void test_live_comm(void) {
        static const char *const names[] = {"kt\n) S 1 2", "a b) (c", "kt)\n"};
        char old[17] = {0};

        prctl(PR_GET_NAME, old, 0, 0, 0);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                char *a;

                prctl(PR_SET_NAME, names[i], 0, 0, 0);
                a = format();
                KT_CHECK(a && sample(a, "process_cpu_seconds_total") >= 0 &&
                             sample(a, "process_resident_memory_bytes") > 1e6,
                         "comm %zu: cpu %g rss %g", i,
                         a ? sample(a, "process_cpu_seconds_total") : -1,
                         a ? sample(a, "process_resident_memory_bytes") : -1);
                free(a);
        }
        prctl(PR_SET_NAME, old, 0, 0, 0);
}

int main(void) {
        test_parse();
        test_live();
        test_live_comm();
        return kt_test_done("test_process");
}
