/* Human-readable and JSON reports of a check, and EDN printing of events. */
#include <string.h>

#include "lc_internal.h"

#define PRINT_PREFIX_TAIL 8
#define PRINT_WINDOW_MAX 40

static void print_val(struct lc_val v, FILE *out)
{
    if (v.nil)
        fputs("nil", out);
    else
        fprintf(out, "%lld", (long long)v.v);
}

static void print_key(const struct lc_history *h, int64_t key, FILE *out)
{
    const char *name = lc_history_key_name(h, key);

    if (name != NULL)
        fputs(name, out);
    else
        fprintf(out, "%lld", (long long)key);
}

void lc_op_print(const struct lc_history *h, const struct lc_op *op,
                 FILE *out)
{
    uint32_t i;

    fprintf(out, "{:process %lld, :type :%s, :f :%s", (long long)op->process,
            lc__type_name(op->type), lc__fn_name(op->fn));
    if (op->fn != LC_TXN &&
        (op->key != 0 || lc_history_key_name(h, op->key) != NULL)) {
        fputs(", :key ", out);
        print_key(h, op->key, out);
    }
    switch (op->fn) {
    case LC_CAS:
        fputs(", :value [", out);
        print_val(op->value, out);
        fputc(' ', out);
        print_val(op->value2, out);
        fputc(']', out);
        break;
    case LC_TXN:
        fputs(", :value [", out);
        for (i = 0; i < op->n_mops; i++) {
            fprintf(out, "%s[:%s ", i ? " " : "",
                    lc__fn_name(op->mops[i].fn));
            print_key(h, op->mops[i].key, out);
            fputc(' ', out);
            print_val(op->mops[i].value, out);
            fputc(']', out);
        }
        fputc(']', out);
        break;
    case LC_ACQUIRE:
    case LC_RELEASE:
        break;
    default:
        fputs(", :value ", out);
        print_val(op->value, out);
        break;
    }
    fprintf(out, ", :index %lld}", (long long)op->index);
}

/* The completion event of the invocation at event inv, or SIZE_MAX. */
static size_t find_completion(const struct lc_history *h, size_t inv)
{
    const struct lc_op *iv = lc_history_op(h, inv);
    size_t i, n = lc_history_len(h);

    for (i = inv + 1; i < n; i++) {
        const struct lc_op *ev = lc_history_op(h, i);
        if (ev->process != iv->process)
            continue;
        return ev->type == LC_INVOKE ? SIZE_MAX : i;
    }
    return SIZE_MAX;
}

/* Prints the invocation at inv and its completion, after a marker. */
static void print_pair(const struct lc_history *h, size_t inv,
                       const char *mark, FILE *out)
{
    size_t c = find_completion(h, inv);

    fprintf(out, "  %s ", mark);
    lc_op_print(h, lc_history_op(h, inv), out);
    if (c != SIZE_MAX) {
        fputs("\n        -> ", out);
        lc_op_print(h, lc_history_op(h, c), out);
        if (lc_history_op(h, c)->type == LC_INFO)
            fputs("  (indeterminate)", out);
    } else {
        fputs("  (never completed: indeterminate)", out);
    }
    fputc('\n', out);
}

static void print_state(const struct lc_result *res, size_t i, FILE *out)
{
    if (res->model == LC_MODEL_MUTEX)
        fputs(res->states[i].v ? "held" : "free", out);
    else
        print_val(res->states[i], out);
}

void lc_result_print(const struct lc_history *h, const struct lc_result *res,
                     FILE *out)
{
    size_t i, from;

    fprintf(out,
            "%s: %zu ops, %zu partition(s), model %s, %llu search steps, "
            "peak memo %zu entries, %.3f ms\n",
            lc_verdict_name(res->verdict), res->n_ops, res->n_partitions,
            lc_model_name(res->model), (unsigned long long)res->n_steps,
            res->peak_memo, res->elapsed_s * 1e3);
    if (res->verdict == LC_UNKNOWN)
        fprintf(out, "unknown: %s\n", res->reason);
    if (res->verdict != LC_INVALID)
        return;

    fputs("key ", out);
    print_key(h, res->bad_key, out);
    fputs(" is not linearizable.\n", out);
    fprintf(out, "Longest linearizable prefix: %zu op(s)", res->n_prefix);
    from = res->n_prefix > PRINT_PREFIX_TAIL ? res->n_prefix - PRINT_PREFIX_TAIL
                                             : 0;
    if (res->n_prefix == 0)
        fputs(".\n", out);
    else if (from > 0)
        fprintf(out, "; its last %d, in linearization order:\n",
                PRINT_PREFIX_TAIL);
    else
        fputs(", in linearization order:\n", out);
    for (i = from; i < res->n_prefix; i++)
        print_pair(h, res->prefix[i], " ", out);
    fputs("The first op that could not be placed:\n", out);
    print_pair(h, res->stuck_op, "!", out);
    fprintf(out,
            "The window that cannot be linearized: the %zu op(s) concurrent "
            "with it\n(* = in the prefix above, ! = could not be placed, "
            "- = not yet linearized):\n",
            res->n_window);
    for (i = 0; i < res->n_window && i < PRINT_WINDOW_MAX; i++)
        print_pair(h, res->window[i],
                   res->window[i] == res->stuck_op ? "!"
                   : res->window_in_prefix[i]      ? "*"
                                                   : "-",
                   out);
    if (res->n_window > PRINT_WINDOW_MAX)
        fprintf(out, "    ... and %zu more\n",
                res->n_window - PRINT_WINDOW_MAX);
    fputs("Model states tried at that point: ", out);
    for (i = 0; i < res->n_states; i++) {
        if (i)
            fputs(", ", out);
        print_state(res, i, out);
    }
    if (res->n_states == LC_MAX_STATES)
        fprintf(out, " (the first %d)", LC_MAX_STATES);
    fputc('\n', out);
}

static void json_str(const char *s, FILE *out)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void json_idx_array(const struct lc_history *h, const size_t *a,
                           size_t n, FILE *out)
{
    size_t i;

    fputc('[', out);
    for (i = 0; i < n; i++)
        fprintf(out, "%s%lld", i ? "," : "",
                (long long)lc_history_op(h, a[i])->index);
    fputc(']', out);
}

void lc_result_print_json(const struct lc_history *h,
                          const struct lc_result *res, FILE *out)
{
    size_t i, from;
    const char *kname;

    fprintf(out,
            "{\"verdict\":\"%s\",\"model\":\"%s\",\"ops\":%zu,"
            "\"partitions\":%zu,\"steps\":%llu,\"peak_memo\":%zu,"
            "\"elapsed_ms\":%.3f",
            lc_verdict_name(res->verdict), lc_model_name(res->model),
            res->n_ops, res->n_partitions, (unsigned long long)res->n_steps,
            res->peak_memo, res->elapsed_s * 1e3);
    if (res->verdict == LC_UNKNOWN) {
        fputs(",\"reason\":", out);
        json_str(res->reason, out);
    }
    if (res->verdict == LC_INVALID) {
        kname = lc_history_key_name(h, res->bad_key);
        fputs(",\"key\":", out);
        if (kname != NULL)
            json_str(kname, out);
        else
            fprintf(out, "%lld", (long long)res->bad_key);
        fprintf(out, ",\"stuck_index\":%lld,\"prefix_len\":%zu,",
                (long long)lc_history_op(h, res->stuck_op)->index,
                res->n_prefix);
        from = res->n_prefix > PRINT_PREFIX_TAIL
                   ? res->n_prefix - PRINT_PREFIX_TAIL
                   : 0;
        fputs("\"prefix_tail\":", out);
        json_idx_array(h, res->prefix + from, res->n_prefix - from, out);
        fputs(",\"window\":", out);
        json_idx_array(h, res->window, res->n_window, out);
        fputs(",\"window_in_prefix\":[", out);
        for (i = 0; i < res->n_window; i++)
            fprintf(out, "%s%s", i ? "," : "",
                    res->window_in_prefix[i] ? "true" : "false");
        fputc(']', out);
        fputs(",\"states\":[", out);
        for (i = 0; i < res->n_states; i++) {
            if (i)
                fputc(',', out);
            if (res->model == LC_MODEL_MUTEX)
                fputs(res->states[i].v ? "\"held\"" : "\"free\"", out);
            else if (res->states[i].nil)
                fputs("null", out);
            else
                fprintf(out, "%lld", (long long)res->states[i].v);
        }
        fputc(']', out);
    }
    fputs("}\n", out);
}
