/*
 * The standard process metrics, named, typed and described as the Prometheus client libraries'
 * process collectors (client_golang, client_python) do, so the usual dashboards and alerts
 * (e.g. fds near the limit) work unchanged. Read from /proc/self and getrlimit() at scrape
 * time on the HTTP thread: nothing is kept, nothing is shared with the loop.
 */
#define _POSIX_C_SOURCE 200809L
#include "metrics_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/** Largest /proc/self/stat we read (it is about 300 bytes; comm is at most 16). */
#define KT_METRICS_PROC_STAT_MAX 1024

int kt_metrics_proc_stat_parse(const char *text, kt_metrics_proc_stat_t *st) {
        /* Fields after "pid (comm)": state is field 3. comm may hold spaces and ')'. */
        const char *p = strrchr(text, ')');
        unsigned long long v[22];
        int n;

        if (!p)
                return -1;
        p++;
        for (n = 0; n < 22; n++) {
                char *end;

                while (*p == ' ')
                        p++;
                if (n == 0) { /* state: one letter */
                        if (!*p || *p == ' ' || *p == '\n')
                                return -1;
                        p++;
                        v[n] = 0;
                        continue;
                }
                errno = 0;
                /* ppid, pgrp ... may be -1 in principle: strtoll, kept as its bits. */
                v[n] = (unsigned long long)strtoll(p, &end, 10);
                if (end == p || errno || (*end != ' ' && *end != '\n' && *end))
                        return -1;
                p = end;
        }
        /* proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24; v[0] is field 3. */
        st->utime_ticks = v[11];
        st->stime_ticks = v[12];
        st->start_ticks = v[19];
        st->vsize_bytes = v[20];
        st->rss_pages = v[21];
        return 0;
}

/** The boot time (seconds since the epoch) from /proc/stat, or -1. */
static long long boot_time(void) {
        char line[256];
        long long btime = -1;
        FILE *f = fopen("/proc/stat", "r");

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (!strncmp(line, "btime ", 6)) {
                        char *end;
                        btime = strtoll(line + 6, &end, 10);
                        if (end == line + 6)
                                btime = -1;
                        break;
                }
        fclose(f);
        return btime;
}

/** Open descriptors, not counting the directory handle used to count them; -1 on error. */
static long open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        long cnt = 0;

        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        cnt++;
        closedir(d);
        return cnt > 0 ? cnt - 1 : 0;
}

void kt_metrics_process_format(FILE *f) {
        char text[KT_METRICS_PROC_STAT_MAX];
        kt_metrics_proc_stat_t st;
        long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE), fds = open_fds();
        long long btime = boot_time();
        struct rlimit rl;
        FILE *sf = fopen("/proc/self/stat", "r");
        int have_stat = 0;

        if (sf) {
                /* All of it, not a line: comm may hold a newline (prctl, the executable's name),
                 * and only the last ')' ends it. */
                size_t n = fread(text, 1, sizeof(text) - 1, sf);
                text[n] = '\0';
                have_stat =
                    n > 0 && !kt_metrics_proc_stat_parse(text, &st) && ticks > 0 && page > 0;
                fclose(sf);
        }
        if (have_stat) {
                fprintf(f,
                        "# HELP process_cpu_seconds_total Total user and system CPU time spent "
                        "in seconds.\n"
                        "# TYPE process_cpu_seconds_total counter\n"
                        "process_cpu_seconds_total %.2f\n"
                        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                        "# TYPE process_virtual_memory_bytes gauge\n"
                        "process_virtual_memory_bytes %llu\n"
                        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                        "# TYPE process_resident_memory_bytes gauge\n"
                        "process_resident_memory_bytes %llu\n",
                        (double)(st.utime_ticks + st.stime_ticks) / (double)ticks, st.vsize_bytes,
                        st.rss_pages * (unsigned long long)page);
                if (btime >= 0)
                        fprintf(f,
                                "# HELP process_start_time_seconds Start time of the process "
                                "since unix epoch in seconds.\n"
                                "# TYPE process_start_time_seconds gauge\n"
                                "process_start_time_seconds %.2f\n",
                                (double)btime + (double)st.start_ticks / (double)ticks);
        }
        if (fds >= 0)
                fprintf(f,
                        "# HELP process_open_fds Number of open file descriptors.\n"
                        "# TYPE process_open_fds gauge\n"
                        "process_open_fds %ld\n",
                        fds);
        if (!getrlimit(RLIMIT_NOFILE, &rl)) {
                fputs("# HELP process_max_fds Maximum number of open file descriptors.\n"
                      "# TYPE process_max_fds gauge\n",
                      f);
                if (rl.rlim_cur == RLIM_INFINITY)
                        fputs("process_max_fds +Inf\n", f);
                else
                        fprintf(f, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
        }
}
