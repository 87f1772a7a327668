/* Leveled logging to stderr with a per-process prefix (node id). */
#ifndef RK_LOG_H
#define RK_LOG_H

enum rk_log_level {
    RK_LOG_DEBUG = 0,
    RK_LOG_VERBOSE = 1,
    RK_LOG_INFO = 2,
    RK_LOG_WARN = 3,
    RK_LOG_ERROR = 4,
};

/* Messages below this level are dropped; default RK_LOG_INFO. */
void rk_log_set_level(enum rk_log_level level);
enum rk_log_level rk_log_get_level(void);
/* Parses "debug", "verbose", "info", "warn", "error"; returns -1 if unknown. */
int rk_log_parse_level(const char *s);
/* A short tag added to every line, e.g. "node=2". */
void rk_log_set_prefix(const char *prefix);

void rk_log_write(enum rk_log_level level, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define rk_log(level, ...)                                                     \
    do {                                                                       \
        if ((level) >= rk_log_get_level())                                     \
            rk_log_write((level), __FILE__, __LINE__, __VA_ARGS__);            \
    } while (0)

#endif
