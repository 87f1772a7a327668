/* Private helpers shared by the files of rk_lincheck (not installed). */
#ifndef LC_INTERNAL_H
#define LC_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lincheck.h"

/* The names of op types and functions in histories (EDN keywords without
 * the colon, JSON strings), indexed by enum lc_type and enum lc_fn. */
extern const char *const lc__type_names[LC_INFO + 1];
extern const char *const lc__fn_names[LC_TXN + 1];
/* Those names, or "?" for a value out of range. */
const char *lc__type_name(enum lc_type t);
const char *lc__fn_name(enum lc_fn fn);

/* Formats an error message into err (errlen bytes) when err is not NULL. */
void lc__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Grows *arr (elements of size elem) so that it holds at least need. */
int lc__grow(void **arr, size_t *cap, size_t need, size_t elem);

/* splitmix64 finaliser: a good 64-bit mixer. */
static inline uint64_t lc__mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* An open-addressing map from int64 keys to size_t values. */
struct lc_imap {
    int64_t *keys;
    size_t *vals;
    uint8_t *used;
    size_t cap; /* power of two or 0 */
    size_t n;
};

void lc__imap_free(struct lc_imap *m);
/* Looks key up; returns a pointer to its value or NULL. */
size_t *lc__imap_get(const struct lc_imap *m, int64_t key);
/* Inserts or overwrites. Returns 0 or RK_ENOMEM. */
int lc__imap_put(struct lc_imap *m, int64_t key, size_t val);

/* Interns strings (key texts) to dense ids 1, 2, 3... */
struct lc_intern {
    uint32_t *slots; /* 0 empty, else string index + 1 */
    size_t cap;      /* power of two or 0 */
    char **strs;
    size_t *lens;
    size_t n;
    size_t cap_strs;
};

void lc__intern_free(struct lc_intern *t);
/*
 * Returns the id of s[0..len) in *id, adding it if new (*fresh = true).
 * Returns 0 or RK_ENOMEM.
 */
int lc__intern(struct lc_intern *t, const char *s, size_t len, int64_t *id,
               bool *fresh);

#endif
