/* ringkvd configuration: the option table, flag and file parsing, checks. */
#include "srv_config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "rk_log.h"

/* ------------------------------------------------------------ the table */

enum opt_kind {
    OPT_U64,    /* positive integer */
    OPT_U32,
    OPT_SIZE,   /* byte size with optional suffix */
    OPT_ADDR,   /* host:port */
    OPT_STR,    /* free text */
    OPT_BOOL,
    OPT_CLUSTER,         /* id=host:port,... (peer addresses) */
    OPT_CLUSTER_CLIENTS, /* id=host:port,... (client addresses) */
    OPT_LEVEL,  /* log level */
    OPT_FLAG,   /* --help/--version: command line only */
    OPT_FILE,   /* --config: command line only */
};

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t off;     /* offset of the field in struct srv_config */
    size_t size;    /* size of string fields */
    const char *arg;
    const char *help;
};

#define F(field) offsetof(struct srv_config, field)
#define S(field) sizeof(((struct srv_config *)0)->field)

static const struct opt opts[] = {
    {"id", OPT_U64, F(id), 0, "N",
     "This node's id, a positive integer unique in the cluster (required)."},
    {"listen", OPT_ADDR, F(listen), 0, "HOST:PORT",
     "Client API address (default 127.0.0.1:7001)."},
    {"peer-listen", OPT_ADDR, F(peer_listen), 0, "HOST:PORT",
     "Address for Raft traffic from the other nodes (default "
     "127.0.0.1:7101)."},
    {"data-dir", OPT_STR, F(data_dir), S(data_dir), "DIR",
     "Directory of the node's LMDB environment (default ./data)."},
    {"initial-cluster", OPT_CLUSTER, 0, 0, "ID=HOST:PORT,...",
     "Peer addresses of every founding node, this one included. Used only "
     "when the data dir is new; a restart reads the membership from disk."},
    {"initial-cluster-clients", OPT_CLUSTER_CLIENTS, 0, 0, "ID=HOST:PORT,...",
     "Client addresses of the founding nodes (optional: nodes also announce "
     "their --listen address to each other when they connect)."},
    {"initial-cluster-token", OPT_STR, F(cluster_name), S(cluster_name),
     "NAME", "Name mixed into the cluster id so that two clusters built from "
     "the same addresses refuse each other's traffic (default ringkv)."},
    {"shards", OPT_U32, F(shards), 0, "N",
     "Number of data shards created at bootstrap (default 8; the meta "
     "shard 0 comes on top)."},
    {"join", OPT_ADDR, F(join), 0, "HOST:PORT",
     "Client address of a member of a running cluster to join instead of "
     "bootstrapping: the node registers with --id through the meta leader, "
     "fetches the shard map, and the rebalancer moves replicas onto it. "
     "A restart finds the cluster in --data-dir and ignores --join."},
    {"snapshot-count", OPT_U32, F(snapshot_count), 0, "N",
     "Applied log entries a shard keeps before it compacts its log; a "
     "follower further behind catches up from a snapshot (default 10000)."},
    {"split-threshold-bytes", OPT_SIZE, F(split_threshold_bytes), 0, "SIZE",
     "Split a data shard automatically once its keys and values exceed "
     "SIZE (checked every 10 s by its leader; one split at a time; not if "
     "the split would move under 10% or over 90% of it, e.g. one hash "
     "tag); 0 turns automatic splits off (default 0). `ringkv shard split` "
     "works either way."},
    {"election-ms", OPT_U32, F(election_ms), 0, "MS",
     "Base election timeout; the effective one is random in [e, 2e) "
     "(default 1000)."},
    {"heartbeat-ms", OPT_U32, F(heartbeat_ms), 0, "MS",
     "Leader heartbeat interval (default 100)."},
    {"tick-ms", OPT_U32, F(tick_ms), 0, "MS",
     "Length of one Raft logical clock tick; election and heartbeat times "
     "are rounded to whole ticks (default 50)."},
    {"max-key-bytes", OPT_SIZE, F(max_key_bytes), 0, "SIZE",
     "Largest key accepted, at most 64KiB (default 4KiB); a longer key "
     "is answered TOO_LARGE."},
    {"max-value-bytes", OPT_SIZE, F(max_value_bytes), 0, "SIZE",
     "Largest value accepted (default 1MiB)."},
    {"max-frame-bytes", OPT_SIZE, F(max_frame_bytes), 0, "SIZE",
     "Largest frame on any connection; a bigger one closes the connection "
     "(default 4MiB)."},
    {"metrics-listen", OPT_ADDR, F(metrics_listen), 0, "HOST:PORT",
     "HTTP address serving /metrics (Prometheus text) and /health (default: "
     "off)."},
    {"log-level", OPT_LEVEL, F(log_level), 0, "LEVEL",
     "debug, verbose, info, warn or error (default info)."},
    {"unsafe-no-sync", OPT_BOOL, F(unsafe_no_sync), 0, NULL,
     "Do not fsync the log. Loses acknowledged writes on power failure: "
     "benchmarks and tests only."},
    {"unsafe-test-local-reads", OPT_BOOL, F(unsafe_test_local_reads), 0,
     NULL,
     "BREAKS LINEARIZABILITY: serve every read from this node's local state "
     "(no ReadIndex, no leader check), so a deposed or partitioned leader "
     "answers stale reads. Only for testing that the jepsen checker catches "
     "them."},
    {"config", OPT_FILE, F(config_file), S(config_file), "FILE",
     "Read settings from FILE (name = value lines, names as the flags "
     "without dashes); flags override it."},
    {"help", OPT_FLAG, F(help), 0, NULL, "Print this help and exit."},
    {"version", OPT_FLAG, F(version), 0, NULL, "Print the version and exit."},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static const struct opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strlen(opts[i].name) == len &&
            memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

/* -------------------------------------------------------------- parsers */

static int parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return RK_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return RK_EINVAL;
    *out = v;
    return 0;
}

int srv_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return RK_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return RK_EINVAL;
    uint64_t mul = 1;
    if (*end != '\0') {
        static const struct {
            const char *suffix;
            uint64_t mul;
        } units[] = {
            {"B", 1},
            {"K", 1ull << 10}, {"k", 1ull << 10}, {"KB", 1ull << 10},
            {"KiB", 1ull << 10}, {"kB", 1ull << 10},
            {"M", 1ull << 20}, {"MB", 1ull << 20}, {"MiB", 1ull << 20},
            {"G", 1ull << 30}, {"GB", 1ull << 30}, {"GiB", 1ull << 30},
        };
        size_t i;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(end, units[i].suffix) == 0)
                break;
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return RK_EINVAL;
        mul = units[i].mul;
    }
    if (v > UINT64_MAX / mul)
        return RK_EINVAL;
    *out = v * mul;
    return 0;
}

int srv_addr_parse(const char *s, struct srv_addr *out)
{
    if (s == NULL)
        return RK_EINVAL;
    const char *colon;
    const char *host = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return RK_EINVAL;
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof(tmp))
            return RK_EINVAL;
        memcpy(tmp, host, hlen);
        tmp[hlen] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return RK_EINVAL;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return RK_EINVAL;
        hlen = (size_t)(colon - s);
        /* A bare IPv6 literal without brackets is ambiguous. */
        if (memchr(s, ':', hlen) != NULL)
            return RK_EINVAL;
        for (size_t i = 0; i < hlen; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_')
                return RK_EINVAL;
        }
    }
    if (hlen >= SRV_HOST_MAX)
        return RK_EINVAL;
    uint64_t port;
    if (parse_u64(colon + 1, &port) != 0 || port == 0 || port > 65535)
        return RK_EINVAL;
    if (hlen == 0) {
        strcpy(out->host, "0.0.0.0");
    } else {
        memcpy(out->host, host, hlen);
        out->host[hlen] = '\0';
    }
    out->port = (uint16_t)port;
    return 0;
}

void srv_addr_format(const struct srv_addr *a, char *buf, size_t len)
{
    if (strchr(a->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", a->host, (unsigned)a->port);
    else
        snprintf(buf, len, "%s:%u", a->host, (unsigned)a->port);
}

int srv_addr_resolve(const struct srv_addr *a, struct sockaddr_storage *out)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)a->port);
    const char *host = strcmp(a->host, "localhost") == 0 ? "127.0.0.1"
                                                         : a->host;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return RK_EINVAL;
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static struct srv_member *member_get(struct srv_config *c, uint64_t id,
                                     bool create)
{
    for (uint32_t i = 0; i < c->n_members; i++) {
        if (c->members[i].id == id)
            return &c->members[i];
    }
    if (!create || c->n_members == SRV_MAX_NODES)
        return NULL;
    struct srv_member *m = &c->members[c->n_members++];
    memset(m, 0, sizeof(*m));
    m->id = id;
    return m;
}

const struct srv_member *srv_config_member(const struct srv_config *c,
                                           uint64_t id)
{
    for (uint32_t i = 0; i < c->n_members; i++) {
        if (c->members[i].id == id)
            return &c->members[i];
    }
    return NULL;
}

/* Parses "1=a:p,2=b:q" into the member table; `clients` selects which of
 * the two addresses the list sets. Entries already present keep the other
 * address. A repeated id inside one list is an error. */
static int parse_cluster(struct srv_config *c, const char *name,
                         const char *value, bool clients)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return RK_ENOMEM;
    /* Clear the addresses this list owns, so that a later setting (a flag
     * after the file) replaces an earlier one instead of merging. */
    for (uint32_t i = 0; i < c->n_members; i++) {
        if (clients)
            memset(&c->members[i].client, 0, sizeof(c->members[i].client));
        else
            memset(&c->members[i].peer, 0, sizeof(c->members[i].peer));
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->n_members; i++) {
        if (c->members[i].peer.port != 0 || c->members[i].client.port != 0)
            c->members[kept++] = c->members[i];
    }
    c->n_members = kept;
    uint64_t seen[SRV_MAX_NODES];
    uint32_t n_seen = 0;
    int rv = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t tl = strlen(tok);
        while (tl > 0 && isspace((unsigned char)tok[tl - 1]))
            tok[--tl] = '\0';
        if (tl == 0)
            continue;
        char *eq = strchr(tok, '=');
        uint64_t id;
        struct srv_addr a;
        if (eq == NULL) {
            rk_errf(c->errmsg, "--%s: '%s' is not ID=HOST:PORT", name, tok);
            rv = RK_EINVAL;
            break;
        }
        *eq = '\0';
        if (parse_u64(tok, &id) != 0 || id == 0) {
            rk_errf(c->errmsg, "--%s: bad node id '%s'", name, tok);
            rv = RK_EINVAL;
            break;
        }
        if (srv_addr_parse(eq + 1, &a) != 0) {
            rk_errf(c->errmsg, "--%s: bad address '%s' for node %" PRIu64,
                    name, eq + 1, id);
            rv = RK_EINVAL;
            break;
        }
        for (uint32_t i = 0; i < n_seen; i++) {
            if (seen[i] == id) {
                rk_errf(c->errmsg, "--%s: node %" PRIu64 " listed twice",
                        name, id);
                rv = RK_EINVAL;
                break;
            }
        }
        if (rv != 0)
            break;
        if (n_seen == SRV_MAX_NODES) {
            rk_errf(c->errmsg, "--%s: more than %d nodes", name,
                    SRV_MAX_NODES);
            rv = RK_EINVAL;
            break;
        }
        seen[n_seen++] = id;
        struct srv_member *m = member_get(c, id, true);
        if (m == NULL) {
            rk_errf(c->errmsg, "--%s: more than %d nodes", name,
                    SRV_MAX_NODES);
            rv = RK_EINVAL;
            break;
        }
        if (clients)
            m->client = a;
        else
            m->peer = a;
    }
    free(copy);
    return rv;
}

static int parse_bool(const char *s, bool *out)
{
    if (s == NULL || strcmp(s, "true") == 0 || strcmp(s, "1") == 0 ||
        strcmp(s, "yes") == 0 || strcmp(s, "on") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 ||
        strcmp(s, "no") == 0 || strcmp(s, "off") == 0) {
        *out = false;
        return 0;
    }
    return RK_EINVAL;
}

/* ------------------------------------------------------------- setting */

static int apply_opt(struct srv_config *c, const struct opt *o,
                     const char *value)
{
    char *base = (char *)c;
    uint64_t v;
    switch (o->kind) {
    case OPT_U64:
        if (parse_u64(value, &v) != 0)
            goto bad;
        *(uint64_t *)(base + o->off) = v;
        return 0;
    case OPT_U32:
        if (parse_u64(value, &v) != 0 || v > UINT32_MAX)
            goto bad;
        *(uint32_t *)(base + o->off) = (uint32_t)v;
        return 0;
    case OPT_SIZE:
        if (srv_parse_size(value, &v) != 0)
            goto bad;
        *(uint64_t *)(base + o->off) = v;
        return 0;
    case OPT_ADDR:
        if (srv_addr_parse(value, (struct srv_addr *)(base + o->off)) != 0)
            goto bad;
        return 0;
    case OPT_STR:
    case OPT_FILE:
        if (value == NULL || value[0] == '\0' || strlen(value) >= o->size)
            goto bad;
        memcpy(base + o->off, value, strlen(value) + 1);
        return 0;
    case OPT_BOOL:
    case OPT_FLAG: {
        bool b;
        if (parse_bool(value, &b) != 0)
            goto bad;
        *(bool *)(base + o->off) = b;
        return 0;
    }
    case OPT_CLUSTER:
        return parse_cluster(c, o->name, value == NULL ? "" : value, false);
    case OPT_CLUSTER_CLIENTS:
        return parse_cluster(c, o->name, value == NULL ? "" : value, true);
    case OPT_LEVEL: {
        int lvl = value == NULL ? -1 : rk_log_parse_level(value);
        if (lvl < 0)
            goto bad;
        *(int *)(base + o->off) = lvl;
        return 0;
    }
    }
bad:
    rk_errf(c->errmsg, "--%s: invalid value '%s'", o->name,
            value == NULL ? "(missing)" : value);
    return RK_EINVAL;
}

int srv_config_set(struct srv_config *c, const char *name, const char *value)
{
    const struct opt *o = find_opt(name, strlen(name));
    if (o == NULL || o->kind == OPT_FLAG || o->kind == OPT_FILE) {
        rk_errf(c->errmsg, "unknown setting '%s'", name);
        return RK_EINVAL;
    }
    return apply_opt(c, o, value);
}

void srv_config_defaults(struct srv_config *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->listen.host, "127.0.0.1");
    c->listen.port = 7001;
    strcpy(c->peer_listen.host, "127.0.0.1");
    c->peer_listen.port = 7101;
    strcpy(c->data_dir, "data");
    strcpy(c->cluster_name, "ringkv");
    c->shards = 8;
    c->snapshot_count = 10000;
    c->election_ms = 1000;
    c->heartbeat_ms = 100;
    c->tick_ms = 50;
    c->max_key_bytes = 4096;
    c->max_value_bytes = 1u << 20;
    c->max_frame_bytes = 4u << 20;
    c->log_level = RK_LOG_INFO;
}

/* ------------------------------------------------------------------ file */

int srv_config_load_file(struct srv_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        rk_errf(c->errmsg, "cannot open config file %s: %s", path,
                strerror(errno));
        return RK_EIO;
    }
    char line[8192];
    unsigned lineno = 0;
    int rv = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            rk_errf(c->errmsg, "%s:%u: line too long", path, lineno);
            rv = RK_EINVAL;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        len = strlen(p);
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            p[--len] = '\0';
        if (len == 0)
            continue;
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            rk_errf(c->errmsg, "%s:%u: expected 'name = value'", path,
                    lineno);
            rv = RK_EINVAL;
            break;
        }
        char *name_end = eq;
        while (name_end > p && isspace((unsigned char)name_end[-1]))
            name_end--;
        char *value = eq + 1;
        while (isspace((unsigned char)*value))
            value++;
        /* Optional double quotes around the value. */
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        const struct opt *o = find_opt(p, (size_t)(name_end - p));
        if (o == NULL || o->kind == OPT_FLAG || o->kind == OPT_FILE) {
            *name_end = '\0';
            rk_errf(c->errmsg, "%s:%u: unknown setting '%s'", path, lineno,
                    p);
            rv = RK_EINVAL;
            break;
        }
        rv = apply_opt(c, o, value);
        if (rv != 0) {
            rk_errwrap(c->errmsg, "%s:%u", path, lineno);
            break;
        }
    }
    if (rv == 0 && ferror(f)) {
        rk_errf(c->errmsg, "error reading %s", path);
        rv = RK_EIO;
    }
    fclose(f);
    return rv;
}

/* ----------------------------------------------------------------- flags */

/* Splits argv[*i] into an option and its value (inline or next argument). */
static int next_flag(struct srv_config *c, int argc, char **argv, int *i,
                     const struct opt **o_out, const char **value_out)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        if (strcmp(arg, "-h") == 0) {
            *o_out = find_opt("help", 4);
            *value_out = NULL;
            return 0;
        }
        rk_errf(c->errmsg, "unexpected argument '%s' (see --help)", arg);
        return RK_EINVAL;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    const struct opt *o = find_opt(name, nlen);
    if (o == NULL) {
        rk_errf(c->errmsg, "unknown flag '--%.*s' (see --help)", (int)nlen,
                name);
        return RK_EINVAL;
    }
    *o_out = o;
    if (eq != NULL) {
        *value_out = eq + 1;
    } else if (o->kind == OPT_BOOL || o->kind == OPT_FLAG) {
        *value_out = NULL;
    } else if (*i + 1 < argc) {
        *value_out = argv[++*i];
    } else {
        rk_errf(c->errmsg, "flag --%s needs a value (%s)", o->name, o->arg);
        return RK_EINVAL;
    }
    return 0;
}

int srv_config_parse_args(struct srv_config *c, int argc, char **argv)
{
    int rv;
    const struct opt *o;
    const char *value;

    /* Pass 1: the config file, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        if ((rv = next_flag(c, argc, argv, &i, &o, &value)) != 0)
            return rv;
        if (o->kind == OPT_FILE) {
            if ((rv = apply_opt(c, o, value)) != 0)
                return rv;
        }
    }
    if (c->config_file[0] != '\0') {
        if ((rv = srv_config_load_file(c, c->config_file)) != 0)
            return rv;
    }
    /* Pass 2: every other flag, in order. */
    for (int i = 1; i < argc; i++) {
        if ((rv = next_flag(c, argc, argv, &i, &o, &value)) != 0)
            return rv;
        if (o->kind == OPT_FILE)
            continue;
        if ((rv = apply_opt(c, o, value)) != 0)
            return rv;
    }
    return 0;
}

/* ------------------------------------------------------------ validation */

int srv_config_validate(struct srv_config *c)
{
    if (c->id == 0) {
        rk_errf(c->errmsg, "--id is required (a positive integer)");
        return RK_EINVAL;
    }
    if (c->n_members > 0) {
        const struct srv_member *self = srv_config_member(c, c->id);
        if (self == NULL || self->peer.port == 0) {
            rk_errf(c->errmsg,
                    "--initial-cluster does not list this node (id %" PRIu64
                    ")",
                    c->id);
            return RK_EINVAL;
        }
        for (uint32_t i = 0; i < c->n_members; i++) {
            if (c->members[i].peer.port == 0) {
                rk_errf(c->errmsg,
                        "node %" PRIu64 " has a client address but no peer "
                        "address in --initial-cluster",
                        c->members[i].id);
                return RK_EINVAL;
            }
        }
        if (c->n_members > 1 && self->peer.port != c->peer_listen.port) {
            rk_errf(c->errmsg,
                    "--peer-listen port %u differs from this node's "
                    "--initial-cluster entry (port %u)",
                    (unsigned)c->peer_listen.port, (unsigned)self->peer.port);
            return RK_EINVAL;
        }
    }
    if (c->join.port != 0 && c->n_members > 0) {
        rk_errf(c->errmsg, "--join and --initial-cluster exclude each other");
        return RK_EINVAL;
    }
    if (c->shards == 0 || c->shards > SRV_MAX_SHARDS) {
        rk_errf(c->errmsg, "--shards must be in [1, %d]", SRV_MAX_SHARDS);
        return RK_EINVAL;
    }
    if (c->snapshot_count < 4) {
        rk_errf(c->errmsg, "--snapshot-count must be at least 4");
        return RK_EINVAL;
    }
    if (c->tick_ms == 0 || c->tick_ms > 10000) {
        rk_errf(c->errmsg, "--tick-ms must be in [1, 10000]");
        return RK_EINVAL;
    }
    if (c->heartbeat_ms < c->tick_ms) {
        rk_errf(c->errmsg, "--heartbeat-ms (%u) must be >= --tick-ms (%u)",
                c->heartbeat_ms, c->tick_ms);
        return RK_EINVAL;
    }
    if (c->election_ms < 3 * c->heartbeat_ms) {
        rk_errf(c->errmsg,
                "--election-ms (%u) must be at least 3 x --heartbeat-ms (%u)",
                c->election_ms, c->heartbeat_ms);
        return RK_EINVAL;
    }
    if (c->max_key_bytes == 0 || c->max_key_bytes > (64u << 10)) {
        rk_errf(c->errmsg, "--max-key-bytes must be in [1, 64KiB]");
        return RK_EINVAL;
    }
    if (c->max_value_bytes == 0 || c->max_value_bytes > (64u << 20)) {
        rk_errf(c->errmsg, "--max-value-bytes must be in [1, 64MiB]");
        return RK_EINVAL;
    }
    /* A frame must fit the largest request with room for the envelope. */
    if (c->max_frame_bytes < c->max_key_bytes + c->max_value_bytes + 1024 ||
        c->max_frame_bytes > (1ull << 30)) {
        rk_errf(c->errmsg,
                "--max-frame-bytes must be in [max-key-bytes + "
                "max-value-bytes + 1KiB, 1GiB]");
        return RK_EINVAL;
    }
    return 0;
}

/* ----------------------------------------------------------------- text */

void srv_config_usage(FILE *out)
{
    fprintf(out,
            "Usage: ringkvd --id N [--initial-cluster ID=HOST:PORT,...] "
            "[flags]\n"
            "\n"
            "ringkvd is one node of a ringkv cluster: a Raft-replicated, "
            "sharded\nkey-value store. Every flag may also be given in a "
            "--config file as\n`name = value` (flags win).\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char head[96];
        if (opts[i].arg != NULL)
            snprintf(head, sizeof(head), "--%s %s", opts[i].name,
                     opts[i].arg);
        else
            snprintf(head, sizeof(head), "--%s", opts[i].name);
        fprintf(out, "  %s\n", head);
        /* Wrap the help text at about 72 columns, indented by 6. */
        const char *h = opts[i].help;
        while (*h != '\0') {
            size_t n = strlen(h);
            if (n > 70) {
                n = 70;
                while (n > 0 && h[n] != ' ')
                    n--;
                if (n == 0)
                    n = 70;
            }
            fprintf(out, "      %.*s\n", (int)n, h);
            h += n;
            while (*h == ' ')
                h++;
        }
    }
    fprintf(out,
            "\nExample, a 3-node cluster on one machine (node 1 shown):\n"
            "  ringkvd --id 1 --listen 127.0.0.1:7001 --peer-listen "
            "127.0.0.1:7101 \\\n"
            "      --metrics-listen 127.0.0.1:7201 --data-dir data/node1 \\\n"
            "      --initial-cluster 1=127.0.0.1:7101,2=127.0.0.1:7102,"
            "3=127.0.0.1:7103\n");
}

void srv_config_dump(const struct srv_config *c, FILE *out)
{
    char a[SRV_HOST_MAX + 16];
    fprintf(out, "id = %" PRIu64 "\n", c->id);
    srv_addr_format(&c->listen, a, sizeof(a));
    fprintf(out, "listen = %s\n", a);
    srv_addr_format(&c->peer_listen, a, sizeof(a));
    fprintf(out, "peer-listen = %s\n", a);
    if (c->metrics_listen.port != 0) {
        srv_addr_format(&c->metrics_listen, a, sizeof(a));
        fprintf(out, "metrics-listen = %s\n", a);
    }
    fprintf(out, "data-dir = %s\n", c->data_dir);
    fprintf(out, "initial-cluster-token = %s\n", c->cluster_name);
    if (c->n_members > 0) {
        fprintf(out, "initial-cluster = ");
        for (uint32_t i = 0; i < c->n_members; i++) {
            srv_addr_format(&c->members[i].peer, a, sizeof(a));
            fprintf(out, "%s%" PRIu64 "=%s", i ? "," : "", c->members[i].id,
                    a);
        }
        fprintf(out, "\n");
    }
    if (c->join.port != 0) {
        srv_addr_format(&c->join, a, sizeof(a));
        fprintf(out, "join = %s\n", a);
    }
    fprintf(out, "shards = %u\n", c->shards);
    fprintf(out, "snapshot-count = %u\n", c->snapshot_count);
    fprintf(out, "split-threshold-bytes = %" PRIu64 "\n",
            c->split_threshold_bytes);
    fprintf(out, "election-ms = %u\nheartbeat-ms = %u\ntick-ms = %u\n",
            c->election_ms, c->heartbeat_ms, c->tick_ms);
    fprintf(out, "max-key-bytes = %" PRIu64 "\n", c->max_key_bytes);
    fprintf(out, "max-value-bytes = %" PRIu64 "\n", c->max_value_bytes);
    fprintf(out, "max-frame-bytes = %" PRIu64 "\n", c->max_frame_bytes);
    fprintf(out, "unsafe-no-sync = %s\n", c->unsafe_no_sync ? "true" : "false");
    fprintf(out, "unsafe-test-local-reads = %s\n",
            c->unsafe_test_local_reads ? "true" : "false");
}

uint64_t srv_config_cluster_id(const struct srv_config *c)
{
    /* Hash the token and the founding peers in id order, so the order in
     * which --initial-cluster lists them does not matter. */
    XXH3_state_t *st = XXH3_createState();
    uint64_t h;
    if (st == NULL)
        return 0;
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, c->cluster_name, strlen(c->cluster_name));
    uint64_t last = 0;
    for (uint32_t k = 0; k < c->n_members; k++) {
        const struct srv_member *best = NULL;
        for (uint32_t i = 0; i < c->n_members; i++) {
            if (c->members[i].id > last &&
                (best == NULL || c->members[i].id < best->id))
                best = &c->members[i];
        }
        if (best == NULL)
            break;
        last = best->id;
        char a[SRV_HOST_MAX + 32];
        int n = snprintf(a, sizeof(a), "|%" PRIu64 "=%s:%u", best->id,
                         best->peer.host, (unsigned)best->peer.port);
        XXH3_64bits_update(st, a, (size_t)n);
    }
    h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    /* 0 means "unknown" on the wire. */
    return h == 0 ? 1 : h;
}
