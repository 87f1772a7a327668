/* The ringkv JSON-lines history reader (libjansson, one object per line). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lc_internal.h"
#include "rk_err.h"

struct jctx {
    struct lc_history *h;
    struct lc_intern keys;
    size_t line;
    char *err;
    size_t errlen;
};

static int jfail(struct jctx *c, const char *what)
{
    lc__errf(c->err, c->errlen, "JSONL line %zu: %s", c->line, what);
    return RK_EPROTO;
}

static int jval(struct jctx *c, const json_t *v, struct lc_val *out)
{
    if (v == NULL || json_is_null(v)) {
        *out = LC_NIL;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = LC_INT(json_integer_value(v));
        return 0;
    }
    return jfail(c, "value must be an integer or null");
}

static int jkey(struct jctx *c, const json_t *k, int64_t *out)
{
    char buf[64];
    const char *t;
    size_t len;
    bool fresh;
    int rc;

    if (json_is_integer(k)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(k));
        t = buf;
        len = strlen(buf);
    } else if (json_is_string(k)) {
        t = json_string_value(k);
        len = json_string_length(k);
    } else {
        return jfail(c, "key must be an integer or a string");
    }
    rc = lc__intern(&c->keys, t, len, out, &fresh);
    if (rc == 0 && fresh) {
        char *name = strndup(t, len);
        rc = name != NULL ? lc_history_set_key_name(c->h, *out, name)
                          : RK_ENOMEM;
        free(name);
    }
    if (rc != 0)
        lc__errf(c->err, c->errlen, "out of memory");
    return rc;
}

static int parse_enum(const json_t *v, const char *const *names, int n)
{
    int i;

    if (!json_is_string(v))
        return -1;
    for (i = 0; i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0)
            return i;
    }
    return -1;
}

static int jline(struct jctx *c, const char *s, size_t len)
{
    struct lc_mop *mops = NULL;
    json_error_t jerr;
    json_t *o, *v, *proc;
    struct lc_op op;
    int t, f, rc = 0;
    char msg[200];

    o = json_loadb(s, len, 0, &jerr);
    if (o == NULL) {
        snprintf(msg, sizeof(msg), "bad JSON: %s", jerr.text);
        return jfail(c, msg);
    }
    if (!json_is_object(o)) {
        rc = jfail(c, "expected a JSON object");
        goto out;
    }
    proc = json_object_get(o, "process");
    if (proc == NULL) {
        rc = jfail(c, "missing \"process\"");
        goto out;
    }
    if (!json_is_integer(proc))
        goto out; /* "nemesis" and other non-client processes */
    memset(&op, 0, sizeof(op));
    op.process = json_integer_value(proc);
    t = parse_enum(json_object_get(o, "type"), lc__type_names,
                   LC_INFO + 1);
    f = parse_enum(json_object_get(o, "f"), lc__fn_names, LC_TXN + 1);
    if (t < 0) {
        rc = jfail(c, "\"type\" must be invoke, ok, fail or info");
        goto out;
    }
    if (f < 0) {
        rc = jfail(c, "\"f\" must be read, write, cas, acquire, release or "
                      "txn");
        goto out;
    }
    op.type = (enum lc_type)t;
    op.fn = (enum lc_fn)f;
    op.value = LC_NIL;
    op.value2 = LC_NIL;
    v = json_object_get(o, "key");
    if (v != NULL && !json_is_null(v) && (rc = jkey(c, v, &op.key)) != 0)
        goto out;
    v = json_object_get(o, "value");
    if (op.fn == LC_CAS && json_is_array(v)) {
        if (json_array_size(v) != 2) {
            rc = jfail(c, "cas value must be [old, new]");
            goto out;
        }
        if ((rc = jval(c, json_array_get(v, 0), &op.value)) != 0 ||
            (rc = jval(c, json_array_get(v, 1), &op.value2)) != 0)
            goto out;
    } else if (op.fn == LC_TXN) {
        size_t i, n = json_is_array(v) ? json_array_size(v) : 0;
        if (n == 0 || n > 4096) {
            rc = jfail(c, "txn value must be a non-empty array of "
                          "[f, key, value]");
            goto out;
        }
        mops = calloc(n, sizeof(*mops));
        if (mops == NULL) {
            rc = RK_ENOMEM;
            goto out;
        }
        for (i = 0; i < n; i++) {
            json_t *m = json_array_get(v, i);
            int mf = parse_enum(json_array_get(m, 0), lc__fn_names, 2);
            if (!json_is_array(m) || json_array_size(m) != 3 || mf < 0) {
                rc = jfail(c, "micro-op must be [\"read\"|\"write\", key, "
                              "value]");
                goto out;
            }
            mops[i].fn = (enum lc_fn)mf;
            if ((rc = jkey(c, json_array_get(m, 1), &mops[i].key)) != 0 ||
                (rc = jval(c, json_array_get(m, 2), &mops[i].value)) != 0)
                goto out;
        }
        op.mops = mops;
        op.n_mops = (uint32_t)n;
    } else if (op.fn != LC_ACQUIRE && op.fn != LC_RELEASE) {
        if ((rc = jval(c, v, &op.value)) != 0)
            goto out;
    }
    v = json_object_get(o, "time");
    op.time = json_is_integer(v) ? json_integer_value(v) : 0;
    v = json_object_get(o, "index");
    op.index = json_is_integer(v) ? json_integer_value(v) : -1;
    rc = lc_history_add(c->h, &op);
    if (rc != 0)
        rc = rc == RK_ENOMEM ? RK_ENOMEM : jfail(c, "invalid op");
out:
    free(mops);
    json_decref(o);
    return rc;
}

int lc_read_jsonl(const char *text, size_t len, struct lc_history **out,
                  char *err, size_t errlen)
{
    struct jctx c = {0};
    size_t pos = 0;
    int rc;

    c.err = err;
    c.errlen = errlen;
    rc = lc_history_new(&c.h);
    if (rc != 0)
        return rc;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - s) : len - pos;
        size_t i = 0;

        c.line++;
        pos += n + (nl != NULL);
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
            i++;
        if (i == n || s[i] == '#')
            continue;
        rc = jline(&c, s + i, n - i);
        if (rc != 0)
            break;
    }
    lc__intern_free(&c.keys);
    if (rc != 0) {
        lc_history_free(c.h);
        return rc;
    }
    *out = c.h;
    return 0;
}
