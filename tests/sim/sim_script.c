/* raft-sim-script: scripted scenarios with golden output (datadriven). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/*
 * A script is a sequence of blocks:
 *
 *     # comment lines and blank lines are kept as they are
 *     <command> <args...>
 *     ----
 *     <expected output, one or more lines>
 *     <blank line>
 *
 * Each command runs against one simulated cluster; its output is compared
 * with the expected text. `--rewrite` writes the actual output back into the
 * file instead (review the diff before committing it).
 *
 * Commands (nodes are named by id, 1..):
 *   cluster N [seed=S] [prevote=0|1] [checkquorum=0|1]
 *                           a calm cluster (no random faults, no workload);
 *                           scenarios elect with `campaign` so that their
 *                           output does not hang on randomized timeouts
 *   campaign ID             node ID starts an election
 *   elect                   run until a leader is known (10 s max)
 *   run MS                  run MS ms of simulated time, then print status
 *   status                  one line per node
 *   propose ID K=V          write K := V through node ID (not in the history)
 *   write ID K=V            a client write through node ID, recorded in the
 *                           history; waits for the answer (3 s at most)
 *   read ID K PATH          a client read at node ID, PATH = log | index |
 *                           lease; prints the value or fail/info
 *   crash ID | restart ID
 *   partition A B.. | C D.. cut every link between the two groups
 *   cut A B                 cut A -> B only
 *   heal
 *   transfer ID TO          leader ID hands leadership to TO
 *   conf ID OP TARGET       OP: add-voter add-learner promote remove
 *   snapshot ID             node ID snapshots its state machine
 *   stats                   snapshot / install / crash / conf counters
 *   check                   safety verdict and client history check
 */

#define OUT_MAX      8192
#define LINE_MAX_LEN 512

struct out {
    char buf[OUT_MAX];
    size_t len;
};

static void outf(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void outf(struct out *o, const char *fmt, ...)
{
    if (o->len >= OUT_MAX - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, OUT_MAX - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len +=
            (size_t)n < OUT_MAX - o->len ? (size_t)n : OUT_MAX - 1 - o->len;
}

static const char *rc_str(int rc)
{
    return rc == 0 ? "ok" : rk_err_name(rc);
}

static void print_status(struct sim *s, struct out *o)
{
    for (int i = 0; i < s->n_slots; i++) {
        struct sim_node *n = &s->nodes[i];
        outf(o, "n%llu: ", (unsigned long long)n->id);
        if (n->retired) {
            outf(o, "retired\n");
            continue;
        }
        if (!n->up) {
            outf(o, "down\n");
            continue;
        }
        struct raft_status st;
        raft_status(n->raft, &st);
        outf(o, "%s term=%llu leader=%llu commit=%llu applied=%llu kv=[",
             raft_role_name(st.role), (unsigned long long)st.term,
             (unsigned long long)st.leader, (unsigned long long)st.commit,
             (unsigned long long)n->applied);
        for (int k = 0; k < SIM_KEYS; k++)
            outf(o, "%s%lld", k ? " " : "", (long long)n->kv[k]);
        outf(o, "]\n");
    }
}

static int node_arg(struct sim *s, const char *tok)
{
    char *end;
    long v = strtol(tok, &end, 10);
    if (*end != '\0' || v < 1 || v > s->n_slots)
        return -1;
    return (int)v - 1;
}

static bool run_for(struct sim *s, void *arg)
{
    (void)s;
    (void)arg;
    return false;
}

struct op_arg {
    uint64_t op;
};

static bool op_done(struct sim *s, void *arg)
{
    const struct op_arg *a = arg;
    return s->ops[a->op].status != SIM_ST_PENDING;
}

/* Runs one command; the output goes to o. */
static void run_command(struct sim *s, bool *have, char **tok, int ntok,
                        struct out *o)
{
    const char *cmd = tok[0];
    if (strcmp(cmd, "cluster") == 0) {
        int n = ntok > 1 ? atoi(tok[1]) : 3;
        uint64_t seed = 1;
        bool pre_vote = true, check_quorum = true;
        for (int k = 2; k < ntok; k++) {
            if (strncmp(tok[k], "seed=", 5) == 0)
                seed = strtoull(tok[k] + 5, NULL, 10);
            else if (strncmp(tok[k], "prevote=", 8) == 0)
                pre_vote = atoi(tok[k] + 8) != 0;
            else if (strncmp(tok[k], "checkquorum=", 12) == 0)
                check_quorum = atoi(tok[k] + 12) != 0;
        }
        if (*have)
            sim_free(s);
        struct sim_opts opt;
        sim_opts_default(&opt, seed, n);
        opt.pre_vote = pre_vote;
        opt.check_quorum = check_quorum;
        opt.crashes = opt.partitions = opt.membership = false;
        opt.transfers = opt.snapshots = false;
        opt.loss = opt.dup = opt.reorder = 0;
        opt.max_msg_bytes = 8 * SIM_CMD_SIZE;
        opt.max_inflight = 8;
        int rc = sim_init(s, &opt);
        *have = rc == 0;
        if (rc == 0)
            s->workload = false;
        outf(o, "%s\n", rc_str(rc));
        return;
    }
    if (!*have) {
        outf(o, "error: no cluster (use: cluster N)\n");
        return;
    }
    if (strcmp(cmd, "status") == 0) {
        print_status(s, o);
    } else if (strcmp(cmd, "run") == 0 && ntok == 2) {
        sim_step_until(s, run_for, NULL, strtoull(tok[1], NULL, 10));
        print_status(s, o);
    } else if (strcmp(cmd, "elect") == 0) {
        int l = sim_until_leader(s, 10000);
        if (l < 0) {
            outf(o, "no leader\n");
        } else {
            struct raft_status st;
            raft_status(s->nodes[l].raft, &st);
            outf(o, "leader n%llu term=%llu\n",
                 (unsigned long long)s->nodes[l].id,
                 (unsigned long long)st.term);
        }
    } else if (strcmp(cmd, "campaign") == 0 && ntok == 2) {
        int i = node_arg(s, tok[1]);
        outf(o, "%s\n", i < 0 ? "error: bad node" : rc_str(sim_campaign(s, i)));
    } else if (strcmp(cmd, "propose") == 0 && ntok == 3) {
        int i = node_arg(s, tok[1]);
        int key;
        long long val;
        if (i < 0 || sscanf(tok[2], "%d=%lld", &key, &val) != 2 || key < 0 ||
            key >= SIM_KEYS) {
            outf(o, "error: usage: propose ID K=V\n");
            return;
        }
        raft_index idx = sim_propose_write(s, i, key, val);
        if (idx == 0)
            outf(o, "rejected\n");
        else
            outf(o, "index %llu\n", (unsigned long long)idx);
    } else if (strcmp(cmd, "crash") == 0 && ntok == 2) {
        int i = node_arg(s, tok[1]);
        if (i >= 0)
            sim_crash(s, i);
        outf(o, "%s\n", i < 0 ? "error: bad node" : "ok");
    } else if (strcmp(cmd, "restart") == 0 && ntok == 2) {
        int i = node_arg(s, tok[1]);
        outf(o, "%s\n", i < 0 ? "error: bad node" : rc_str(sim_restart(s, i)));
    } else if (strcmp(cmd, "partition") == 0) {
        int side[SIM_MAX_NODES];
        for (int k = 0; k < SIM_MAX_NODES; k++)
            side[k] = -1;
        int cur = 0;
        for (int k = 1; k < ntok; k++) {
            if (strcmp(tok[k], "|") == 0) {
                cur = 1;
                continue;
            }
            int i = node_arg(s, tok[k]);
            if (i < 0) {
                outf(o, "error: bad node %s\n", tok[k]);
                return;
            }
            side[i] = cur;
        }
        for (int a = 0; a < s->n_slots; a++)
            for (int b = 0; b < s->n_slots; b++)
                if (side[a] >= 0 && side[b] >= 0 && side[a] != side[b])
                    sim_cut(s, a, b, false);
        outf(o, "ok\n");
    } else if (strcmp(cmd, "cut") == 0 && ntok == 3) {
        int a = node_arg(s, tok[1]), b = node_arg(s, tok[2]);
        if (a < 0 || b < 0) {
            outf(o, "error: bad node\n");
            return;
        }
        sim_cut(s, a, b, false);
        outf(o, "ok\n");
    } else if (strcmp(cmd, "heal") == 0) {
        sim_heal(s);
        outf(o, "ok\n");
    } else if (strcmp(cmd, "transfer") == 0 && ntok == 3) {
        int i = node_arg(s, tok[1]);
        outf(o, "%s\n",
             i < 0 ? "error: bad node"
                   : rc_str(sim_transfer(s, i, strtoull(tok[2], NULL, 10))));
    } else if (strcmp(cmd, "conf") == 0 && ntok == 4) {
        static const char *const ops[] = {"add-voter", "add-learner", "promote",
                                          "remove"};
        int i = node_arg(s, tok[1]);
        int op = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(tok[2], ops[k]) == 0)
                op = k;
        raft_id target = strtoull(tok[3], NULL, 10);
        if (i < 0 || op < 0 || target == 0) {
            outf(o, "error: usage: conf ID "
                    "add-voter|add-learner|promote|remove TARGET\n");
            return;
        }
        int rc = sim_conf_change(s, i, (uint8_t)op, target);
        if (rc == 0 && target == (raft_id)s->n_slots + 1)
            sim_add_slot(s); /* a brand-new node joins */
        outf(o, "%s\n", rc_str(rc));
    } else if (strcmp(cmd, "snapshot") == 0 && ntok == 2) {
        int i = node_arg(s, tok[1]);
        if (i < 0) {
            outf(o, "error: bad node\n");
            return;
        }
        uint64_t before = s->n_snapshots;
        int rc = sim_take_snapshot(s, i);
        if (rc == 0 && s->n_snapshots > before)
            outf(o, "snapshot at %llu\n",
                 (unsigned long long)s->nodes[i].applied);
        else
            outf(o, "%s\n", rc == 0 ? "skipped" : rc_str(rc));
    } else if ((strcmp(cmd, "write") == 0 && ntok == 3) ||
               (strcmp(cmd, "read") == 0 && ntok == 4)) {
        int i = node_arg(s, tok[1]);
        int key;
        long long val = 0;
        int path = SIM_PATH_LOG;
        bool is_read = cmd[0] == 'r';
        bool ok = i >= 0;
        if (is_read) {
            key = atoi(tok[2]);
            if (strcmp(tok[3], "index") == 0)
                path = SIM_PATH_READ_INDEX;
            else if (strcmp(tok[3], "lease") == 0)
                path = SIM_PATH_LEASE;
            else if (strcmp(tok[3], "log") != 0)
                ok = false;
        } else if (sscanf(tok[2], "%d=%lld", &key, &val) != 2) {
            ok = false;
        }
        if (!ok || key < 0 || key >= SIM_CLIENT_KEYS || s->clients[0].busy) {
            outf(o,
                 "error: usage: write ID K=V | read ID K log|index|lease "
                 "(K < %d, one operation at a time)\n",
                 SIM_CLIENT_KEYS);
            return;
        }
        uint64_t op = sim_client_op(
            s, 0, i, is_read ? SIM_OP_READ : SIM_OP_WRITE, key, val, 0, path);
        struct op_arg a = {.op = op};
        sim_step_until(s, op_done, &a, 3000);
        static const char *const st[] = {"pending", "ok", "fail", "info"};
        const struct sim_op *r = &s->ops[op];
        if (is_read && r->status == SIM_ST_OK)
            outf(o, "ok %lld\n", (long long)r->result);
        else
            outf(o, "%s\n", st[r->status]);
    } else if (strcmp(cmd, "stats") == 0) {
        outf(o,
             "snapshots=%llu installs=%llu crashes=%llu conf=%llu "
             "transfers=%llu\n",
             (unsigned long long)s->n_snapshots,
             (unsigned long long)s->n_snap_installs,
             (unsigned long long)s->n_crashes, (unsigned long long)s->n_conf,
             (unsigned long long)s->n_transfers);
    } else if (strcmp(cmd, "check") == 0) {
        if (sim_check_safety(s) && sim_check_history(s))
            outf(o, "safe\n");
    } else {
        outf(o, "error: unknown command or arguments: %s\n", cmd);
    }
}

struct lines {
    char **v;
    size_t n, cap;
};

static int push_line(struct lines *l, const char *text, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 128;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    char *c = malloc(len + 1);
    if (c == NULL)
        return -1;
    memcpy(c, text, len);
    c[len] = '\0';
    l->v[l->n++] = c;
    return 0;
}

static int read_lines(const char *path, struct lines *l)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "raft-sim-script: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[LINE_MAX_LEN];
    int rc = 0;
    while (rc == 0 && fgets(buf, sizeof(buf), f) != NULL) {
        size_t len = strcspn(buf, "\n");
        rc = push_line(l, buf, len);
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 ||
        (argc == 3 && strcmp(argv[2], "--rewrite") != 0)) {
        fprintf(stderr, "usage: raft-sim-script FILE [--rewrite]\n");
        return 2;
    }
    const char *path = argv[1];
    bool rewrite = argc == 3;
    struct lines in = {0};
    if (read_lines(path, &in) != 0)
        return 2;
    FILE *rw = NULL;
    char tmp[4096];
    if (rewrite) {
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        rw = fopen(tmp, "w");
        if (rw == NULL) {
            fprintf(stderr, "raft-sim-script: %s: %s\n", tmp, strerror(errno));
            return 2;
        }
    }
    struct sim s;
    bool have = false;
    int failures = 0, blocks = 0;
    size_t i = 0;
    while (i < in.n) {
        const char *line = in.v[i];
        if (line[0] == '\0' || line[0] == '#') {
            if (rw)
                fprintf(rw, "%s\n", line);
            i++;
            continue;
        }
        size_t cmd_line = i++;
        if (i >= in.n || strcmp(in.v[i], "----") != 0) {
            fprintf(stderr, "%s:%zu: expected ---- after the command\n", path,
                    cmd_line + 1);
            failures++;
            break;
        }
        i++;
        /* Expected output: until a blank line. */
        char expected[OUT_MAX] = "";
        size_t elen = 0;
        while (i < in.n && in.v[i][0] != '\0') {
            int n = snprintf(expected + elen, sizeof(expected) - elen, "%s\n",
                             in.v[i]);
            if (n > 0 && (size_t)n < sizeof(expected) - elen)
                elen += (size_t)n;
            i++;
        }
        /* Tokenize and run. */
        char copy[LINE_MAX_LEN];
        snprintf(copy, sizeof(copy), "%s", in.v[cmd_line]);
        char *tok[32];
        int ntok = 0;
        for (char *t = strtok(copy, " \t"); t && ntok < 32;
             t = strtok(NULL, " \t"))
            tok[ntok++] = t;
        struct out o;
        o.len = 0;
        o.buf[0] = '\0';
        bool failed_before = have && s.failed;
        run_command(&s, &have, tok, ntok, &o);
        if (have && s.failed && !failed_before)
            outf(&o, "VIOLATION: %s\n", s.fail_what);
        if (o.len == 0)
            outf(&o, "ok\n");
        blocks++;
        if (rw) {
            fprintf(rw, "%s\n----\n%s\n", in.v[cmd_line], o.buf);
        } else if (strcmp(o.buf, expected) != 0) {
            failures++;
            printf("%s:%zu: %s\n  expected:\n%s  got:\n%s", path, cmd_line + 1,
                   in.v[cmd_line], expected, o.buf);
        }
        if (i < in.n)
            i++; /* the blank line closing the block */
    }
    if (have)
        sim_free(&s);
    for (size_t k = 0; k < in.n; k++)
        free(in.v[k]);
    free(in.v);
    if (rw) {
        fclose(rw);
        if (rename(tmp, path) != 0) {
            fprintf(stderr, "raft-sim-script: rename: %s\n", strerror(errno));
            return 2;
        }
        printf("%s: rewrote %d blocks\n", path, blocks);
        return 0;
    }
    printf("%s: %d blocks, %d mismatches\n", path, blocks, failures);
    return failures == 0 ? 0 : 1;
}
