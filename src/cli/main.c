/*
 * ringkv: the command-line tool.
 *
 *   ringkv [--endpoints H:P,...] [--timeout D] [-o table|json] COMMAND ARGS
 *
 * Every command is a function below with its help text in COMMANDS. Values
 * are binary-safe: `-` reads a value from stdin; get writes the raw bytes.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_ENDPOINTS "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

/* ============================================================= helpers */

void cli_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ringkv: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ringkv: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun 'ringkv help%s%s' for usage\n", cmd ? " " : "",
            cmd ? cmd : "");
    va_end(ap);
    return CLI_USAGE;
}

static int exit_code(ringkv_status st)
{
    switch (st) {
    case RINGKV_OK:
        return CLI_OK;
    case RINGKV_NOT_FOUND:
    case RINGKV_CAS_MISMATCH:
        return CLI_NOT_FOUND;
    case RINGKV_TIMEOUT:
    case RINGKV_UNAVAILABLE:
        return CLI_UNAVAILABLE;
    case RINGKV_INVALID:
    case RINGKV_TOO_LARGE:
    case RINGKV_REFUSED:
        return CLI_REFUSED;
    default:
        return CLI_INTERNAL;
    }
}

int cli_fail(ringkv_t *c, const char *what, ringkv_status st)
{
    const char *detail = c != NULL ? ringkv_last_error(c) : "";
    if (st == RINGKV_NOT_FOUND || st == RINGKV_CAS_MISMATCH)
        cli_err("%s: %s", what, ringkv_strerror(st));
    else if (detail[0] != '\0')
        cli_err("%s: %s: %s", what, ringkv_strerror(st), detail);
    else
        cli_err("%s: %s", what, ringkv_strerror(st));
    return exit_code(st);
}

/* cli_fail, then closes the client. */
static int fail_close(ringkv_t *c, const char *what, ringkv_status st)
{
    int rc = cli_fail(c, what, st);
    ringkv_close(c);
    return rc;
}

int cli_open(struct cli *cl, ringkv_t **c)
{
    ringkv_options o = cl->opts;
    ringkv_status st = ringkv_open(&o, c);
    if (st != RINGKV_OK) {
        cli_err("bad endpoints \"%s\": %s", o.endpoints, ringkv_strerror(st));
        return CLI_USAGE;
    }
    return CLI_OK;
}

bool cli_parse_u64(const char *s, uint64_t *v)
{
    if (s == NULL || *s == '\0' || !isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *v = x;
    return true;
}

bool cli_parse_duration_ms(const char *s, unsigned *ms)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    char *end;
    double x = strtod(s, &end);
    if (errno != 0 || end == s || x < 0)
        return false;
    double mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else
        return false;
    double v = x * mult;
    if (v > 86400000.0 || v < 1)
        return false;
    *ms = (unsigned)v;
    return true;
}

static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t k;
        if (c == 0)
            return false;
        if (c < 0x80)
            k = 0;
        else if ((c & 0xE0) == 0xC0 && c >= 0xC2)
            k = 1;
        else if ((c & 0xF0) == 0xE0)
            k = 2;
        else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
            k = 3;
        else
            return false;
        if (k > 0 && i + k >= n)
            return false; /* truncated sequence */
        for (size_t j = 1; j <= k; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

json_t *cli_json_bytes(const void *p, size_t n)
{
    if (!utf8_valid(p, n))
        return json_null();
    return json_stringn(p, n);
}

char *cli_base64(const void *p, size_t n)
{
    static const char T[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        out[o++] = T[(v >> 18) & 63];
        out[o++] = T[(v >> 12) & 63];
        out[o++] = i + 1 < n ? T[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? T[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* Sets obj[name] to the bytes, or obj[name_base64] when not UTF-8 text. */
static void json_set_bytes(json_t *obj, const char *name, const void *p,
                           size_t n)
{
    json_t *s = cli_json_bytes(p, n);
    if (!json_is_null(s)) {
        json_object_set_new(obj, name, s);
        return;
    }
    json_decref(s);
    char key[64];
    snprintf(key, sizeof(key), "%s_base64", name);
    char *b = cli_base64(p, n);
    json_object_set_new(obj, key, b ? json_string(b) : json_null());
    free(b);
}

void cli_json_print(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s != NULL)
        printf("%s\n", s);
    free(s);
    json_decref(j);
}

int cli_read_stdin(char **buf, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    if (b == NULL)
        return -1;
    for (;;) {
        if (n == cap) {
            char *nb = cap > ((size_t)64 << 20) ? NULL : realloc(b, cap * 2);
            if (nb == NULL) {
                free(b);
                return -1;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin)) {
                free(b);
                return -1;
            }
            break;
        }
    }
    *buf = b;
    *len = n;
    return 0;
}

/* A value argument: the text itself, or stdin for "-". */
static int value_arg(const char *arg, char **owned, const char **v,
                     size_t *n)
{
    *owned = NULL;
    if (strcmp(arg, "-") == 0) {
        if (cli_read_stdin(owned, n) != 0) {
            cli_err("cannot read the value from stdin: %s", strerror(errno));
            return CLI_USAGE;
        }
        *v = *owned;
        return CLI_OK;
    }
    *v = arg;
    *n = strlen(arg);
    return CLI_OK;
}

static bool parse_consistency(const char *s, ringkv_consistency *c)
{
    if (strcmp(s, "linearizable") == 0)
        *c = RINGKV_LINEARIZABLE;
    else if (strcmp(s, "lease") == 0)
        *c = RINGKV_LEASE;
    else if (strcmp(s, "stale") == 0)
        *c = RINGKV_STALE;
    else
        return false;
    return true;
}

/* Looks for "--name value" / "--name=value" at argv[*i]; advances *i. */
static bool opt_val(int argc, char **argv, int *i, const char *name,
                    const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return false;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return true;
    }
    if (argv[*i][n] != '\0')
        return false;
    if (*i + 1 >= argc) {
        *val = NULL;
        return true;
    }
    *val = argv[++*i];
    return true;
}

/* ============================================================ commands */

static int cmd_get(struct cli *cl)
{
    const char *key = NULL, *v;
    ringkv_consistency cons = RINGKV_LINEARIZABLE;
    bool show_rev = false;
    for (int i = 1; i < cl->argc; i++) {
        if (opt_val(cl->argc, cl->argv, &i, "--consistency", &v)) {
            if (v == NULL || !parse_consistency(v, &cons))
                return cli_usage("get", "--consistency wants linearizable, "
                                        "lease or stale");
        } else if (strcmp(cl->argv[i], "--revision") == 0) {
            show_rev = true;
        } else if (key == NULL && (cl->argv[i][0] != '-' ||
                                   cl->argv[i][1] == '\0')) {
            key = cl->argv[i];
        } else {
            return cli_usage("get", "unexpected argument '%s'", cl->argv[i]);
        }
    }
    if (key == NULL || key[0] == '\0')
        return cli_usage("get", "get needs a KEY");
    ringkv_t *c;
    int rc = cli_open(cl, &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_value val;
    ringkv_status st = ringkv_get(c, key, strlen(key), cons, &val);
    if (st != RINGKV_OK) {
        if (st == RINGKV_NOT_FOUND && cl->json) {
            json_t *j = json_object();
            json_object_set_new(j, "key", json_string(key));
            json_object_set_new(j, "found", json_false());
            cli_json_print(j);
        }
        rc = cli_fail(c, key, st);
        ringkv_close(c);
        return rc;
    }
    if (cl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "key", json_string(key));
        json_object_set_new(j, "found", json_true());
        json_set_bytes(j, "value", val.data, val.len);
        json_object_set_new(j, "revision", json_integer((json_int_t)val.revision));
        json_object_set_new(j, "create_revision",
                            json_integer((json_int_t)val.create_revision));
        cli_json_print(j);
    } else {
        fwrite(val.data, 1, val.len, stdout);
        if (isatty(STDOUT_FILENO) || show_rev)
            fputc('\n', stdout);
        if (show_rev)
            printf("revision %llu\n", (unsigned long long)val.revision);
    }
    ringkv_value_free(&val);
    ringkv_close(c);
    return CLI_OK;
}

static void print_write(struct cli *cl, const char *op, const char *key,
                        const ringkv_write_result *wr)
{
    if (cl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "op", json_string(op));
        json_object_set_new(j, "key", json_string(key));
        json_object_set_new(j, "revision", json_integer((json_int_t)wr->revision));
        json_object_set_new(j, "prev_revision",
                            json_integer((json_int_t)wr->prev_revision));
        cli_json_print(j);
    } else {
        printf("OK revision %llu\n", (unsigned long long)wr->revision);
    }
}

static int cmd_put(struct cli *cl)
{
    if (cl->argc != 3)
        return cli_usage("put", "put needs KEY and VALUE (or - for stdin)");
    const char *key = cl->argv[1];
    if (key[0] == '\0')
        return cli_usage("put", "the key must not be empty");
    char *owned;
    const char *v;
    size_t n;
    int rc = value_arg(cl->argv[2], &owned, &v, &n);
    if (rc != CLI_OK)
        return rc;
    ringkv_t *c;
    if ((rc = cli_open(cl, &c)) != CLI_OK) {
        free(owned);
        return rc;
    }
    ringkv_write_result wr;
    ringkv_status st = ringkv_put(c, key, strlen(key), v, n, &wr);
    if (st == RINGKV_OK)
        print_write(cl, "put", key, &wr);
    else
        rc = cli_fail(c, key, st);
    free(owned);
    ringkv_close(c);
    return rc;
}

static int cmd_del(struct cli *cl)
{
    if (cl->argc != 2 || cl->argv[1][0] == '\0')
        return cli_usage("del", "del needs a KEY");
    const char *key = cl->argv[1];
    ringkv_t *c;
    int rc = cli_open(cl, &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_write_result wr;
    ringkv_status st = ringkv_del(c, key, strlen(key), &wr);
    if (st == RINGKV_OK)
        print_write(cl, "del", key, &wr);
    else
        rc = cli_fail(c, key, st);
    ringkv_close(c);
    return rc;
}

static int cmd_cas(struct cli *cl)
{
    const char *key = NULL, *newv = NULL, *v;
    ringkv_expect e = {.kind = RINGKV_EXPECT_ABSENT};
    int n_expect = 0;
    bool del = false;
    for (int i = 1; i < cl->argc; i++) {
        if (opt_val(cl->argc, cl->argv, &i, "--expect-value", &v)) {
            if (v == NULL)
                return cli_usage("cas", "--expect-value needs a value");
            e.kind = RINGKV_EXPECT_VALUE;
            e.value = v;
            e.vlen = strlen(v);
            n_expect++;
        } else if (opt_val(cl->argc, cl->argv, &i, "--expect-revision", &v)) {
            if (v == NULL || !cli_parse_u64(v, &e.revision))
                return cli_usage("cas", "--expect-revision needs a number");
            e.kind = RINGKV_EXPECT_REVISION;
            n_expect++;
        } else if (strcmp(cl->argv[i], "--expect-absent") == 0) {
            e.kind = RINGKV_EXPECT_ABSENT;
            n_expect++;
        } else if (strcmp(cl->argv[i], "--delete") == 0) {
            del = true;
        } else if (key == NULL) {
            key = cl->argv[i];
        } else if (newv == NULL) {
            newv = cl->argv[i];
        } else {
            return cli_usage("cas", "unexpected argument '%s'", cl->argv[i]);
        }
    }
    if (key == NULL || key[0] == '\0')
        return cli_usage("cas", "cas needs a KEY");
    if (n_expect != 1)
        return cli_usage("cas", "cas needs exactly one of --expect-value, "
                                "--expect-revision, --expect-absent");
    if ((newv == NULL) == !del)
        return cli_usage("cas", "cas needs NEWVALUE (or - for stdin), or "
                                "--delete");
    char *owned = NULL;
    const char *nv = "";
    size_t nvlen = 0;
    int rc;
    if (newv != NULL && (rc = value_arg(newv, &owned, &nv, &nvlen)) != CLI_OK)
        return rc;
    ringkv_t *c;
    if ((rc = cli_open(cl, &c)) != CLI_OK) {
        free(owned);
        return rc;
    }
    ringkv_write_result wr;
    ringkv_value cur;
    ringkv_status st =
        ringkv_cas(c, key, strlen(key), &e, nv, nvlen, del, &wr, &cur);
    if (st == RINGKV_OK) {
        print_write(cl, "cas", key, &wr);
    } else if (st == RINGKV_CAS_MISMATCH) {
        if (cl->json) {
            json_t *j = json_object();
            json_object_set_new(j, "op", json_string("cas"));
            json_object_set_new(j, "key", json_string(key));
            json_object_set_new(j, "succeeded", json_false());
            json_object_set_new(j, "found", json_boolean(cur.revision != 0));
            if (cur.revision != 0)
                json_set_bytes(j, "value", cur.data, cur.len);
            json_object_set_new(j, "revision",
                                json_integer((json_int_t)cur.revision));
            cli_json_print(j);
        } else if (cur.revision != 0) {
            fprintf(stderr, "ringkv: %s: compare failed: current revision "
                            "%llu, value %.*s\n", key,
                    (unsigned long long)cur.revision, (int)cur.len,
                    (const char *)cur.data);
        } else {
            fprintf(stderr, "ringkv: %s: compare failed: the key does not "
                            "exist\n", key);
        }
        ringkv_value_free(&cur);
        rc = CLI_NOT_FOUND;
    } else {
        rc = cli_fail(c, key, st);
    }
    free(owned);
    ringkv_close(c);
    return rc;
}

static int cmd_scan(struct cli *cl)
{
    const char *prefix = "", *after = NULL, *v;
    uint64_t limit = 100;
    bool keys_only = false;
    for (int i = 1; i < cl->argc; i++) {
        if (opt_val(cl->argc, cl->argv, &i, "--prefix", &v)) {
            if (v == NULL)
                return cli_usage("scan", "--prefix needs a value");
            prefix = v;
        } else if (opt_val(cl->argc, cl->argv, &i, "--limit", &v)) {
            if (v == NULL || !cli_parse_u64(v, &limit) || limit == 0 ||
                limit > 1000000)
                return cli_usage("scan", "--limit needs a number in "
                                         "[1, 1000000]");
        } else if (opt_val(cl->argc, cl->argv, &i, "--start-after", &v)) {
            if (v == NULL)
                return cli_usage("scan", "--start-after needs a key");
            after = v;
        } else if (strcmp(cl->argv[i], "--keys-only") == 0) {
            keys_only = true;
        } else {
            return cli_usage("scan", "unexpected argument '%s'", cl->argv[i]);
        }
    }
    ringkv_t *c;
    int rc = cli_open(cl, &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_kvs kvs;
    ringkv_status st = ringkv_scan(c, prefix, strlen(prefix), after,
                                   after ? strlen(after) : 0, limit,
                                   keys_only, &kvs);
    if (st != RINGKV_OK) {
        return fail_close(c, "scan", st);
    }
    if (cl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < kvs.n; i++) {
            json_t *o = json_object();
            json_set_bytes(o, "key", kvs.items[i].key, kvs.items[i].klen);
            if (!keys_only)
                json_set_bytes(o, "value", kvs.items[i].value.data,
                               kvs.items[i].value.len);
            json_object_set_new(o, "revision",
                                json_integer((json_int_t)kvs.items[i].value.revision));
            json_array_append_new(arr, o);
        }
        json_t *j = json_object();
        json_object_set_new(j, "count", json_integer((json_int_t)kvs.n));
        json_object_set_new(j, "items", arr);
        cli_json_print(j);
    } else {
        for (size_t i = 0; i < kvs.n; i++) {
            fwrite(kvs.items[i].key, 1, kvs.items[i].klen, stdout);
            if (!keys_only) {
                fputc('\t', stdout);
                fwrite(kvs.items[i].value.data, 1, kvs.items[i].value.len,
                       stdout);
            }
            fputc('\n', stdout);
        }
    }
    ringkv_kvs_free(&kvs);
    ringkv_close(c);
    return CLI_OK;
}

/* The connection of a command that takes no arguments (else a usage
 * error, CLI_USAGE). */
static int open_no_args(struct cli *cl, const char *cmd, ringkv_t **c)
{
    if (cl->argc != 1)
        return cli_usage(cmd, "%s takes no arguments", cmd);
    return cli_open(cl, c);
}

static const char *ROLE[] = {"follower", "pre-candidate", "candidate",
                             "leader", "none"};

static const char *role_name(int r)
{
    return r >= 0 && r <= 4 ? ROLE[r] : "?";
}

static int cmd_status(struct cli *cl)
{
    ringkv_t *c;
    int rc = open_no_args(cl, "status", &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_cluster_status cs;
    ringkv_status st = ringkv_get_cluster_status(c, &cs);
    if (st != RINGKV_OK) {
        return fail_close(c, "status", st);
    }
    size_t reachable = 0;
    for (size_t i = 0; i < cs.n_nodes; i++)
        reachable += cs.nodes[i].st == RINGKV_OK;
    if (cl->json) {
        json_t *nodes = json_array();
        for (size_t i = 0; i < cs.n_nodes; i++) {
            const ringkv_node_status *n = &cs.nodes[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer((json_int_t)n->node_id));
            json_object_set_new(o, "address", json_string(n->addr));
            json_object_set_new(o, "reachable", json_boolean(n->st == RINGKV_OK));
            if (n->st != RINGKV_OK)
                json_object_set_new(o, "error",
                                    json_string(ringkv_strerror(n->st)));
            json_object_set_new(o, "version", json_string(n->version));
            json_object_set_new(o, "uptime_ms",
                                json_integer((json_int_t)n->uptime_ms));
            json_t *sh = json_array();
            for (size_t k = 0; k < n->n_shards; k++) {
                const ringkv_shard_status *s = &n->shards[k];
                json_t *so = json_object();
                json_object_set_new(so, "shard", json_integer((json_int_t)s->shard));
                json_object_set_new(so, "role", json_string(role_name(s->role)));
                json_object_set_new(so, "leader", json_integer((json_int_t)s->leader));
                json_object_set_new(so, "term", json_integer((json_int_t)s->term));
                json_object_set_new(so, "commit", json_integer((json_int_t)s->commit));
                json_object_set_new(so, "applied", json_integer((json_int_t)s->applied));
                json_object_set_new(so, "lag", json_integer((json_int_t)(s->commit - s->applied)));
                json_array_append_new(sh, so);
            }
            json_object_set_new(o, "shards", sh);
            json_array_append_new(nodes, o);
        }
        json_t *j = json_object();
        json_object_set_new(j, "nodes", nodes);
        json_object_set_new(j, "reachable", json_integer((json_int_t)reachable));
        cli_json_print(j);
    } else {
        printf("%-4s %-22s %-9s %-6s %-13s %-6s %-6s %-9s %-9s %s\n", "NODE",
               "ADDRESS", "REACHABLE", "SHARD", "ROLE", "LEADER", "TERM",
               "COMMIT", "APPLIED", "LAG");
        for (size_t i = 0; i < cs.n_nodes; i++) {
            const ringkv_node_status *n = &cs.nodes[i];
            if (n->st != RINGKV_OK) {
                printf("%-4llu %-22s %-9s (%s)\n",
                       (unsigned long long)n->node_id, n->addr, "no",
                       ringkv_strerror(n->st));
                continue;
            }
            for (size_t k = 0; k < n->n_shards; k++) {
                const ringkv_shard_status *s = &n->shards[k];
                printf("%-4llu %-22s %-9s %-6llu %-13s %-6llu %-6llu %-9llu "
                       "%-9llu %llu\n",
                       (unsigned long long)n->node_id, n->addr, "yes",
                       (unsigned long long)s->shard, role_name(s->role),
                       (unsigned long long)s->leader,
                       (unsigned long long)s->term,
                       (unsigned long long)s->commit,
                       (unsigned long long)s->applied,
                       (unsigned long long)(s->commit - s->applied));
            }
        }
        printf("%zu of %zu nodes reachable\n", reachable, cs.n_nodes);
    }
    ringkv_cluster_status_free(&cs);
    ringkv_close(c);
    return reachable > 0 ? CLI_OK : CLI_UNAVAILABLE;
}

static void ids_str(char *buf, size_t cap, const uint64_t *ids, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", i ? "," : "",
                              (unsigned long long)ids[i]);
    if (n == 0)
        snprintf(buf, cap, "-");
}

static json_t *ids_json(const uint64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)ids[i]));
    return a;
}

static const char *SPLIT[] = {"", "preparing", "handoff", "done"};
static const char *NSTATE[] = {"active", "joining", "leaving", "removed"};

static const char *nstate(int s)
{
    return s >= 0 && s <= 3 ? NSTATE[s] : "?";
}

static int cmd_shards(struct cli *cl)
{
    ringkv_t *c;
    int rc = open_no_args(cl, "shards", &c);
    if (rc != CLI_OK)
        return rc;
    /* The cluster status tells who leads each shard now. */
    ringkv_cluster_status cs;
    ringkv_shard_map m;
    ringkv_status st = ringkv_get_shard_map(c, &m);
    if (st != RINGKV_OK) {
        return fail_close(c, "shards", st);
    }
    bool have_cs = ringkv_get_cluster_status(c, &cs) == RINGKV_OK;
    for (size_t i = 0; have_cs && i < m.n_shards; i++)
        for (size_t n = 0; n < cs.n_nodes; n++)
            for (size_t k = 0; k < cs.nodes[n].n_shards; k++)
                if (cs.nodes[n].shards[k].shard == m.shards[i].id &&
                    cs.nodes[n].shards[k].role == 3)
                    m.shards[i].leader = cs.nodes[n].node_id;
    size_t moving = 0;
    for (size_t i = 0; i < m.n_shards; i++)
        moving += m.shards[i].n_learners > 0 || m.shards[i].split_phase != 0;
    if (cl->json) {
        json_t *sh = json_array();
        for (size_t i = 0; i < m.n_shards; i++) {
            const ringkv_shard_info *s = &m.shards[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer((json_int_t)s->id));
            json_object_set_new(o, "leader", json_integer((json_int_t)s->leader));
            json_object_set_new(o, "replicas", ids_json(s->replicas, s->n_replicas));
            json_object_set_new(o, "learners", ids_json(s->learners, s->n_learners));
            json_object_set_new(o, "ring_points", json_integer((json_int_t)s->n_points));
            json_object_set_new(o, "ring_share", json_real(s->ring_share));
            json_object_set_new(o, "split", json_string(s->split_phase > 0 &&
                                                            s->split_phase <= 3
                                                        ? SPLIT[s->split_phase]
                                                        : ""));
            json_array_append_new(sh, o);
        }
        json_t *j = json_object();
        json_object_set_new(j, "cluster_id", json_integer((json_int_t)m.cluster_id));
        json_object_set_new(j, "epoch", json_integer((json_int_t)m.epoch));
        json_object_set_new(j, "moves_in_flight", json_integer((json_int_t)moving));
        json_object_set_new(j, "shards", sh);
        cli_json_print(j);
    } else {
        printf("shard map epoch %llu, cluster %016llx, %zu shards, %zu "
               "moves in flight\n",
               (unsigned long long)m.epoch, (unsigned long long)m.cluster_id,
               m.n_shards, moving);
        printf("%-6s %-7s %-14s %-10s %-7s %-7s %s\n", "SHARD", "LEADER",
               "REPLICAS", "LEARNERS", "POINTS", "SHARE", "SPLIT");
        for (size_t i = 0; i < m.n_shards; i++) {
            const ringkv_shard_info *s = &m.shards[i];
            char r[128], l[128];
            ids_str(r, sizeof(r), s->replicas, s->n_replicas);
            ids_str(l, sizeof(l), s->learners, s->n_learners);
            printf("%-6llu %-7llu %-14s %-10s %-7zu %5.1f%%  %s\n",
                   (unsigned long long)s->id, (unsigned long long)s->leader,
                   r, l, s->n_points, s->ring_share * 100,
                   s->id == 0 ? "(meta)"
                   : s->split_phase > 0 && s->split_phase <= 3
                       ? SPLIT[s->split_phase]
                       : "");
        }
    }
    if (have_cs)
        ringkv_cluster_status_free(&cs);
    ringkv_shard_map_free(&m);
    ringkv_close(c);
    return CLI_OK;
}

static void print_admin(struct cli *cl, const char *what,
                        const ringkv_admin_result *r)
{
    if (cl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "op", json_string(what));
        json_object_set_new(j, "epoch", json_integer((json_int_t)r->epoch));
        json_object_set_new(j, "shard", json_integer((json_int_t)r->shard));
        json_object_set_new(j, "index", json_integer((json_int_t)r->index));
        cli_json_print(j);
    } else {
        printf("OK %s (shard %llu, map epoch %llu)\n", what,
               (unsigned long long)r->shard, (unsigned long long)r->epoch);
    }
}

static int admin_done(struct cli *cl, ringkv_t *c, const char *what,
                      ringkv_status st, const ringkv_admin_result *r)
{
    int rc = st == RINGKV_OK ? CLI_OK : cli_fail(c, what, st);
    if (st == RINGKV_OK)
        print_admin(cl, what, r);
    ringkv_close(c);
    return rc;
}

static int cmd_members(struct cli *cl)
{
    const char *sub = cl->argc > 1 ? cl->argv[1] : "list";
    ringkv_t *c;
    int rc;
    ringkv_admin_result ar;
    uint64_t id;
    if (strcmp(sub, "list") == 0) {
        if (cl->argc > 2)
            return cli_usage("members", "members list takes no arguments");
        if ((rc = cli_open(cl, &c)) != CLI_OK)
            return rc;
        ringkv_node_info *nodes;
        size_t n;
        ringkv_status st = ringkv_member_list(c, &nodes, &n);
        if (st != RINGKV_OK) {
            return fail_close(c, "members list", st);
        }
        if (cl->json) {
            json_t *a = json_array();
            for (size_t i = 0; i < n; i++) {
                json_t *o = json_object();
                json_object_set_new(o, "id", json_integer((json_int_t)nodes[i].id));
                json_object_set_new(o, "client_addr", json_string(nodes[i].client_addr));
                json_object_set_new(o, "peer_addr", json_string(nodes[i].peer_addr));
                json_object_set_new(o, "state", json_string(nstate(nodes[i].state)));
                json_array_append_new(a, o);
            }
            json_t *j = json_object();
            json_object_set_new(j, "members", a);
            cli_json_print(j);
        } else {
            printf("%-4s %-22s %-22s %s\n", "ID", "CLIENT", "PEER", "STATE");
            for (size_t i = 0; i < n; i++)
                printf("%-4llu %-22s %-22s %s\n",
                       (unsigned long long)nodes[i].id, nodes[i].client_addr,
                       nodes[i].peer_addr[0] ? nodes[i].peer_addr : "-",
                       nstate(nodes[i].state));
        }
        free(nodes);
        ringkv_close(c);
        return CLI_OK;
    }
    if (strcmp(sub, "add") == 0) {
        if (cl->argc != 5 || !cli_parse_u64(cl->argv[2], &id))
            return cli_usage("members", "members add needs ID PEER_ADDR "
                                        "CLIENT_ADDR");
        if ((rc = cli_open(cl, &c)) != CLI_OK)
            return rc;
        ringkv_status st =
            ringkv_member_add(c, id, cl->argv[3], cl->argv[4], &ar);
        return admin_done(cl, c, "members add", st, &ar);
    }
    if (strcmp(sub, "remove") == 0) {
        if (cl->argc != 3 || !cli_parse_u64(cl->argv[2], &id) || id == 0)
            return cli_usage("members", "members remove needs a node ID");
        if ((rc = cli_open(cl, &c)) != CLI_OK)
            return rc;
        return admin_done(cl, c, "members remove",
                          ringkv_member_remove(c, id, &ar), &ar);
    }
    return cli_usage("members", "unknown subcommand '%s'", sub);
}

static int cmd_leader(struct cli *cl)
{
    uint64_t shard, to = 0;
    const char *v;
    if (cl->argc < 3 || strcmp(cl->argv[1], "transfer") != 0 ||
        !cli_parse_u64(cl->argv[2], &shard))
        return cli_usage("leader", "leader transfer needs a SHARD id");
    for (int i = 3; i < cl->argc; i++) {
        if (opt_val(cl->argc, cl->argv, &i, "--to", &v)) {
            if (v == NULL || !cli_parse_u64(v, &to))
                return cli_usage("leader", "--to needs a node id");
        } else {
            return cli_usage("leader", "unexpected argument '%s'",
                             cl->argv[i]);
        }
    }
    ringkv_t *c;
    int rc = cli_open(cl, &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_admin_result ar;
    return admin_done(cl, c, "leader transfer",
                      ringkv_leader_transfer(c, shard, to, &ar), &ar);
}

static int cmd_shard(struct cli *cl)
{
    uint64_t shard;
    if (cl->argc != 3 || strcmp(cl->argv[1], "split") != 0 ||
        !cli_parse_u64(cl->argv[2], &shard) || shard == 0)
        return cli_usage("shard", "shard split needs a data SHARD id");
    ringkv_t *c;
    int rc = cli_open(cl, &c);
    if (rc != CLI_OK)
        return rc;
    ringkv_admin_result ar;
    return admin_done(cl, c, "shard split", ringkv_shard_split(c, shard, &ar),
                      &ar);
}

static int cmd_version(struct cli *cl)
{
    if (cl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "version", json_string(ringkv_version()));
        cli_json_print(j);
    } else {
        printf("ringkv %s\n", ringkv_version());
    }
    return CLI_OK;
}

static int cmd_help(struct cli *cl);

/* ============================================================== table */

static const struct command {
    const char *name;
    int (*fn)(struct cli *);
    const char *synopsis;
    const char *help;
} COMMANDS[] = {
    {"get", cmd_get, "get KEY [--consistency linearizable|lease|stale] "
                     "[--revision]",
     "Prints the value of KEY (raw bytes; a newline is added on a terminal).\n"
     "--consistency: linearizable (default, ReadIndex), lease (leader lease)\n"
     "or stale (any replica, may be old). --revision also prints the key's\n"
     "revision. Exit 1 if the key does not exist.\n"
     "  ringkv get user:42\n  ringkv -o json get user:42"},
    {"put", cmd_put, "put KEY VALUE|-",
     "Stores VALUE under KEY; '-' reads the value from stdin (binary-safe).\n"
     "Prints the new revision. Exactly-once: a retried put is applied once.\n"
     "  ringkv put user:42 alice\n  ringkv put blob - < photo.jpg"},
    {"del", cmd_del, "del KEY",
     "Deletes KEY. Exit 1 if it did not exist.\n  ringkv del user:42"},
    {"cas", cmd_cas,
     "cas KEY (--expect-value V | --expect-revision N | --expect-absent) "
     "(NEWVALUE|- | --delete)",
     "Compare-and-set: writes NEWVALUE (or deletes the key with --delete)\n"
     "only if the key holds V / has revision N / does not exist. Exit 1 when\n"
     "the comparison fails (the current value is printed on stderr).\n"
     "  ringkv cas counter --expect-value 41 42\n"
     "  ringkv cas lock --expect-absent me"},
    {"scan", cmd_scan,
     "scan [--prefix P] [--limit N] [--start-after KEY] [--keys-only]",
     "Lists keys starting with P in key order across all shards (default\n"
     "limit 100), one 'KEY<TAB>VALUE' line each. Continue a long listing\n"
     "with --start-after the last key printed.\n"
     "  ringkv scan --prefix user: --limit 10"},
    {"status", cmd_status, "status",
     "Asks every node for its view: one row per node and shard with role,\n"
     "leader, term, commit and applied index, and lag (commit - applied).\n"
     "Unreachable nodes are listed. Exit 3 if no node answers."},
    {"shards", cmd_shards, "shards",
     "Prints the shard map: epoch, each shard's replicas, learners (moves\n"
     "in flight), current leader, ring points and share of the key space,\n"
     "and split progress."},
    {"members", cmd_members, "members [list | add ID PEER CLIENT | remove ID]",
     "Lists the cluster's nodes, adds a node (its peer and client address),\n"
     "or removes one (its replicas are moved away first).\n"
     "  ringkv members list\n"
     "  ringkv members add 4 10.0.0.4:7101 10.0.0.4:7001\n"
     "  ringkv members remove 4"},
    {"leader", cmd_leader, "leader transfer SHARD [--to NODE]",
     "Moves the leadership of SHARD to NODE (default: the most up-to-date\n"
     "follower).\n  ringkv leader transfer 3 --to 2"},
    {"shard", cmd_shard, "shard split SHARD",
     "Splits SHARD: a new shard takes half of its ring points and the keys\n"
     "on them.\n  ringkv shard split 3"},
    {"bench", cli_bench,
     "bench [--clients C] [--duration D] [--op put|get|mix] [--value-size B]\n"
     "      [--keys K] [--key-size N] [--consistency C] [--warmup D]\n"
     "      [--no-prefill] [--rate R]",
     "Load generator: C concurrent clients (default 16, each with one\n"
     "request in flight, all on one event loop) for D (default 10s) of\n"
     "puts, gets or a 50/50 mix over K keys (default 10000; get and mix\n"
     "write them first). Prints a progress line each second on stderr,\n"
     "then ops/s, p50, p90, p99, p99.9, max and errors; with -o json one\n"
     "object with ops_per_sec, p50_ms, p90_ms, p99_ms, p999_ms, max_ms,\n"
     "errors, ops. Keys are N bytes (default 16, 4 to 65536; the\n"
     "server's --max-key-bytes still applies).\n"
     "  ringkv bench --clients 64 --duration 10s --op put --value-size 256"},
    {"version", cmd_version, "version", "Prints the version."},
    {"help", cmd_help, "help [COMMAND]", "Prints help."},
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void usage_all(FILE *f)
{
    fprintf(f,
            "usage: ringkv [--endpoints H:P,...] [--timeout D] [-o table|json]"
            " COMMAND [ARGS]\n\n"
            "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n", COMMANDS[i].synopsis);
    fprintf(f,
            "\nGlobal options:\n"
            "  --endpoints H:P,...  client addresses of some nodes (default:\n"
            "                       $RINGKV_ENDPOINTS, else %s)\n"
            "  --timeout D          deadline of each call, e.g. 2s, 500ms "
            "(default 5s)\n"
            "  -o, --output FORMAT  table (default) or json\n"
            "\nExit codes: 0 ok; 1 key not found or compare failed; 2 usage;"
            "\n3 unavailable or timed out; 4 refused by the cluster (too "
            "large,\ninvalid, not supported); 5 internal error.\n"
            "\n'ringkv help COMMAND' describes a command.\n",
            DEFAULT_ENDPOINTS);
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

static void command_help(const struct command *c)
{
    printf("usage: ringkv %s\n\n%s\n", c->synopsis, c->help);
}

static int cmd_help(struct cli *cl)
{
    if (cl->argc < 2) {
        usage_all(stdout);
        return CLI_OK;
    }
    const struct command *c = find_command(cl->argv[1]);
    if (c == NULL)
        return cli_usage(NULL, "unknown command '%s'", cl->argv[1]);
    command_help(c);
    return CLI_OK;
}

int main(int argc, char **argv)
{
    struct cli cl = {0};
    ringkv_options_init(&cl.opts);
    const char *env = getenv("RINGKV_ENDPOINTS");
    cl.opts.endpoints = env != NULL && env[0] != '\0' ? env : DEFAULT_ENDPOINTS;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *v;
        if (opt_val(argc, argv, &i, "--endpoints", &v)) {
            if (v == NULL || v[0] == '\0')
                return cli_usage(NULL, "--endpoints needs host:port,...");
            cl.opts.endpoints = v;
        } else if (opt_val(argc, argv, &i, "--timeout", &v)) {
            unsigned ms;
            if (v == NULL || !cli_parse_duration_ms(v, &ms))
                return cli_usage(NULL, "--timeout needs a duration like 2s "
                                       "or 500ms");
            cl.opts.timeout_ms = ms;
            if (cl.opts.attempt_timeout_ms > ms)
                cl.opts.attempt_timeout_ms = ms;
        } else if (opt_val(argc, argv, &i, "-o", &v) ||
                   opt_val(argc, argv, &i, "--output", &v)) {
            if (v != NULL && strcmp(v, "json") == 0)
                cl.json = true;
            else if (v != NULL && strcmp(v, "table") == 0)
                cl.json = false;
            else
                return cli_usage(NULL, "-o wants table or json");
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            usage_all(stdout);
            return CLI_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            return cmd_version(&cl);
        } else {
            return cli_usage(NULL, "unknown option '%s'", argv[i]);
        }
    }
    if (i >= argc) {
        usage_all(stderr);
        return CLI_USAGE;
    }
    const struct command *c = find_command(argv[i]);
    if (c == NULL)
        return cli_usage(NULL, "unknown command '%s'", argv[i]);
    for (int k = i + 1; k < argc; k++) {
        if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            command_help(c);
            return CLI_OK;
        }
    }
    cl.argc = argc - i;
    cl.argv = argv + i;
    return c->fn(&cl);
}
