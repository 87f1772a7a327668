/* Reading a history file: format detection and dispatch to the readers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lc_internal.h"
#include "rk_err.h"

/* Histories above this size are refused rather than half-read. */
#define LC_MAX_FILE ((size_t)4 << 30)

enum lc_format lc_format_detect(const char *path, const char *text,
                                size_t len)
{
    size_t n = path != NULL ? strlen(path) : 0, i = 0;

    if (n >= 6 && strcmp(path + n - 6, ".jsonl") == 0)
        return LC_FORMAT_JSONL;
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
        return LC_FORMAT_JSONL;
    if (n >= 4 && strcmp(path + n - 4, ".edn") == 0)
        return LC_FORMAT_EDN;
    while (i < len && (text[i] == ' ' || text[i] == '\t' ||
                       text[i] == '\r' || text[i] == '\n'))
        i++;
    /* An EDN map starts with '{' too, but its first key is a keyword. */
    if (i + 1 < len && text[i] == '{') {
        i++;
        while (i < len && (text[i] == ' ' || text[i] == '\t'))
            i++;
        if (i < len && text[i] == '"')
            return LC_FORMAT_JSONL;
    }
    return LC_FORMAT_EDN;
}

int lc_read_file(const char *path, enum lc_format fmt, struct lc_history **out,
                 char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    int rc = 0;

    if (f == NULL) {
        lc__errf(err, errlen, "%s: %s", path, strerror(errno));
        return RK_EIO;
    }
    for (;;) {
        if (lc__grow((void **)&buf, &cap, len + 65536, 1) != 0) {
            lc__errf(err, errlen, "%s: out of memory", path);
            rc = RK_ENOMEM;
            goto out;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
        if (len > LC_MAX_FILE) {
            lc__errf(err, errlen, "%s: larger than %zu bytes", path,
                     LC_MAX_FILE);
            rc = RK_ETOOLARGE;
            goto out;
        }
    }
    if (ferror(f)) {
        lc__errf(err, errlen, "%s: read error", path);
        rc = RK_EIO;
        goto out;
    }
    if (fmt == LC_FORMAT_AUTO)
        fmt = lc_format_detect(path, buf, len);
    if (fmt == LC_FORMAT_JSONL)
        rc = lc_read_jsonl(buf, len, out, err, errlen);
    else
        rc = lc_read_edn(buf, len, out, err, errlen);
out:
    free(buf);
    fclose(f);
    return rc;
}

static void write_val(struct lc_val v, FILE *out)
{
    if (v.nil)
        fputs("null", out);
    else
        fprintf(out, "%lld", (long long)v.v);
}

static void write_key(const struct lc_history *h, int64_t key, FILE *out)
{
    const char *name = lc_history_key_name(h, key);
    const char *p;

    if (name == NULL) {
        fprintf(out, "%lld", (long long)key);
        return;
    }
    fputc('"', out);
    for (p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

int lc_history_write_jsonl(const struct lc_history *h, FILE *out)
{
    size_t i, n = lc_history_len(h);
    uint32_t j;

    for (i = 0; i < n; i++) {
        const struct lc_op *op = lc_history_op(h, i);
        fprintf(out, "{\"process\":%lld,\"type\":\"%s\",\"f\":\"%s\",",
                (long long)op->process, lc__type_name(op->type),
                lc__fn_name(op->fn));
        if (op->fn != LC_TXN) {
            fputs("\"key\":", out);
            write_key(h, op->key, out);
            fputc(',', out);
        }
        fputs("\"value\":", out);
        if (op->fn == LC_CAS) {
            fputc('[', out);
            write_val(op->value, out);
            fputc(',', out);
            write_val(op->value2, out);
            fputc(']', out);
        } else if (op->fn == LC_TXN) {
            fputc('[', out);
            for (j = 0; j < op->n_mops; j++) {
                fprintf(out, "%s[\"%s\",", j ? "," : "",
                        lc__fn_name(op->mops[j].fn));
                write_key(h, op->mops[j].key, out);
                fputc(',', out);
                write_val(op->mops[j].value, out);
                fputc(']', out);
            }
            fputc(']', out);
        } else {
            write_val(op->value, out);
        }
        fprintf(out, ",\"time\":%lld,\"index\":%lld}\n", (long long)op->time,
                (long long)op->index);
    }
    return ferror(out) ? RK_EIO : 0;
}
