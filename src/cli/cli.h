/* ringkv, the command-line tool: shared pieces of its commands. */
#ifndef RK_CLI_H
#define RK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ringkv/ringkv.h"

/* Exit codes (documented in `ringkv help`). */
enum {
    CLI_OK = 0,
    CLI_NOT_FOUND = 1,   /* key not found, cas mismatch */
    CLI_USAGE = 2,       /* bad command line */
    CLI_UNAVAILABLE = 3, /* no node answered in time */
    CLI_REFUSED = 4,     /* the cluster refused: too large, invalid */
    CLI_INTERNAL = 5,    /* anything else */
};

struct cli {
    ringkv_options opts;
    const char *endpoints;
    unsigned timeout_ms;
    bool json;
    int argc; /* the command's arguments (argv[0] is the command) */
    char **argv;
};

/* Prints "ringkv: <fmt>" to stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Maps a library status to an exit code, printing the error if any. */
int cli_fail(ringkv_t *c, const char *what, ringkv_status st);
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cli_open(struct cli *cl, ringkv_t **c);
/* Parses "250ms", "2s", "1m", "1.5s" or a bare number of ms. */
bool cli_parse_duration_ms(const char *s, unsigned *ms);
bool cli_parse_u64(const char *s, uint64_t *v);
/* A JSON string of bytes: the text when it is valid UTF-8 without NULs,
 * else null (the caller adds a base64 field). */
json_t *cli_json_bytes(const void *p, size_t n);
char *cli_base64(const void *p, size_t n);
/* Prints a JSON value on one line and frees it. */
void cli_json_print(json_t *j);
/* Reads all of stdin (binary-safe). */
int cli_read_stdin(char **buf, size_t *len);

int cli_bench(struct cli *cl);

#endif
