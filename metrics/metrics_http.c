/*
 * /metrics, /healthz and /readyz over libmicrohttpd, on its own internal thread. The handler only
 * reads atomics (kt_metrics_format, kt_metrics_healthy); it never touches loop state.
 *
 * The thread polls with epoll (MHD_USE_AUTO picks it on Linux), never select(): select() cannot
 * watch an fd numbered 1024 or more, and with thousands of calls in flight ktrigger holds that
 * many sockets, so /healthz would refuse every probe. libmicrohttpd's own messages go through
 * ktrigger's logger (one line each, text or JSON), never raw to stderr.
 */
#define _POSIX_C_SOURCE 200809L
#include "metrics_int.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *ctype,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
        enum MHD_Result ret;

        if (!resp) {
                if (mode == MHD_RESPMEM_MUST_FREE)
                        free(body);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
        ret = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
        kt_metrics_t *km = cls;
        static const char text[] = "text/plain; charset=utf-8";

        (void)version;
        (void)upload_data;
        (void)upload_data_size;
        (void)con_cls;
        if (strcmp(method, "GET") && strcmp(method, "HEAD"))
                return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, (char *)"GET only\n", 9,
                             MHD_RESPMEM_PERSISTENT);
        if (!strcmp(url, "/metrics")) {
                size_t len;
                char *body = kt_metrics_format(km, &len);
                if (!body)
                        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text,
                                     (char *)"out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
                return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body,
                             len, MHD_RESPMEM_MUST_FREE);
        }
        if (!strcmp(url, "/healthz")) {
                if (kt_metrics_healthy(km))
                        return reply(conn, MHD_HTTP_OK, text, (char *)"OK\n", 3,
                                     MHD_RESPMEM_PERSISTENT);
                return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, (char *)"loop stalled\n", 13,
                             MHD_RESPMEM_PERSISTENT);
        }
        if (!strcmp(url, "/readyz")) {
                /* ?verbose: every condition with ok/failed, also when ready. */
                int verbose = MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "verbose",
                                                            7, NULL, NULL) == MHD_YES;
                int ready;
                size_t len;
                char *body = kt_metrics_ready_report(km, verbose, &ready, &len);

                if (!body)
                        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text,
                                     (char *)"out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
                return reply(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, body,
                             len, MHD_RESPMEM_MUST_FREE);
        }
        return reply(conn, MHD_HTTP_NOT_FOUND, text, (char *)"not found\n", 10,
                     MHD_RESPMEM_PERSISTENT);
}

/** MHD_OPTION_EXTERNAL_LOGGER: one ktrigger log line per libmicrohttpd message. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
        char msg[512];
        size_t len;

        (void)cls;
        vsnprintf(msg, sizeof(msg), fmt, ap);
        len = strlen(msg);
        while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
                msg[--len] = '\0';
        KT_WARN("METRICS", "HTTP server: %s", msg);
}

kt_err_t kt_metrics_server_start(kt_metrics_t *km, char *errstr, size_t errstr_size) {
        const kt_config_t *conf = km->conf;
        struct addrinfo hints = {0}, *ai = NULL;
        struct MHD_Daemon *d;
        char port[16];
        unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
        int rc;

        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        snprintf(port, sizeof(port), "%d", conf->metrics_port);
        if ((rc = getaddrinfo(conf->metrics_host, port, &hints, &ai))) {
                snprintf(errstr, errstr_size, "metrics.listen: %s: %s", conf->metrics_listen,
                         gai_strerror(rc));
                return KT_ERR_CONFIG;
        }
        if (ai->ai_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        /* The logger first: options before it would log the standard way. */
        d = MHD_start_daemon(flags, (uint16_t)conf->metrics_port, NULL, NULL, handle, km,
                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
                             ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
        freeaddrinfo(ai);
        if (!d) {
                snprintf(errstr, errstr_size,
                         "metrics.listen: cannot listen on %s (address in use or not local?)",
                         conf->metrics_listen);
                return KT_ERR_SYS;
        }
        km->server = d;
        KT_INFO("METRICS", "serving /metrics, /healthz and /readyz on %s", conf->metrics_listen);
        km->conf = NULL; /* a reload may free it: nothing reads it after this */
        return KT_OK;
}

void kt_metrics_server_stop(kt_metrics_t *km) {
        if (km->server) {
                MHD_stop_daemon(km->server);
                km->server = NULL;
        }
}
