/* Linearizability checker (WGL search) for register/cas/txn/mutex histories. */
#ifndef LINCHECK_H
#define LINCHECK_H

/*
 * rk_lincheck: an in-memory history of client operations, readers for Jepsen
 * EDN and ringkv JSON-lines histories, and a checker that decides whether the
 * history is linearizable with respect to a sequential model.
 *
 * Semantics (the same as Jepsen/Knossos):
 *   - Every operation is an invocation followed, for the same process, by at
 *     most one completion: LC_OK (it took effect, the completion carries the
 *     result), LC_FAIL (it certainly did not take effect: dropped) or LC_INFO
 *     (indeterminate: it may take effect at any time after its invocation, or
 *     never). An invocation with no completion at the end of the history is
 *     indeterminate as well.
 *   - For an LC_OK op the completion's value is used (a read's result); for an
 *     indeterminate op, the invocation's value.
 *   - The history is partitioned by key (P-compositionality): each key is
 *     checked on its own (for the multi-register model, each connected group
 *     of keys touched by common transactions). The history is linearizable iff
 *     every partition is.
 *
 * Error convention: functions return 0 or a negative RK_E* code
 * (src/common/rk_err.h); an error message goes to the caller's buffer where
 * one is taken. Bad input never crashes or asserts.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A value: a 64-bit integer, or nil (absent / unknown, see lc_options). */
struct lc_val {
    int64_t v;
    bool nil;
};

#define LC_NIL ((struct lc_val){.v = 0, .nil = true})
#define LC_INT(x) ((struct lc_val){.v = (int64_t)(x), .nil = false})

enum lc_type {
    LC_INVOKE = 0,
    LC_OK,
    LC_FAIL,
    LC_INFO,
};

enum lc_fn {
    LC_READ = 0,  /* value: the result (completion) */
    LC_WRITE,     /* value: the value written */
    LC_CAS,       /* value: expected old value, value2: new value */
    LC_ACQUIRE,   /* mutex: no value */
    LC_RELEASE,   /* mutex: no value */
    LC_TXN,       /* multi-register: mops/n_mops micro-operations */
};

/* One micro-operation of a multi-register transaction (LC_READ/LC_WRITE). */
struct lc_mop {
    enum lc_fn fn;
    int64_t key;
    struct lc_val value;
};

/*
 * One event of a history. `key` selects the register (0 when the history has
 * a single register); a txn's micro-ops carry their own keys. `time` is any
 * monotonic stamp (only reported, never used for ordering: the order of
 * events is the order in which they are added). `index` is the event's
 * position as the source knows it (-1: assigned by lc_history_add).
 */
struct lc_op {
    int64_t process;
    enum lc_type type;
    enum lc_fn fn;
    int64_t key;
    struct lc_val value;
    struct lc_val value2;
    const struct lc_mop *mops; /* LC_TXN only; copied by lc_history_add */
    uint32_t n_mops;
    int64_t time;
    int64_t index;
};

/* An append-only history of events; it owns copies of what is added. */
struct lc_history;

/* Creates an empty history. Returns 0 or RK_ENOMEM. */
int lc_history_new(struct lc_history **out);
/* Frees a history and everything it owns; NULL is a no-op. */
void lc_history_free(struct lc_history *h);
/*
 * Appends one event (copied, including mops). Events must be added in real
 * time order. Returns 0, RK_ENOMEM, or RK_EINVAL for an out-of-range enum or
 * a txn with n_mops == 0 or n_mops > 4096.
 */
int lc_history_add(struct lc_history *h, const struct lc_op *op);
/* Number of events. */
size_t lc_history_len(const struct lc_history *h);
/* Event i (i < lc_history_len), borrowed until the history is freed. */
const struct lc_op *lc_history_op(const struct lc_history *h, size_t i);
/*
 * Gives key a printable name (for reports); the readers name every key they
 * intern after its source text (":x", "5", "\"k\""). Returns 0 or RK_ENOMEM.
 */
int lc_history_set_key_name(struct lc_history *h, int64_t key,
                            const char *name);
/* The key's name, or NULL when it has none (then print the number). */
const char *lc_history_key_name(const struct lc_history *h, int64_t key);

/* ---------------------------------------------------------------- readers */

enum lc_format {
    LC_FORMAT_AUTO = 0, /* by extension (.jsonl/.json) or first byte ('{"') */
    LC_FORMAT_EDN,
    LC_FORMAT_JSONL,
};

/*
 * Reads a Jepsen/Knossos EDN history: a vector or list of op maps, or a
 * sequence of top-level op maps (one per line), optionally tagged
 * (#jepsen.history.Op{...}). Op maps carry :process, :type, :f, :value and
 * optionally :time and :index. :value is an int, nil, [old new] for :cas, a
 * list of [f k v] micro-ops for :txn, or a [key value] tuple for
 * "independent" histories. Events of non-integer processes (:nemesis) are
 * skipped. Returns 0, RK_ENOMEM, or RK_EPROTO with a message (line number)
 * in err (errlen bytes; may be NULL).
 */
int lc_read_edn(const char *text, size_t len, struct lc_history **out,
                char *err, size_t errlen);
/*
 * Reads ringkv's JSON-lines history: one object per line,
 * {"process":N,"type":"invoke|ok|fail|info","f":"read|write|cas|acquire|
 * release","key":K,"value":V,"time":T,"index":I}; V is an int, null, or
 * [old,new] for cas; K an int or a string (optional); blank lines and lines
 * starting with '#' are skipped. Returns 0, RK_ENOMEM or RK_EPROTO.
 */
int lc_read_jsonl(const char *text, size_t len, struct lc_history **out,
                  char *err, size_t errlen);
/* The format of a history: by path extension, else by its first bytes. */
enum lc_format lc_format_detect(const char *path, const char *text,
                                size_t len);
/*
 * Reads a file in the given format (LC_FORMAT_AUTO: lc_format_detect).
 * Returns 0, RK_EIO, RK_ETOOLARGE, RK_ENOMEM or RK_EPROTO.
 */
int lc_read_file(const char *path, enum lc_format fmt, struct lc_history **out,
                 char *err, size_t errlen);

/*
 * Writes h as ringkv JSON lines (readable by lc_read_jsonl). Returns 0 or
 * RK_EIO.
 */
int lc_history_write_jsonl(const struct lc_history *h, FILE *out);

/* -------------------------------------------------------------- generator */

/*
 * A generator of realistic concurrent histories: n_procs client processes
 * issue reads, writes (unique values) and cas ops on n_keys registers of a
 * simulated linearizable store; each op takes effect at a random instant
 * between its invocation and its completion, latencies have a long tail.
 * Some ops crash (:info; the op took effect or not, the process is replaced
 * by a fresh one as in Jepsen) or fail without effect. Initial values are nil
 * (ringkv semantics: check with lc_options_init_ringkv).
 */
struct lc_gen_opts {
    uint64_t seed;
    uint32_t n_ops;    /* operations (each is 2 events) */
    uint32_t n_keys;
    uint32_t n_procs;
    double p_read;     /* the rest after reads and writes are cas */
    double p_write;
    double p_info;     /* chance that an op crashes */
    double p_fail;     /* chance that an op fails without effect */
    /* Make the history non-linearizable: one ok read returns a stale
     * value (one overwritten before the read began). */
    bool corrupt;
};

/* Defaults: 10,000 ops, 50 keys, 20 processes, 45% reads, 35% writes. */
void lc_gen_opts_init(struct lc_gen_opts *o);
/* Generates a history. Returns 0, RK_ENOMEM or RK_EINVAL (zero sizes). */
int lc_gen_register(const struct lc_gen_opts *o, struct lc_history **out);

/* ---------------------------------------------------------------- checker */

enum lc_model {
    LC_MODEL_AUTO = 0,      /* txn → multi-register, acquire/release → mutex,
                               else cas-register */
    LC_MODEL_REGISTER,      /* read/write */
    LC_MODEL_CAS_REGISTER,  /* read/write/cas */
    LC_MODEL_MULTI_REGISTER,/* txn of reads and writes over several keys */
    LC_MODEL_MUTEX,         /* acquire/release, initially free */
};

enum lc_verdict {
    LC_VALID = 0,
    LC_INVALID = 1,
    LC_UNKNOWN = 2, /* a budget ran out: no claim either way */
};

struct lc_options {
    enum lc_model model;
    /* Initial value of every register (Knossos' test corpus uses 0). */
    struct lc_val initial;
    /*
     * true (Knossos): a read whose result is nil read *something unknown*
     * and matches any state. false (ringkv, etcd/porcupine): nil means the
     * key is absent, and matches only a nil state.
     */
    bool nil_read_matches_any;
    /* Wall-clock budget for the whole check, seconds; 0 = none. */
    double time_limit_s;
    /* Budget for the memo table of one partition, bytes; 0 = 1 GiB. */
    size_t memory_limit;
};

/* Knossos defaults: auto model, initial 0, nil reads match any state. */
void lc_options_init_knossos(struct lc_options *o);
/* ringkv defaults: auto model, initial nil (absent), nil reads mean absent. */
void lc_options_init_ringkv(struct lc_options *o);

/* Maximum number of distinct model states recorded at the stuck point. */
#define LC_MAX_STATES 16

struct lc_result {
    enum lc_verdict verdict;
    enum lc_model model;   /* the model used (after LC_MODEL_AUTO) */
    size_t n_ops;          /* operations checked (failed ones excluded) */
    size_t n_partitions;
    uint64_t n_steps;      /* search steps over all partitions */
    size_t peak_memo;      /* largest memo table (entries) of a partition */
    double elapsed_s;
    char reason[128];      /* for LC_UNKNOWN: which budget ran out */

    /* LC_INVALID only: where the search of the failing partition got stuck. */
    int64_t bad_key;            /* the partition's (first) key */
    /* History event indices (into lc_history_op) of the invocations of: */
    size_t *prefix;             /* the longest linearizable prefix, in
                                   linearization order */
    size_t n_prefix;
    size_t stuck_op;            /* the first op that could not be placed */
    size_t *window;             /* stuck_op and every op concurrent with
                                   it (overlapping its interval), by
                                   invocation time */
    bool *window_in_prefix;     /* window[i] is in the prefix above */
    size_t n_window;
    /* The model states that were tried at the stuck point. */
    struct lc_val states[LC_MAX_STATES]; /* mutex: 0 free, 1 held; for the
                                   multi-register, state of bad_key only */
    size_t n_states;
};

/*
 * Checks h. opt may be NULL (Knossos defaults). On success returns 0 and
 * fills res (free it with lc_result_free). Returns RK_ENOMEM, or RK_EINVAL
 * with a message in err when the history does not fit the model (say a cas
 * in a register history, a completion without an invocation).
 * A budget that runs out gives LC_UNKNOWN, never a wrong verdict.
 * Indeterminate writes and cas ops whose new value no other kept op ever
 * observes are treated as never applied (always a valid choice; see
 * README.md), which keeps crashed ops from making the search exponential.
 */
int lc_check(const struct lc_history *h, const struct lc_options *opt,
             struct lc_result *res, char *err, size_t errlen);
/* Frees what lc_check allocated in res; res may then be reused. */
void lc_result_free(struct lc_result *res);

/* Human-readable report (verdict, stats, and the violation if any). */
void lc_result_print(const struct lc_history *h, const struct lc_result *res,
                     FILE *out);
/* The same as one JSON object followed by a newline. */
void lc_result_print_json(const struct lc_history *h,
                          const struct lc_result *res, FILE *out);
/* Prints one event in EDN form ({:process 1, :type :ok, ...}). */
void lc_op_print(const struct lc_history *h, const struct lc_op *op,
                 FILE *out);

/* Names: "register", "cas-register", "multi-register", "mutex", "auto". */
const char *lc_model_name(enum lc_model m);
/* Parses a model name; returns 0 or RK_EINVAL. */
int lc_model_parse(const char *name, enum lc_model *out);
/* "valid", "invalid", "unknown". */
const char *lc_verdict_name(enum lc_verdict v);

#endif
