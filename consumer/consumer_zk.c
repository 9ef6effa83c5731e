/*
 * DESIGN: broker discovery through ZooKeeper (kafka.zookeeper).
 *
 * Kafka brokers in ZooKeeper mode register an ephemeral znode /brokers/ids/<id> holding JSON
 * (endpoints, listener_security_protocol_map, host, port, ...). We list the ids with a child
 * watch, read each registration with a data watch, pick the endpoint that matches
 * kafka.zookeeper_listener or the consumer's security.protocol, and hand every endpoint not
 * seen before to the loop, which adds it to librdkafka (rd_kafka_brokers_add) on the consumer
 * and the dead-letter producer. librdkafka then learns the rest of the cluster from metadata;
 * a broker that goes away is simply not used by librdkafka any more, so removals only update
 * the count.
 *
 * Threads. libzookeeper-mt runs its own IO and completion threads; our watcher and completion
 * callbacks run on the latter and only copy what they got (session state, children names,
 * znode bytes capped at KT_ZK_MAX_ZNODE_BYTES) into an event on a mutex-protected list and
 * write one byte to a pipe. The loop thread sleeps on that pipe; kt_consumer_zk_poll() takes
 * the list and does everything else: parsing, dedup, re-arming the one-shot watches (zoo_a*
 * calls are made from the loop thread only), reconnecting.
 *
 * Sessions. The client reconnects by itself after a lost connection (same session, watches
 * kept, a CONNECTED event makes us list the ids again). An expired session, one not
 * reconnected within KT_ZK_RENEW_MS (a ZooKeeper that lost its data refuses it without ever
 * expiring it), or a handle that could not be created at all (e.g. the host name does not
 * resolve yet) is closed and created again from the loop, with back-off
 * KT_ZK_BACKOFF_MIN_MS .. KT_ZK_BACKOFF_MAX_MS for failed creations. Each handle
 * has a generation; events queued by an older one are dropped. zookeeper_close() joins the
 * client's threads (calling outstanding completions with ZCLOSING first), so once it returned
 * nothing refers to the session's context any more. Logged once per state change, never per
 * attempt; the client's own log goes to ours at debug level, else it is silenced.
 * Watches belong to a session: when one is replaced, every known broker is marked stale, so
 * the new session's first list reads each registration again and so sets its data watch
 * again (a version already looked at is not counted or handed over twice).
 *
 * Host names. zookeeper_init2() resolves the connect string's hosts itself, synchronously
 * (getaddrinfo), which would block the loop for as long as DNS takes. So each session start
 * first resolves them on a thread of its own (zk_resolve_t, detached, one at a time) into a
 * connect string of numeric addresses (kt_consumer_zk_connect_resolve), handed back under a
 * lock with a byte on the same pipe; the loop then calls zookeeper_init2() with that, which
 * resolves nothing. A resolution still running when discovery is destroyed is abandoned: the
 * thread frees it and no longer writes the pipe.
 *
 * Bad data. A registration that cannot be used (not JSON, wrong types, no endpoint for our
 * protocol, bad host or port, too big) or a child that is not a broker id is skipped, logged
 * and counted once per znode version (mzxid), so reconnects and re-lists do not count it again.
 */
#define _POSIX_C_SOURCE 200809L
#include "consumer.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zookeeper.h>

#define FAC "ZOOKEEPER"

/** Session timeout asked of the server. Our session owns no ephemeral znode, so a short one
 *  costs only pings; it bounds how long a lost connection is left to the client's own
 *  reconnects (KT_ZK_RENEW_MS). */
#define KT_ZK_SESSION_TIMEOUT_MS 10000
/** Disconnected this long, a session that had connected is given up for a new one: by then the
 *  server expired it, and a server that lost its data refuses it forever ("client must try
 *  another server") without ever saying it expired. */
#define KT_ZK_RENEW_MS (KT_ZK_SESSION_TIMEOUT_MS + 2000)
/** Back-off between attempts to create a session. */
#define KT_ZK_BACKOFF_MIN_MS 500
#define KT_ZK_BACKOFF_MAX_MS 30000
/** Warn once if a new session has not connected within this long. */
#define KT_ZK_CONNECT_WARN_MS 5000
/** At most this many children of /brokers/ids are looked at. */
#define KT_ZK_MAX_BROKERS 1024
/** Broker ids are int32: longer child names are not ids. */
#define KT_ZK_MAX_ID_LEN 11
/** Longest watch path copied (ours are short; longer ones are not ours). */
#define KT_ZK_MAX_PATH 512

#define IDS_PATH "/brokers/ids"

/* ---------------------------------------------------------------- registration parsing */

static kt_err_t fail(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kt_err_t fail(char *errstr, size_t errstr_size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
        return KT_ERR_INVALID;
}

/** Up to 64 bytes of untrusted \p s for a message, control bytes shown as '?'. */
static const char *shown(const char *s, size_t len, char buf[65]) {
        size_t i;

        for (i = 0; i < len && i < 64 && s[i]; i++)
                buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        buf[i] = '\0';
        return buf;
}

/** Host names as brokers advertise them: letters, digits, '-', '.', '_'. */
static int host_name_valid(const char *h, size_t len) {
        if (len == 0 || len > 253)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
                      (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '.' || h[i] == '_'))
                        return 0;
        return 1;
}

static int host_v6_valid(const char *h, size_t len) {
        char buf[INET6_ADDRSTRLEN];
        struct in6_addr a;

        if (len == 0 || len >= sizeof(buf))
                return 0;
        memcpy(buf, h, len);
        buf[len] = '\0';
        return inet_pton(AF_INET6, buf, &a) == 1;
}

/** Write "host:port" (brackets around an IPv6 address) for a validated host. */
static kt_err_t hostport_make(const char *host, size_t host_len, long port, char *hostport,
                              size_t size, char *errstr, size_t errstr_size) {
        int v6 = memchr(host, ':', host_len) != NULL, n;
        char b[65];

        if (v6 ? !host_v6_valid(host, host_len) : !host_name_valid(host, host_len))
                return fail(errstr, errstr_size, "host '%s' is not a host name or address",
                            shown(host, host_len, b));
        if (port < 1 || port > 65535)
                return fail(errstr, errstr_size, "port %ld is outside 1..65535", port);
        n = snprintf(hostport, size, "%s%.*s%s:%ld", v6 ? "[" : "", (int)host_len, host,
                     v6 ? "]" : "", port);
        if (n < 0 || (size_t)n >= size)
                return fail(errstr, errstr_size, "endpoint longer than %zu bytes", size);
        return KT_OK;
}

/** "host:port" or "[addr]:port" (the part of an endpoint after "LISTENER://"). */
static kt_err_t endpoint_parse(const char *s, char *hostport, size_t size, char *errstr,
                               size_t errstr_size) {
        const char *host = s, *host_end, *colon, *p;
        long port = 0;
        char b[65];

        shown(s, strlen(s), b);
        if (*s == '[') {
                host = s + 1;
                if (!(host_end = strchr(host, ']')) || host_end[1] != ':')
                        return fail(errstr, errstr_size, "'%s' is not [address]:port", b);
                colon = host_end + 1;
        } else {
                if (!(colon = strrchr(s, ':')))
                        return fail(errstr, errstr_size, "'%s' has no port", b);
                host_end = colon;
                if (memchr(s, ':', (size_t)(colon - s)))
                        return fail(errstr, errstr_size,
                                    "'%s': an IPv6 address must be in brackets", b);
        }
        if (host_end == host)
                return fail(errstr, errstr_size, "'%s' has an empty host", b);
        if (!colon[1])
                return fail(errstr, errstr_size, "'%s' has an empty port", b);
        for (p = colon + 1; *p; p++) {
                if (*p < '0' || *p > '9' || p - colon > 5)
                        return fail(errstr, errstr_size, "'%s': port is not 1..65535", b);
                port = port * 10 + (*p - '0');
        }
        return hostport_make(host, (size_t)(host_end - host), port, hostport, size, errstr,
                             errstr_size);
}

kt_err_t kt_consumer_zk_broker_parse(const char *json, size_t len, const char *protocol,
                                     const char *listener, char *hostport, size_t size,
                                     char *errstr, size_t errstr_size) {
        const char *proto = protocol && *protocol ? protocol : "PLAINTEXT";
        cJSON *root = NULL, *eps, *map, *ep, *host, *port;
        kt_err_t err;

        if (size)
                hostport[0] = '\0';
        if (listener && !*listener)
                listener = NULL;
        if (!json || !len) {
                err = fail(errstr, errstr_size, "empty registration");
                goto out;
        }
        if (len > KT_ZK_MAX_ZNODE_BYTES) {
                err = fail(errstr, errstr_size, "registration of %zu bytes, over the %d-byte cap",
                           len, KT_ZK_MAX_ZNODE_BYTES);
                goto out;
        }
        if (!(root = cJSON_ParseWithLength(json, len))) {
                err = fail(errstr, errstr_size, "not JSON");
                goto out;
        }
        if (!cJSON_IsObject(root)) {
                err = fail(errstr, errstr_size, "not a JSON object");
                goto out;
        }
        eps = cJSON_GetObjectItemCaseSensitive(root, "endpoints");
        map = cJSON_GetObjectItemCaseSensitive(root, "listener_security_protocol_map");
        if (map && !cJSON_IsNull(map) && !cJSON_IsObject(map)) {
                err = fail(errstr, errstr_size, "listener_security_protocol_map is not an object");
                goto out;
        }
        if (eps && !cJSON_IsNull(eps) && !cJSON_IsArray(eps)) {
                err = fail(errstr, errstr_size, "endpoints is not an array");
                goto out;
        }
        if (cJSON_GetArraySize(eps) > 0) {
                cJSON_ArrayForEach(ep, eps) {
                        const char *s, *sep;
                        char name[128], b[65];
                        size_t nlen;
                        int match;

                        if (!cJSON_IsString(ep)) {
                                err = fail(errstr, errstr_size, "an endpoint is not a string");
                                goto out;
                        }
                        s = ep->valuestring;
                        if (!(sep = strstr(s, "://")) || sep == s ||
                            (nlen = (size_t)(sep - s)) >= sizeof(name)) {
                                err = fail(errstr, errstr_size,
                                           "endpoint '%s' is not LISTENER://host:port",
                                           shown(s, strlen(s), b));
                                goto out;
                        }
                        memcpy(name, s, nlen);
                        name[nlen] = '\0';
                        if (listener)
                                match = !strcasecmp(name, listener);
                        else if (cJSON_IsObject(map)) {
                                cJSON *m = cJSON_GetObjectItemCaseSensitive(map, name);
                                if (!cJSON_IsString(m)) {
                                        err = fail(errstr, errstr_size,
                                                   "listener '%s' is not in "
                                                   "listener_security_protocol_map",
                                                   shown(name, nlen, b));
                                        goto out;
                                }
                                match = !strcasecmp(m->valuestring, proto);
                        } else
                                match = !strcasecmp(name, proto); /* versions 2, 3 */
                        if (match) {
                                err = endpoint_parse(sep + 3, hostport, size, errstr, errstr_size);
                                goto out;
                        }
                }
                if (listener)
                        err = fail(errstr, errstr_size, "no endpoint for listener %s", listener);
                else
                        err = fail(errstr, errstr_size, "no endpoint with security protocol %s",
                                   proto);
                goto out;
        }

        /* Version 1 (and no endpoints): host and port, which are always PLAINTEXT. */
        if (listener || strcasecmp(proto, "PLAINTEXT")) {
                err = fail(errstr, errstr_size, "no endpoints (host and port are PLAINTEXT only)");
                goto out;
        }
        host = cJSON_GetObjectItemCaseSensitive(root, "host");
        port = cJSON_GetObjectItemCaseSensitive(root, "port");
        if (!cJSON_IsString(host) || !cJSON_IsNumber(port)) {
                err = fail(errstr, errstr_size, "no endpoints and no string host, numeric port");
                goto out;
        }
        if (!(port->valuedouble >= 1 && port->valuedouble <= 65535) ||
            (double)(long)port->valuedouble != port->valuedouble) {
                err = fail(errstr, errstr_size, "port %g is not 1..65535", port->valuedouble);
                goto out;
        }
        err = hostport_make(host->valuestring, strlen(host->valuestring), (long)port->valuedouble,
                            hostport, size, errstr, errstr_size);
out:
        if (err && size)
                hostport[0] = '\0';
        cJSON_Delete(root);
        return err;
}

/* ---------------------------------------------------------------- hand-over from ZK threads */

typedef enum ev_kind {
        EV_WATCH,    /**< a watch fired, or the session changed state */
        EV_CHILDREN, /**< children of IDS_PATH */
        EV_EXISTS,   /**< exists(IDS_PATH) answered */
        EV_DATA      /**< a registration's bytes */
} ev_kind_t;

typedef struct zk_event {
        struct zk_event *next;
        ev_kind_t kind;
        unsigned gen;     /**< the session that queued it */
        int rc;           /**< completions: ZOK, ZNONODE, ... */
        int type, state;  /**< EV_WATCH */
        char *path;       /**< EV_WATCH: the znode; EV_DATA: the broker id */
        char **children;  /**< EV_CHILDREN */
        size_t child_cnt; /**< of them, at most KT_ZK_MAX_BROKERS */
        size_t child_all; /**< children there were */
        char *data;       /**< EV_DATA: the bytes, NULL if the znode has none */
        size_t len;       /**< bytes there were (data holds them only up to the cap) */
        int64_t mzxid;    /**< EV_DATA: the version read */
} zk_event_t;

/** All that libzookeeper's threads touch (besides immutable session contexts). */
typedef struct zk_shared {
        pthread_mutex_t lock;
        zk_event_t *head, *tail; /**< under lock */
        int lost;                /**< under lock: an event could not be queued (no memory) */
        int wake[2];             /**< [0] read by the loop, [1] written by the ZK threads */
} zk_shared_t;

/** Context of one handle's callbacks: immutable, freed after zookeeper_close(). */
typedef struct zk_session {
        zk_shared_t *sh;
        unsigned gen;
} zk_session_t;

/** Context of one get of a registration; freed by its completion. */
typedef struct zk_req {
        zk_shared_t *sh;
        unsigned gen;
        char id[KT_ZK_MAX_ID_LEN + 1];
} zk_req_t;

static void ev_free(zk_event_t *ev) {
        if (!ev)
                return;
        for (size_t i = 0; i < ev->child_cnt; i++)
                free(ev->children[i]);
        free(ev->children);
        free(ev->path);
        free(ev->data);
        free(ev);
}

/** @locality ZooKeeper completion thread (or the loop, in zookeeper_close()). */
static void ev_push(zk_shared_t *sh, zk_event_t *ev) {
        ssize_t r;

        pthread_mutex_lock(&sh->lock);
        if (!ev)
                sh->lost = 1;
        else {
                if (sh->tail)
                        sh->tail->next = ev;
                else
                        sh->head = ev;
                sh->tail = ev;
        }
        pthread_mutex_unlock(&sh->lock);
        /* Non-blocking: a full pipe already wakes the loop. */
        r = write(sh->wake[1], "z", 1);
        (void)r;
}

static zk_event_t *ev_new(ev_kind_t kind, unsigned gen, int rc) {
        zk_event_t *ev = calloc(1, sizeof(*ev));

        if (ev) {
                ev->kind = kind;
                ev->gen = gen;
                ev->rc = rc;
        }
        return ev;
}

/** @locality ZooKeeper completion thread */
static void on_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
        zk_session_t *ses = ctx;
        zk_event_t *ev;

        (void)zh;
        if (!ses)
                return;
        if ((ev = ev_new(EV_WATCH, ses->gen, ZOK))) {
                ev->type = type;
                ev->state = state;
                if (path && *path && !(ev->path = strndup(path, KT_ZK_MAX_PATH))) {
                        ev_free(ev);
                        ev = NULL;
                }
        }
        ev_push(ses->sh, ev);
}

/** @locality ZooKeeper completion thread */
static void on_children(int rc, const struct String_vector *strings, const void *data) {
        const zk_session_t *ses = data;
        zk_event_t *ev = ev_new(EV_CHILDREN, ses->gen, rc);

        if (ev && rc == ZOK && strings && strings->count > 0) {
                size_t n = (size_t)strings->count;
                ev->child_all = n;
                if (n > KT_ZK_MAX_BROKERS)
                        n = KT_ZK_MAX_BROKERS;
                if (!(ev->children = calloc(n, sizeof(*ev->children)))) {
                        ev_free(ev);
                        ev = NULL;
                }
                for (size_t i = 0; ev && i < n; i++) {
                        if (!(ev->children[i] = strndup(strings->data[i], KT_ZK_MAX_PATH))) {
                                ev_free(ev);
                                ev = NULL;
                                break;
                        }
                        ev->child_cnt++;
                }
        }
        ev_push(ses->sh, ev);
}

/** @locality ZooKeeper completion thread */
static void on_exists(int rc, const struct Stat *stat, const void *data) {
        const zk_session_t *ses = data;

        (void)stat;
        ev_push(ses->sh, ev_new(EV_EXISTS, ses->gen, rc));
}

/** @locality ZooKeeper completion thread */
static void on_data(int rc, const char *value, int value_len, const struct Stat *stat,
                    const void *data) {
        zk_req_t *req = (zk_req_t *)data;
        zk_shared_t *sh = req->sh;
        zk_event_t *ev = ev_new(EV_DATA, req->gen, rc);

        if (ev && !(ev->path = strdup(req->id))) {
                ev_free(ev);
                ev = NULL;
        }
        if (ev && rc == ZOK) {
                ev->mzxid = stat ? stat->mzxid : -1;
                if (value && value_len > 0) {
                        /* One byte over the cap is enough to tell it is too big. */
                        size_t n = (size_t)value_len,
                               copy = n > KT_ZK_MAX_ZNODE_BYTES ? KT_ZK_MAX_ZNODE_BYTES + 1 : n;
                        ev->len = n;
                        if (!(ev->data = malloc(copy))) {
                                ev_free(ev);
                                ev = NULL;
                        } else
                                memcpy(ev->data, value, copy);
                }
        }
        free(req);
        ev_push(sh, ev);
}

/* ---------------------------------------------------------------- host names, off the loop */

/** Append \p n bytes of \p s to \p out (capacity \p size, \p *len used). @returns -1 if they
 *  do not fit. */
static int append(char *out, size_t size, size_t *len, const char *s, size_t n) {
        if (*len + n >= size)
                return -1;
        memcpy(out + *len, s, n);
        *len += n;
        out[*len] = '\0';
        return 0;
}

kt_err_t kt_consumer_zk_connect_resolve(const char *connect, char *out, size_t size, char *errstr,
                                        size_t errstr_size) {
        const char *chroot = strchr(connect, '/');
        const char *end = chroot ? chroot : connect + strlen(connect), *h = connect;
        size_t len = 0;
        int resolved = 0;
        char why[256] = "";

        if (!size)
                return fail(errstr, errstr_size, "no room");
        out[0] = '\0';
        while (h < end) {
                const char *comma = memchr(h, ',', (size_t)(end - h));
                const char *stop = comma ? comma : end, *colon = NULL, *host = h, *host_end;
                char hbuf[256], pbuf[8];
                struct addrinfo hints, *res = NULL, *ai;
                int rc;

                while (host < stop && (*host == ' ' || *host == '\t'))
                        host++;
                for (const char *c = host; c < stop; c++)
                        if (*c == ':')
                                colon = c;
                if (!colon || colon + 1 >= stop || (size_t)(stop - colon - 1) >= sizeof(pbuf))
                        return fail(errstr, errstr_size, "'%.*s' has no port", (int)(stop - h), h);
                host_end = colon;
                if (*host == '[' && host_end > host + 1 && host_end[-1] == ']') {
                        host++;
                        host_end--;
                }
                if (host_end == host || (size_t)(host_end - host) >= sizeof(hbuf))
                        return fail(errstr, errstr_size, "'%.*s' has no host", (int)(stop - h), h);
                memcpy(hbuf, host, (size_t)(host_end - host));
                hbuf[host_end - host] = '\0';
                memcpy(pbuf, colon + 1, (size_t)(stop - colon - 1));
                pbuf[stop - colon - 1] = '\0';
                memset(&hints, 0, sizeof(hints));
                hints.ai_family = AF_UNSPEC;
                hints.ai_socktype = SOCK_STREAM;
                hints.ai_protocol = IPPROTO_TCP;
                hints.ai_flags = AI_ADDRCONFIG;
                rc = getaddrinfo(hbuf, pbuf, &hints, &res);
                if (rc == EAI_BADFLAGS) {
                        hints.ai_flags = 0; /* as the ZooKeeper client does */
                        rc = getaddrinfo(hbuf, pbuf, &hints, &res);
                }
                if (rc)
                        snprintf(why, sizeof(why), "%.64s: %s", hbuf, gai_strerror(rc));
                for (ai = rc ? NULL : res; ai; ai = ai->ai_next) {
                        char num[INET6_ADDRSTRLEN];
                        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                            getnameinfo(ai->ai_addr, ai->ai_addrlen, num, sizeof(num), NULL, 0,
                                        NI_NUMERICHOST))
                                continue;
                        /* The client splits host and port at the last ':': no brackets. */
                        if ((len && append(out, size, &len, ",", 1)) ||
                            append(out, size, &len, num, strlen(num)) ||
                            append(out, size, &len, ":", 1) ||
                            append(out, size, &len, pbuf, strlen(pbuf))) {
                                freeaddrinfo(res);
                                return fail(errstr, errstr_size,
                                            "resolved addresses over %zu bytes", size);
                        }
                        resolved = 1;
                }
                if (!rc && res)
                        freeaddrinfo(res);
                h = comma ? comma + 1 : end;
        }
        if (!resolved)
                return fail(errstr, errstr_size, "no host of it resolves%s%s%s", *why ? " (" : "",
                            why, *why ? ")" : "");
        if (chroot && append(out, size, &len, chroot, strlen(chroot)))
                return fail(errstr, errstr_size, "resolved addresses over %zu bytes", size);
        return KT_OK;
}

/** One resolution of the connect string, on its own thread (see DESIGN: host names). */
typedef struct zk_resolve {
        pthread_mutex_t lock;
        int refs;      /**< under lock: the thread and the loop; the last one frees it */
        int abandoned; /**< under lock: discovery is gone, its pipe must not be written */
        int done;      /**< under lock; then err, numeric and why are the thread's answer */
        int wake_fd;   /**< discovery's pipe, written once done unless abandoned */
        kt_err_t err;
        char *connect; /**< what to resolve (a copy: a reload may free the config) */
        char numeric[4096];
        char why[256];
} zk_resolve_t;

static void resolve_unref(zk_resolve_t *r, int abandon) {
        int last;

        pthread_mutex_lock(&r->lock);
        if (abandon)
                r->abandoned = 1;
        last = --r->refs == 0;
        pthread_mutex_unlock(&r->lock);
        if (!last)
                return;
        pthread_mutex_destroy(&r->lock);
        free(r->connect);
        free(r);
}

/** @locality its own thread */
static void *resolve_run(void *arg) {
        zk_resolve_t *r = arg;
        char numeric[sizeof(r->numeric)], why[sizeof(r->why)] = "";
        kt_err_t err =
            kt_consumer_zk_connect_resolve(r->connect, numeric, sizeof(numeric), why, sizeof(why));

        pthread_mutex_lock(&r->lock);
        r->err = err;
        memcpy(r->numeric, numeric, sizeof(numeric));
        memcpy(r->why, why, sizeof(why));
        r->done = 1;
        if (!r->abandoned) {
                ssize_t w = write(r->wake_fd, "r", 1); /* a full pipe already wakes the loop */
                (void)w;
        }
        pthread_mutex_unlock(&r->lock);
        resolve_unref(r, 0);
        return NULL;
}

/* ---------------------------------------------------------------- the loop's side */

typedef enum broker_state {
        BR_NONE, /**< listed, not read yet */
        BR_OK,   /**< hostport is its endpoint */
        BR_BAD   /**< the version read (mzxid) is not usable; counted */
} broker_state_t;

typedef struct zk_broker {
        char *id;
        broker_state_t state;
        int64_t mzxid; /**< version last read, -1 if none */
        int fetching;  /**< a get (which also sets the data watch) is outstanding */
        int stale;     /**< a get was lost (connection, memory): read it again at the next list */
        int listed;    /**< in the latest children list */
        char hostport[KT_ZK_HOSTPORT_SIZE];
} zk_broker_t;

struct kt_zk {
        const kt_config_t *conf;
        kt_zk_broker_cb *cb;
        void *opaque;
        zk_shared_t sh;
        int sh_lock_init;
        zhandle_t *zh;
        zk_session_t *ses;
        unsigned gen;          /**< current session's generation (bumped on close too) */
        char protocol[64];     /**< security.protocol of the consumer */
        int64_t start_at_ms;   /**< when to create a session (no handle), else INT64_MAX */
        int backoff_ms;        /**< next back-off after a failed start */
        int start_failing;     /**< the last start failed (logged once) */
        int64_t down_since_ms; /**< the handle is not connected since then */
        int ses_connected;     /**< the handle's session connected at least once */
        int outage_logged;     /**< not being connected was logged since the last connect */
        int ever_connected;    /**< to tell a first connect from a reconnect in the log */
        int ids_missing;       /**< IDS_PATH did not exist (logged once) */
        int over_cap_logged;   /**< more than KT_ZK_MAX_BROKERS children (logged once) */
        zk_broker_t *brokers;  /**< every listed child, KT_ZK_MAX_BROKERS at most */
        size_t broker_cnt;
        size_t broker_size; /**< allocated */
        kt_zk_stats_t stats;
        zk_resolve_t *resolve;    /**< the resolution of the connect string running or done */
        int64_t resolve_since_ms; /**< when it started */
        int resolve_logged;       /**< a slow resolution was logged */
};

static void zk_log(const char *message) {
        kt_log(KT_LOG_DEBUG, "ZOOKEEPER-C", "%s", message);
}

static zk_broker_t *broker_find(kt_zk_t *zk, const char *id) {
        for (size_t i = 0; i < zk->broker_cnt; i++)
                if (!strcmp(zk->brokers[i].id, id))
                        return &zk->brokers[i];
        return NULL;
}

static void stats_update(kt_zk_t *zk) {
        int n = 0;

        for (size_t i = 0; i < zk->broker_cnt; i++)
                n += zk->brokers[i].state == BR_OK;
        zk->stats.brokers = n;
}

static void broker_remove(kt_zk_t *zk, zk_broker_t *b) {
        size_t i = (size_t)(b - zk->brokers);

        if (b->state == BR_OK)
                KT_INFO(FAC, "broker %s (%s) unregistered from ZooKeeper", b->id, b->hostport);
        free(b->id);
        zk->brokers[i] = zk->brokers[--zk->broker_cnt];
        stats_update(zk);
}

static int is_broker_id(const char *s) {
        size_t len = strlen(s);

        if (len == 0 || len > KT_ZK_MAX_ID_LEN)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (s[i] < '0' || s[i] > '9')
                        return 0;
        return 1;
}

/** Count and log a registration we cannot use. */
static void bad_registration(kt_zk_t *zk, const char *id, const char *why) {
        zk->stats.bad_registrations++;
        KT_WARN(FAC, "%s/brokers/ids/%.64s: registration skipped: %s", zk->conf->zookeeper, id,
                why);
}

static void list_ids(kt_zk_t *zk) {
        int rc;

        if (!zk->zh)
                return;
        rc = zoo_awget_children(zk->zh, IDS_PATH, on_watch, zk->ses, on_children, zk->ses);
        if (rc != ZOK)
                KT_DBG(FAC, "list %s: %s", IDS_PATH, zerror(rc));
}

static void get_broker(kt_zk_t *zk, zk_broker_t *b) {
        char path[sizeof(IDS_PATH) + KT_ZK_MAX_ID_LEN + 2];
        zk_req_t *req;
        int rc;

        if (!is_broker_id(b->id))
                return; /* counted as bad when listed; never read */
        if (!zk->zh || !(req = calloc(1, sizeof(*req))))
                return; /* read again at the next list */
        req->sh = &zk->sh;
        req->gen = zk->gen;
        snprintf(req->id, sizeof(req->id), "%s", b->id);
        snprintf(path, sizeof(path), IDS_PATH "/%s", b->id);
        rc = zoo_awget(zk->zh, path, on_watch, zk->ses, on_data, req);
        if (rc == ZOK) {
                b->fetching = 1;
                b->stale = 0;
                return;
        }
        b->stale = 1;
        KT_DBG(FAC, "get %s: %s", path, zerror(rc));
        /* Refused before the request was queued: the completion will not run. (Other errors
         * come from queueing it, after which the completion owns req.) */
        if (rc == ZBADARGUMENTS || rc == ZINVALIDSTATE)
                free(req);
}

/** The children of IDS_PATH: read the new ones, forget the gone ones. */
static void children_serve(kt_zk_t *zk, zk_event_t *ev) {
        if (ev->rc == ZNONODE) {
                int rc;
                while (zk->broker_cnt)
                        broker_remove(zk, &zk->brokers[zk->broker_cnt - 1]);
                if (!zk->ids_missing)
                        KT_INFO(FAC, "%s has no %s yet: waiting for a broker to register",
                                zk->conf->zookeeper, IDS_PATH);
                zk->ids_missing = 1;
                /* Watch for it to appear; if it appeared meanwhile, on_exists says so. */
                rc = zoo_awexists(zk->zh, IDS_PATH, on_watch, zk->ses, on_exists, zk->ses);
                if (rc != ZOK)
                        KT_DBG(FAC, "exists %s: %s", IDS_PATH, zerror(rc));
                return;
        }
        if (ev->rc != ZOK) {
                /* Connection loss and the like: the next CONNECTED event lists again. */
                KT_DBG(FAC, "list %s: %s", IDS_PATH, zerror(ev->rc));
                return;
        }
        zk->ids_missing = 0;
        if (ev->child_all > ev->child_cnt && !zk->over_cap_logged) {
                zk->over_cap_logged = 1;
                KT_WARN(FAC, "%s%s has %zu children: only the first %d are read",
                        zk->conf->zookeeper, IDS_PATH, ev->child_all, KT_ZK_MAX_BROKERS);
        }
        /* Forget the gone ones first, so the cap counts only what is listed now. */
        for (size_t i = 0; i < zk->broker_cnt; i++)
                zk->brokers[i].listed = 0;
        for (size_t i = 0; i < ev->child_cnt; i++) {
                zk_broker_t *b = broker_find(zk, ev->children[i]);
                if (b)
                        b->listed = 1;
        }
        for (size_t i = zk->broker_cnt; i-- > 0;)
                if (!zk->brokers[i].listed)
                        broker_remove(zk, &zk->brokers[i]);
        for (size_t i = 0; i < ev->child_cnt; i++) {
                const char *id = ev->children[i];
                zk_broker_t *b = broker_find(zk, id);

                if (!b) {
                        if (zk->broker_cnt >= KT_ZK_MAX_BROKERS)
                                continue;
                        if (zk->broker_cnt == zk->broker_size) {
                                size_t n = zk->broker_size ? zk->broker_size * 2 : 8;
                                zk_broker_t *a = realloc(zk->brokers, n * sizeof(*a));
                                if (!a)
                                        continue; /* read at the next list */
                                zk->brokers = a;
                                zk->broker_size = n;
                        }
                        b = &zk->brokers[zk->broker_cnt];
                        memset(b, 0, sizeof(*b));
                        if (!(b->id = strdup(id)))
                                continue; /* read at the next list */
                        b->mzxid = -1;
                        b->listed = 1;
                        zk->broker_cnt++;
                        if (!is_broker_id(id)) {
                                b->state = BR_BAD;
                                bad_registration(zk, id, "not a broker id");
                        }
                }
                if ((b->state == BR_NONE || b->stale) && !b->fetching)
                        get_broker(zk, b);
        }
}

/** A registration's bytes: parse, and hand a new endpoint over. */
static void data_serve(kt_zk_t *zk, zk_event_t *ev) {
        zk_broker_t *b = broker_find(zk, ev->path);
        char hostport[KT_ZK_HOSTPORT_SIZE], why[256];
        int known = 0;

        if (!b)
                return; /* gone from the list meanwhile */
        b->fetching = 0;
        if (ev->rc == ZNONODE) {
                broker_remove(zk, b);
                return;
        }
        if (ev->rc != ZOK) {
                b->stale = 1; /* read again at the next list (after a reconnect) */
                KT_DBG(FAC, "get %s/%s: %s", IDS_PATH, b->id, zerror(ev->rc));
                return;
        }
        if (b->state != BR_NONE && b->mzxid == ev->mzxid && ev->mzxid != -1)
                return; /* this version was looked at already */
        b->mzxid = ev->mzxid;
        if (!ev->data) {
                b->state = BR_BAD;
                bad_registration(zk, b->id, "empty registration");
                stats_update(zk);
                return;
        }
        if (kt_consumer_zk_broker_parse(ev->data, ev->len, zk->protocol,
                                        zk->conf->zookeeper_listener, hostport, sizeof(hostport),
                                        why, sizeof(why))) {
                b->state = BR_BAD;
                bad_registration(zk, b->id, why);
                stats_update(zk);
                return;
        }
        if (b->state == BR_OK && !strcmp(b->hostport, hostport))
                return;
        for (size_t i = 0; i < zk->broker_cnt; i++)
                if (&zk->brokers[i] != b && zk->brokers[i].state == BR_OK &&
                    !strcmp(zk->brokers[i].hostport, hostport))
                        known = 1;
        b->state = BR_OK;
        snprintf(b->hostport, sizeof(b->hostport), "%s", hostport);
        stats_update(zk);
        KT_INFO(FAC, "broker %s at %s (from ZooKeeper %s)", b->id, hostport, zk->conf->zookeeper);
        if (!known && zk->cb)
                zk->cb(zk->opaque, hostport);
        zk->stats.discovered = 1;
}

static void session_close(kt_zk_t *zk) {
        if (zk->zh) {
                int rc = zookeeper_close(zk->zh);
                if (rc != ZOK)
                        KT_DBG(FAC, "zookeeper_close: %s", zerror(rc));
                zk->zh = NULL;
        }
        free(zk->ses);
        zk->ses = NULL;
        zk->gen++; /* what the closed session queued is stale */
        zk->stats.connected = 0;
        zk->ses_connected = 0;
        /* Every data watch went with the session: the next one reads each broker again. */
        for (size_t i = 0; i < zk->broker_cnt; i++) {
                zk->brokers[i].fetching = 0;
                zk->brokers[i].stale = 1;
        }
}

/** A session could not be started (\p why): log once per outage, back off. */
static void start_failed(kt_zk_t *zk, const char *why) {
        if (!zk->start_failing)
                KT_WARN(FAC,
                        "cannot start a session with ZooKeeper %s: %s; retrying with back-off%s",
                        zk->conf->zookeeper, why,
                        zk->stats.discovered ? "" : " (not ready until a broker is discovered)");
        else
                KT_DBG(FAC, "ZooKeeper %s: start failed again: %s", zk->conf->zookeeper, why);
        zk->start_failing = 1;
        zk->start_at_ms = kt_now_ms() + zk->backoff_ms;
        zk->backoff_ms =
            zk->backoff_ms * 2 > KT_ZK_BACKOFF_MAX_MS ? KT_ZK_BACKOFF_MAX_MS : zk->backoff_ms * 2;
}

/** Resolve the connect string's hosts on a thread (see DESIGN: host names); session_init()
 *  follows once it answered (resolve_poll). */
static void session_start(kt_zk_t *zk) {
        pthread_attr_t attr;
        zk_resolve_t *r;
        int rc = -1;

        zk->start_at_ms = INT64_MAX;
        if (zk->resolve)
                return; /* one at a time: its answer starts the session */
        if (!(r = calloc(1, sizeof(*r))) || !(r->connect = strdup(zk->conf->zookeeper))) {
                free(r);
                start_failed(zk, "out of memory");
                return;
        }
        r->wake_fd = zk->sh.wake[1];
        r->refs = 2;
        if (pthread_mutex_init(&r->lock, NULL)) {
                free(r->connect);
                free(r);
                start_failed(zk, "mutex: out of resources");
                return;
        }
        if (!pthread_attr_init(&attr)) {
                pthread_t t;
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                rc = pthread_create(&t, &attr, resolve_run, r);
                pthread_attr_destroy(&attr);
        }
        if (rc) {
                r->refs = 1;
                resolve_unref(r, 1);
                start_failed(zk, "cannot start a thread to resolve its hosts");
                return;
        }
        zk->resolve = r;
        zk->resolve_since_ms = kt_now_ms();
        zk->resolve_logged = 0;
        KT_DBG(FAC, "resolving the hosts of ZooKeeper %s", zk->conf->zookeeper);
}

/** The hosts resolved: create the session with the numeric connect string. */
static void session_init(kt_zk_t *zk, const char *numeric) {
        int saved;

        if (!(zk->ses = calloc(1, sizeof(*zk->ses)))) {
                start_failed(zk, "out of memory");
                return;
        }
        zk->ses->sh = &zk->sh;
        zk->ses->gen = ++zk->gen;
        errno = 0;
        /* Numeric addresses only: the client resolves nothing on the loop thread. */
        zk->zh =
            zookeeper_init2(numeric, on_watch, KT_ZK_SESSION_TIMEOUT_MS, NULL, zk->ses, 0, zk_log);
        saved = errno;
        if (!zk->zh) {
                free(zk->ses);
                zk->ses = NULL;
                start_failed(zk, saved ? strerror(saved) : "unknown error");
                return;
        }
        if (zk->start_failing)
                KT_INFO(FAC, "session with ZooKeeper %s started; connecting", zk->conf->zookeeper);
        zk->start_failing = 0;
        zk->down_since_ms = kt_now_ms();
        KT_DBG(FAC, "connecting to ZooKeeper %s (%s)", zk->conf->zookeeper, numeric);
}

/** Take the resolution's answer if it is there, and start the session with it. */
static void resolve_poll(kt_zk_t *zk) {
        zk_resolve_t *r = zk->resolve;
        int done;

        if (!r)
                return;
        pthread_mutex_lock(&r->lock);
        done = r->done;
        pthread_mutex_unlock(&r->lock);
        if (!done)
                return;
        zk->resolve = NULL;
        if (r->err)
                start_failed(zk, r->why);
        else if (!zk->zh)
                session_init(zk, r->numeric);
        resolve_unref(r, 0);
}

/** Session state changes (from the global watcher and, duplicated, from every watch). */
static void session_serve(kt_zk_t *zk, int state) {
        if (state == ZOO_CONNECTED_STATE || state == ZOO_READONLY_STATE) {
                if (zk->stats.connected)
                        return;
                zk->stats.connected = 1;
                zk->ses_connected = 1;
                zk->backoff_ms = KT_ZK_BACKOFF_MIN_MS;
                KT_INFO(FAC, "%s ZooKeeper %s: watching %s",
                        zk->ever_connected ? "reconnected to" : "connected to", zk->conf->zookeeper,
                        IDS_PATH);
                zk->ever_connected = 1;
                zk->outage_logged = 0;
                list_ids(zk); /* also lists again whatever a lost connection may have hidden */
                return;
        }
        if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE ||
            state == ZOO_NOTCONNECTED_STATE) {
                if (!zk->stats.connected)
                        return;
                zk->stats.connected = 0;
                zk->down_since_ms = kt_now_ms();
                if (!zk->outage_logged)
                        KT_WARN(FAC,
                                "connection to ZooKeeper %s lost: reconnecting (brokers found "
                                "so far stay in use)",
                                zk->conf->zookeeper);
                zk->outage_logged = 1;
                return;
        }
        if (state == ZOO_EXPIRED_SESSION_STATE) {
                KT_WARN(FAC, "ZooKeeper %s: session expired: starting a new one",
                        zk->conf->zookeeper);
                session_close(zk);
                zk->start_at_ms = kt_now_ms();
                return;
        }
        if (state == ZOO_AUTH_FAILED_STATE) {
                KT_ERR(FAC, "ZooKeeper %s: authentication failed: retrying in %d ms",
                       zk->conf->zookeeper, zk->backoff_ms);
                session_close(zk);
                zk->start_at_ms = kt_now_ms() + zk->backoff_ms;
                zk->backoff_ms = zk->backoff_ms * 2 > KT_ZK_BACKOFF_MAX_MS ? KT_ZK_BACKOFF_MAX_MS
                                                                           : zk->backoff_ms * 2;
        }
}

static void watch_serve(kt_zk_t *zk, zk_event_t *ev) {
        const char *p = ev->path;
        size_t plen = sizeof(IDS_PATH) - 1;

        if (ev->type == ZOO_SESSION_EVENT) {
                session_serve(zk, ev->state);
                return;
        }
        if (!p || strncmp(p, IDS_PATH, plen))
                return;
        if (!p[plen]) {
                /* Children changed, or the path itself appeared or went. */
                list_ids(zk);
                return;
        }
        if (p[plen] == '/') {
                zk_broker_t *b = broker_find(zk, p + plen + 1);
                if (!b)
                        return; /* not listed (yet): the child watch brings it */
                if (ev->type == ZOO_DELETED_EVENT)
                        broker_remove(zk, b);
                else if (ev->type == ZOO_CHANGED_EVENT || ev->type == ZOO_CREATED_EVENT)
                        get_broker(zk, b);
        }
}

void kt_consumer_zk_conf_set(kt_zk_t *zk, const kt_config_t *conf) {
        zk->conf = conf;
}

kt_zk_t *kt_consumer_zk_new(const kt_config_t *conf, kt_zk_broker_cb *cb, void *opaque,
                            char *errstr, size_t errstr_size) {
        kt_zk_t *zk = calloc(1, sizeof(*zk));

        if (!zk) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        zk->conf = conf;
        zk->cb = cb;
        zk->opaque = opaque;
        zk->sh.wake[0] = zk->sh.wake[1] = -1;
        zk->backoff_ms = KT_ZK_BACKOFF_MIN_MS;
        zk->start_at_ms = kt_now_ms();
        snprintf(zk->protocol, sizeof(zk->protocol), "PLAINTEXT");
        for (size_t i = 0; i < conf->prop_cnt; i++)
                if (!strcmp(conf->props[i].name, "security.protocol") && conf->props[i].value)
                        snprintf(zk->protocol, sizeof(zk->protocol), "%s", conf->props[i].value);
        if (!conf->zookeeper || !*conf->zookeeper) {
                snprintf(errstr, errstr_size, "kafka.zookeeper is not set");
                goto fail;
        }
        if (pthread_mutex_init(&zk->sh.lock, NULL)) {
                snprintf(errstr, errstr_size, "mutex: out of resources");
                goto fail;
        }
        zk->sh_lock_init = 1;
        if (pipe(zk->sh.wake) == -1 || fcntl(zk->sh.wake[0], F_SETFL, O_NONBLOCK) == -1 ||
            fcntl(zk->sh.wake[1], F_SETFL, O_NONBLOCK) == -1 ||
            fcntl(zk->sh.wake[0], F_SETFD, FD_CLOEXEC) == -1 ||
            fcntl(zk->sh.wake[1], F_SETFD, FD_CLOEXEC) == -1) {
                snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
                goto fail;
        }
        /* Global to the library: its own log only when we debug, through ours. */
        zoo_set_debug_level(kt_log_enabled(KT_LOG_DEBUG) ? ZOO_LOG_LEVEL_INFO : (ZooLogLevel)0);
        KT_INFO(FAC, "discovering brokers from %s in ZooKeeper %s (%s%s)", IDS_PATH,
                conf->zookeeper, conf->zookeeper_listener ? "listener " : "security protocol ",
                conf->zookeeper_listener ? conf->zookeeper_listener : zk->protocol);
        session_start(zk);
        return zk;

fail:
        kt_consumer_zk_destroy(zk);
        return NULL;
}

void kt_consumer_zk_destroy(kt_zk_t *zk) {
        zk_event_t *ev;

        if (!zk)
                return;
        session_close(zk); /* joins the ZooKeeper threads: nothing touches zk->sh after it */
        if (zk->resolve)   /* its thread frees it and no longer writes our pipe */
                resolve_unref(zk->resolve, 1);
        zk->resolve = NULL;
        while ((ev = zk->sh.head)) {
                zk->sh.head = ev->next;
                ev_free(ev);
        }
        for (size_t i = 0; i < zk->broker_cnt; i++)
                free(zk->brokers[i].id);
        free(zk->brokers);
        if (zk->sh_lock_init)
                pthread_mutex_destroy(&zk->sh.lock);
        if (zk->sh.wake[0] != -1)
                close(zk->sh.wake[0]);
        if (zk->sh.wake[1] != -1)
                close(zk->sh.wake[1]);
        free(zk);
}

int kt_consumer_zk_wakeup_fd(const kt_zk_t *zk) {
        return zk->sh.wake[0];
}

const kt_zk_stats_t *kt_consumer_zk_stats(const kt_zk_t *zk) {
        return &zk->stats;
}

int64_t kt_consumer_zk_poll(kt_zk_t *zk) {
        zk_event_t *ev, *next;
        char buf[256];
        int lost;
        int64_t now, due = INT64_MAX;

        while (read(zk->sh.wake[0], buf, sizeof(buf)) > 0)
                ;
        pthread_mutex_lock(&zk->sh.lock);
        ev = zk->sh.head;
        zk->sh.head = zk->sh.tail = NULL;
        lost = zk->sh.lost;
        zk->sh.lost = 0;
        pthread_mutex_unlock(&zk->sh.lock);

        for (; ev; ev = next) {
                next = ev->next;
                if (ev->gen == zk->gen && zk->zh) {
                        switch (ev->kind) {
                        case EV_WATCH:
                                watch_serve(zk, ev);
                                break;
                        case EV_CHILDREN:
                                children_serve(zk, ev);
                                break;
                        case EV_EXISTS:
                                if (ev->rc == ZOK)
                                        list_ids(zk); /* appeared before the watch was set */
                                break;
                        case EV_DATA:
                                data_serve(zk, ev);
                                break;
                        }
                }
                ev_free(ev);
        }
        if (lost && zk->zh) {
                /* Something was not handed over (no memory): read everything again. */
                KT_WARN(FAC, "out of memory taking ZooKeeper events: reading %s again", IDS_PATH);
                for (size_t i = 0; i < zk->broker_cnt; i++) {
                        zk->brokers[i].stale = 1;
                        zk->brokers[i].fetching = 0; /* its answer may be the one lost */
                }
                list_ids(zk);
        }

        now = kt_now_ms();
        if (zk->zh && !zk->stats.connected && zk->ses_connected &&
            now >= zk->down_since_ms + KT_ZK_RENEW_MS) {
                KT_WARN(FAC,
                        "ZooKeeper %s: not reconnected within %d ms: giving the session up "
                        "for a new one",
                        zk->conf->zookeeper, KT_ZK_RENEW_MS);
                session_close(zk);
                zk->start_at_ms = now;
        }
        resolve_poll(zk);
        if (!zk->zh && now >= zk->start_at_ms)
                session_start(zk);
        if (zk->zh && !zk->stats.connected && !zk->outage_logged &&
            now >= zk->down_since_ms + KT_ZK_CONNECT_WARN_MS) {
                zk->outage_logged = 1;
                KT_WARN(FAC, "ZooKeeper %s not reachable after %d ms: still trying%s",
                        zk->conf->zookeeper, KT_ZK_CONNECT_WARN_MS,
                        zk->stats.discovered ? "" : " (not ready until a broker is discovered)");
        }
        if (zk->resolve && !zk->resolve_logged &&
            now >= zk->resolve_since_ms + KT_ZK_CONNECT_WARN_MS) {
                zk->resolve_logged = 1;
                KT_WARN(FAC,
                        "ZooKeeper %s: its host names not resolved after %d ms: still waiting%s",
                        zk->conf->zookeeper, KT_ZK_CONNECT_WARN_MS,
                        zk->stats.discovered ? "" : " (not ready until a broker is discovered)");
        }
        if (zk->resolve)
                due = zk->resolve_logged ? INT64_MAX : zk->resolve_since_ms + KT_ZK_CONNECT_WARN_MS;
        else if (!zk->zh)
                due = zk->start_at_ms;
        else if (!zk->stats.connected) {
                if (!zk->outage_logged)
                        due = zk->down_since_ms + KT_ZK_CONNECT_WARN_MS;
                if (zk->ses_connected && zk->down_since_ms + KT_ZK_RENEW_MS < due)
                        due = zk->down_since_ms + KT_ZK_RENEW_MS;
        }
        return due;
}
