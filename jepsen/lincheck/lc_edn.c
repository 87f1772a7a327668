/* A small, defensive EDN reader; Jepsen op maps become history events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lc_internal.h"
#include "rk_err.h"

/*
 * The reader parses one top-level form at a time into a tree of nodes kept
 * in one growable array (children are linked by index, so growth never
 * invalidates them); the array is reset after each op map, so a history of
 * any length is read in memory proportional to its largest op. A top-level
 * vector or list is streamed element by element.
 *
 * Supported: nil, true, false, integers (with N suffix; overflow is kept as
 * a "big integer" that is an error only where a value is needed), floats,
 * ratios, strings, characters, keywords, symbols, lists, vectors, maps, sets,
 * tagged literals (#inst "...", #jepsen.history.Op{...}: the tag is dropped
 * and the value kept), #_ discard, ##Inf, #"regex", #:ns{} maps, metadata
 * (^meta form: meta dropped), quote-like prefixes, ; comments, commas.
 */

#define EDN_MAX_DEPTH 200

enum ekind {
    E_NIL,
    E_BOOL,
    E_INT,
    E_BIGINT,
    E_FLOAT,
    E_STRING,
    E_CHAR,
    E_KEYWORD,
    E_SYMBOL,
    E_LIST,
    E_VECTOR,
    E_MAP,
    E_SET,
    E_TAGGED,
};

struct enode {
    enum ekind kind;
    int64_t i;
    size_t src;   /* start offset of the form's text */
    size_t src_end;
    size_t line;
    uint32_t n;   /* number of children */
    int32_t child; /* first child or -1 */
    int32_t next;  /* next sibling or -1 */
};

struct ep {
    const char *text;
    size_t len;
    size_t pos;
    size_t line;
    struct enode *nodes;
    size_t n_nodes;
    size_t cap_nodes;
    char *err;
    size_t errlen;
    int rc; /* the first error */
};

/* parse_form results besides a node index (>= 0). */
#define P_ERR (-1)
#define P_CLOSE (-2)
#define P_EOF (-3)

static int fail(struct ep *ep, int rc, const char *what)
{
    if (ep->rc == 0) {
        ep->rc = rc;
        lc__errf(ep->err, ep->errlen, "EDN line %zu: %s", ep->line, what);
    }
    return P_ERR;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' ||
           c == '\f' || c == '\v';
}

static bool is_delim(char c)
{
    return is_ws(c) || c == '(' || c == ')' || c == '[' || c == ']' ||
           c == '{' || c == '}' || c == '"' || c == ';';
}

static void skip_ws(struct ep *ep)
{
    while (ep->pos < ep->len) {
        char c = ep->text[ep->pos];
        if (c == '\n') {
            ep->line++;
            ep->pos++;
        } else if (is_ws(c)) {
            ep->pos++;
        } else if (c == ';' ||
                   (c == '#' && ep->pos + 1 < ep->len &&
                    ep->text[ep->pos + 1] == '!')) {
            while (ep->pos < ep->len && ep->text[ep->pos] != '\n')
                ep->pos++;
        } else {
            break;
        }
    }
}

static int new_node(struct ep *ep, enum ekind kind, size_t src)
{
    struct enode *nd;

    if (ep->n_nodes >= INT32_MAX)
        return fail(ep, RK_ENOMEM, "form too large");
    if (lc__grow((void **)&ep->nodes, &ep->cap_nodes, ep->n_nodes + 1,
                 sizeof(*ep->nodes)) != 0)
        return fail(ep, RK_ENOMEM, "out of memory");
    nd = &ep->nodes[ep->n_nodes];
    memset(nd, 0, sizeof(*nd));
    nd->kind = kind;
    nd->src = src;
    nd->src_end = src;
    nd->line = ep->line;
    nd->child = -1;
    nd->next = -1;
    return (int)ep->n_nodes++;
}

/* Length of the token starting at pos (up to a delimiter). */
static size_t token_len(const struct ep *ep, size_t pos)
{
    size_t i = pos;

    while (i < ep->len && !is_delim(ep->text[i]))
        i++;
    return i - pos;
}

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_form(struct ep *ep, int depth);

/* Parses forms until the closing delimiter `close`; returns the node. */
static int parse_coll(struct ep *ep, enum ekind kind, char close, size_t src,
                      int depth)
{
    int self = new_node(ep, kind, src), last = -1;

    if (self < 0)
        return P_ERR;
    for (;;) {
        int ch = parse_form(ep, depth + 1);
        if (ch == P_ERR)
            return P_ERR;
        if (ch == P_EOF)
            return fail(ep, RK_EPROTO, "unexpected end of input in a "
                                       "collection");
        if (ch == P_CLOSE) {
            if (ep->text[ep->pos] != close)
                return fail(ep, RK_EPROTO, "mismatched closing delimiter");
            ep->pos++;
            break;
        }
        if (last < 0)
            ep->nodes[self].child = ch;
        else
            ep->nodes[last].next = ch;
        last = ch;
        ep->nodes[self].n++;
    }
    if (kind == E_MAP && (ep->nodes[self].n % 2) != 0)
        return fail(ep, RK_EPROTO, "map with an odd number of forms");
    ep->nodes[self].src_end = ep->pos;
    return self;
}

static int parse_string(struct ep *ep, size_t src)
{
    int self;

    ep->pos++; /* the opening quote */
    while (ep->pos < ep->len && ep->text[ep->pos] != '"') {
        if (ep->text[ep->pos] == '\\' && ep->pos + 1 < ep->len)
            ep->pos++;
        if (ep->text[ep->pos] == '\n')
            ep->line++;
        ep->pos++;
    }
    if (ep->pos >= ep->len)
        return fail(ep, RK_EPROTO, "unterminated string");
    ep->pos++;
    self = new_node(ep, E_STRING, src);
    if (self >= 0)
        ep->nodes[self].src_end = ep->pos;
    return self;
}

static int parse_number(struct ep *ep, size_t src)
{
    size_t n = token_len(ep, src), i;
    char buf[128];
    char *end;
    bool is_float = false;
    int self;
    long long v;

    if (n >= sizeof(buf))
        return fail(ep, RK_EPROTO, "number too long");
    memcpy(buf, ep->text + src, n);
    buf[n] = '\0';
    ep->pos = src + n;
    if (n > 0 && buf[n - 1] == 'N') {
        buf[--n] = '\0';
    } else if (n > 0 && buf[n - 1] == 'M') {
        buf[--n] = '\0';
        is_float = true;
    }
    for (i = 0; i < n; i++) {
        if (buf[i] == '.' || buf[i] == 'e' || buf[i] == 'E' || buf[i] == '/')
            is_float = true;
    }
    if (n >= 2 && buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X'))
        is_float = false;
    if (is_float) {
        /* Floats and ratios are kept only as "a number that is not an
         * integer"; validate the shape loosely. */
        for (i = 0; i < n; i++) {
            char c = buf[i];
            if (!digit(c) && c != '.' && c != 'e' && c != 'E' && c != '+' &&
                c != '-' && c != '/')
                return fail(ep, RK_EPROTO, "malformed number");
        }
        self = new_node(ep, E_FLOAT, src);
        if (self >= 0)
            ep->nodes[self].src_end = ep->pos;
        return self;
    }
    errno = 0;
    v = strtoll(buf, &end, 0);
    if (end == buf || *end != '\0')
        return fail(ep, RK_EPROTO, "malformed number");
    self = new_node(ep, errno == ERANGE ? E_BIGINT : E_INT, src);
    if (self >= 0) {
        ep->nodes[self].i = (int64_t)v;
        ep->nodes[self].src_end = ep->pos;
    }
    return self;
}

static int parse_token(struct ep *ep, size_t src)
{
    size_t n = token_len(ep, src);
    const char *t = ep->text + src;
    enum ekind kind = E_SYMBOL;
    int self;

    if (n == 0)
        return fail(ep, RK_EPROTO, "unexpected character");
    ep->pos = src + n;
    if (t[0] == ':') {
        if (n == 1)
            return fail(ep, RK_EPROTO, "empty keyword");
        kind = E_KEYWORD;
    } else if (n == 3 && memcmp(t, "nil", 3) == 0) {
        kind = E_NIL;
    } else if ((n == 4 && memcmp(t, "true", 4) == 0) ||
               (n == 5 && memcmp(t, "false", 5) == 0)) {
        kind = E_BOOL;
    }
    self = new_node(ep, kind, src);
    if (self >= 0) {
        ep->nodes[self].i = (kind == E_BOOL && n == 4);
        ep->nodes[self].src_end = ep->pos;
    }
    return self;
}

/* Parses one form; returns its node, or P_CLOSE, P_EOF, P_ERR. */
static int parse_form(struct ep *ep, int depth)
{
    size_t src;
    char c;

    if (depth > EDN_MAX_DEPTH)
        return fail(ep, RK_EPROTO, "nesting too deep");
    for (;;) {
        skip_ws(ep);
        if (ep->pos >= ep->len)
            return P_EOF;
        src = ep->pos;
        c = ep->text[src];
        switch (c) {
        case '(':
            ep->pos++;
            return parse_coll(ep, E_LIST, ')', src, depth);
        case '[':
            ep->pos++;
            return parse_coll(ep, E_VECTOR, ']', src, depth);
        case '{':
            ep->pos++;
            return parse_coll(ep, E_MAP, '}', src, depth);
        case ')':
        case ']':
        case '}':
            return P_CLOSE;
        case '"':
            return parse_string(ep, src);
        case '\\': {
            /* A character: \a, \newline, \u00e9, \( ... */
            int self;
            size_t n;
            ep->pos++;
            if (ep->pos >= ep->len)
                return fail(ep, RK_EPROTO, "bad character literal");
            n = token_len(ep, ep->pos);
            ep->pos += n ? n : 1;
            self = new_node(ep, E_CHAR, src);
            if (self >= 0)
                ep->nodes[self].src_end = ep->pos;
            return self;
        }
        case '^': {
            /* Metadata: drop the map, keep the form it decorates. */
            int meta;
            ep->pos++;
            meta = parse_form(ep, depth + 1);
            if (meta == P_ERR)
                return P_ERR;
            if (meta < 0)
                return fail(ep, RK_EPROTO, "metadata without a form");
            continue;
        }
        case '\'':
        case '`':
        case '~':
        case '@':
            ep->pos++;
            if (c == '~' && ep->pos < ep->len && ep->text[ep->pos] == '@')
                ep->pos++;
            continue;
        case '#': {
            char d;
            int val, self;
            size_t n;
            if (src + 1 >= ep->len)
                return fail(ep, RK_EPROTO, "lone '#'");
            d = ep->text[src + 1];
            if (d == '{') {
                ep->pos += 2;
                return parse_coll(ep, E_SET, '}', src, depth);
            }
            if (d == '_') {
                ep->pos += 2;
                val = parse_form(ep, depth + 1);
                if (val == P_ERR)
                    return P_ERR;
                if (val < 0)
                    return fail(ep, RK_EPROTO, "#_ without a form");
                continue;
            }
            if (d == '"') {
                ep->pos++;
                return parse_string(ep, src + 1);
            }
            if (d == '#') {
                ep->pos += 2;
                return parse_token(ep, ep->pos);
            }
            /* A tag (#inst, #uuid, #jepsen.history.Op, #:ns): the value
             * that follows stands for the whole form. */
            n = token_len(ep, src + 1);
            if (n == 0)
                return fail(ep, RK_EPROTO, "bad dispatch after '#'");
            ep->pos = src + 1 + n;
            val = parse_form(ep, depth + 1);
            if (val == P_ERR)
                return P_ERR;
            if (val < 0)
                return fail(ep, RK_EPROTO, "tag without a value");
            self = new_node(ep, E_TAGGED, src);
            if (self < 0)
                return P_ERR;
            ep->nodes[self].child = val;
            ep->nodes[self].n = 1;
            ep->nodes[self].src_end = ep->pos;
            return self;
        }
        default:
            if (digit(c) || ((c == '-' || c == '+') && src + 1 < ep->len &&
                             digit(ep->text[src + 1])))
                return parse_number(ep, src);
            return parse_token(ep, src);
        }
    }
}

/* ------------------------------------------------- op maps → lc events */

struct conv {
    struct ep *ep;
    struct lc_history *h;
    struct lc_intern keys;
    struct lc_mop *mops;
    size_t cap_mops;
};

static const struct enode *node(const struct ep *ep, int i)
{
    return i >= 0 ? &ep->nodes[i] : NULL;
}

/* Strips tags: #foo x → x. */
static const struct enode *untag(const struct ep *ep, const struct enode *n)
{
    while (n != NULL && n->kind == E_TAGGED)
        n = node(ep, n->child);
    return n;
}

static bool is_kw(const struct ep *ep, const struct enode *n, const char *kw)
{
    size_t len = strlen(kw);

    return n != NULL && n->kind == E_KEYWORD &&
           n->src_end - n->src == len + 1 &&
           memcmp(ep->text + n->src + 1, kw, len) == 0;
}

static const struct enode *nth(const struct ep *ep, const struct enode *n,
                               uint32_t k)
{
    const struct enode *c = node(ep, n->child);

    while (c != NULL && k-- > 0)
        c = node(ep, c->next);
    return c;
}

static bool is_seq(const struct enode *n)
{
    return n != NULL && (n->kind == E_VECTOR || n->kind == E_LIST);
}

static bool is_scalar_val(const struct enode *n)
{
    return n != NULL && (n->kind == E_NIL || n->kind == E_INT);
}

static int conv_fail(struct conv *cv, const struct enode *at, const char *what)
{
    struct ep *ep = cv->ep;

    if (ep->rc == 0) {
        ep->rc = RK_EPROTO;
        lc__errf(ep->err, ep->errlen, "EDN line %zu: %s",
                 at != NULL ? at->line : ep->line, what);
    }
    return RK_EPROTO;
}

static int to_val(struct conv *cv, const struct enode *n, struct lc_val *out)
{
    n = untag(cv->ep, n);
    if (n == NULL || n->kind == E_NIL) {
        *out = LC_NIL;
        return 0;
    }
    if (n->kind == E_INT) {
        *out = LC_INT(n->i);
        return 0;
    }
    if (n->kind == E_BIGINT)
        return conv_fail(cv, n, "integer value out of the 64-bit range");
    return conv_fail(cv, n, "unsupported value (only integers and nil)");
}

/* Interns a key form by its source text. */
static int to_key(struct conv *cv, const struct enode *n, int64_t *out)
{
    const char *t;
    size_t len;
    bool fresh = false;
    int rc;

    n = untag(cv->ep, n);
    if (n == NULL || is_seq(n) || n->kind == E_MAP || n->kind == E_SET)
        return conv_fail(cv, n, "unsupported key");
    t = cv->ep->text + n->src;
    len = n->src_end - n->src;
    rc = lc__intern(&cv->keys, t, len, out, &fresh);
    if (rc == 0 && fresh) {
        char *name = strndup(t, len);
        if (name == NULL)
            return RK_ENOMEM;
        rc = lc_history_set_key_name(cv->h, *out, name);
        free(name);
    }
    if (rc != 0) {
        cv->ep->rc = rc;
        lc__errf(cv->ep->err, cv->ep->errlen, "out of memory");
    }
    return rc;
}

static int parse_fn(const struct ep *ep, const struct enode *n,
                    enum lc_fn *fn)
{
    int i;

    for (i = 0; i <= LC_TXN; i++) {
        if (is_kw(ep, n, lc__fn_names[i])) {
            *fn = (enum lc_fn)i;
            return 0;
        }
    }
    return RK_EPROTO;
}

static int conv_txn(struct conv *cv, const struct enode *v, struct lc_op *op)
{
    const struct enode *m;
    uint32_t k = 0;

    if (!is_seq(v) || v->n == 0 || v->n > 4096)
        return conv_fail(cv, v, ":txn value must be a non-empty list of "
                                "[f k v] micro-ops");
    if (lc__grow((void **)&cv->mops, &cv->cap_mops, v->n,
                 sizeof(*cv->mops)) != 0)
        return conv_fail(cv, v, "out of memory");
    for (m = node(cv->ep, v->child); m != NULL; m = node(cv->ep, m->next)) {
        const struct enode *mu = untag(cv->ep, m);
        struct lc_mop *mo = &cv->mops[k];
        int rc;
        if (!is_seq(mu) || mu->n != 3)
            return conv_fail(cv, m, "micro-op must be [f k v]");
        if (is_kw(cv->ep, nth(cv->ep, mu, 0), "read") ||
            is_kw(cv->ep, nth(cv->ep, mu, 0), "r"))
            mo->fn = LC_READ;
        else if (is_kw(cv->ep, nth(cv->ep, mu, 0), "write") ||
                 is_kw(cv->ep, nth(cv->ep, mu, 0), "w"))
            mo->fn = LC_WRITE;
        else
            return conv_fail(cv, m, "micro-op f must be :read or :write");
        rc = to_key(cv, nth(cv->ep, mu, 1), &mo->key);
        if (rc == 0)
            rc = to_val(cv, nth(cv->ep, mu, 2), &mo->value);
        if (rc != 0)
            return rc;
        k++;
    }
    op->mops = cv->mops;
    op->n_mops = k;
    return 0;
}

/*
 * Interprets :value for op->fn. Independent ("keyed") values are [k v]
 * tuples: for :read/:write a 2-vector, for :cas a 2-vector whose second
 * element is itself a vector.
 */
static int conv_value(struct conv *cv, const struct enode *v,
                      struct lc_op *op)
{
    const struct enode *a, *b;
    int rc;

    v = untag(cv->ep, v);
    if (op->fn == LC_TXN)
        return conv_txn(cv, v, op);
    if (v != NULL && is_seq(v) && v->n == 2) {
        a = untag(cv->ep, nth(cv->ep, v, 0));
        b = untag(cv->ep, nth(cv->ep, v, 1));
        if (op->fn == LC_CAS && is_scalar_val(a) && is_scalar_val(b)) {
            rc = to_val(cv, a, &op->value);
            return rc ? rc : to_val(cv, b, &op->value2);
        }
        /* An independent tuple. */
        rc = to_key(cv, a, &op->key);
        if (rc != 0)
            return rc;
        v = b;
        if (v != NULL && is_seq(v) && op->fn == LC_CAS) {
            if (v->n != 2)
                return conv_fail(cv, v, ":cas value must be [old new]");
            rc = to_val(cv, nth(cv->ep, v, 0), &op->value);
            return rc ? rc : to_val(cv, nth(cv->ep, v, 1), &op->value2);
        }
    }
    if (op->fn == LC_ACQUIRE || op->fn == LC_RELEASE)
        return 0;
    if (op->fn == LC_CAS) {
        if (v == NULL || v->kind == E_NIL) {
            op->value = LC_NIL;
            op->value2 = LC_NIL;
            return 0;
        }
        return conv_fail(cv, v, ":cas value must be [old new]");
    }
    return to_val(cv, v, &op->value);
}

/* Converts one op map; *added tells whether an event was appended. */
static int conv_op(struct conv *cv, const struct enode *m)
{
    struct ep *ep = cv->ep;
    const struct enode *k, *v;
    const struct enode *process = NULL, *type = NULL, *f = NULL, *value = NULL,
                       *time = NULL, *index = NULL;
    struct lc_op op;
    int rc;

    m = untag(ep, m);
    if (m == NULL || m->kind != E_MAP)
        return conv_fail(cv, m, "expected an op map");
    for (k = node(ep, m->child); k != NULL; k = node(ep, v->next)) {
        v = node(ep, k->next);
        if (is_kw(ep, k, "process"))
            process = untag(ep, v);
        else if (is_kw(ep, k, "type"))
            type = untag(ep, v);
        else if (is_kw(ep, k, "f"))
            f = untag(ep, v);
        else if (is_kw(ep, k, "value"))
            value = v;
        else if (is_kw(ep, k, "time"))
            time = untag(ep, v);
        else if (is_kw(ep, k, "index"))
            index = untag(ep, v);
    }
    if (process == NULL)
        return conv_fail(cv, m, "op map without :process");
    if (process->kind != E_INT)
        return 0; /* :nemesis and other non-client processes */
    memset(&op, 0, sizeof(op));
    op.process = process->i;
    if (is_kw(ep, type, "invoke"))
        op.type = LC_INVOKE;
    else if (is_kw(ep, type, "ok"))
        op.type = LC_OK;
    else if (is_kw(ep, type, "fail"))
        op.type = LC_FAIL;
    else if (is_kw(ep, type, "info"))
        op.type = LC_INFO;
    else
        return conv_fail(cv, m, ":type must be :invoke, :ok, :fail or :info");
    if (parse_fn(ep, f, &op.fn) != 0)
        return conv_fail(cv, m, ":f must be :read, :write, :cas, :acquire, "
                                ":release or :txn");
    op.value = LC_NIL;
    op.value2 = LC_NIL;
    rc = conv_value(cv, value, &op);
    if (rc != 0)
        return rc;
    op.time = (time != NULL && time->kind == E_INT) ? time->i : 0;
    op.index = (index != NULL && index->kind == E_INT) ? index->i : -1;
    rc = lc_history_add(cv->h, &op);
    if (rc != 0)
        return conv_fail(cv, m, rc == RK_ENOMEM ? "out of memory"
                                                : "invalid op");
    return 0;
}

int lc_read_edn(const char *text, size_t len, struct lc_history **out,
                char *err, size_t errlen)
{
    struct ep ep = {0};
    struct conv cv = {0};
    int rc, f;
    bool in_seq = false;
    char close = 0;

    ep.text = text;
    ep.len = len;
    ep.line = 1;
    ep.err = err;
    ep.errlen = errlen;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        ep.pos = 3;
    rc = lc_history_new(&cv.h);
    if (rc != 0) {
        lc__errf(err, errlen, "out of memory");
        return rc;
    }
    cv.ep = &ep;
    for (;;) {
        ep.n_nodes = 0;
        skip_ws(&ep);
        if (!in_seq && ep.pos < ep.len &&
            (ep.text[ep.pos] == '[' || ep.text[ep.pos] == '(')) {
            /* Stream the elements of a top-level vector or list. */
            close = ep.text[ep.pos] == '[' ? ']' : ')';
            ep.pos++;
            in_seq = true;
            continue;
        }
        f = parse_form(&ep, 1);
        if (f == P_ERR)
            break;
        if (f == P_EOF) {
            if (in_seq)
                fail(&ep, RK_EPROTO, "unexpected end of input in the "
                                     "top-level collection");
            break;
        }
        if (f == P_CLOSE) {
            if (!in_seq || ep.text[ep.pos] != close) {
                fail(&ep, RK_EPROTO, "unbalanced closing delimiter");
                break;
            }
            ep.pos++;
            in_seq = false;
            continue;
        }
        if (conv_op(&cv, &ep.nodes[f]) != 0)
            break;
    }
    free(ep.nodes);
    free(cv.mops);
    lc__intern_free(&cv.keys);
    if (ep.rc != 0) {
        lc_history_free(cv.h);
        return ep.rc;
    }
    *out = cv.h;
    return 0;
}
