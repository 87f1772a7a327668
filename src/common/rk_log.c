/* Leveled logging: one line per call, timestamped, written atomically. */
#include "rk_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum rk_log_level log_level = RK_LOG_INFO;
static char log_prefix[64];

void rk_log_set_level(enum rk_log_level level) { log_level = level; }

enum rk_log_level rk_log_get_level(void) { return log_level; }

int rk_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "verbose", "info", "warn", "error"};
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

void rk_log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof log_prefix, "%s", prefix ? prefix : "");
}

void rk_log_write(enum rk_log_level level, const char *file, int line,
                  const char *fmt, ...)
{
    static const char marks[] = "DVIWE";
    char buf[1024];
    struct timespec ts;
    struct tm tm;
    const char *base = strrchr(file, '/');
    int n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(buf, sizeof buf,
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c %s%s%s:%d ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 marks[level > 4 ? 4 : level], log_prefix,
                 log_prefix[0] ? " " : "", base ? base + 1 : file, line);
    if (n < 0 || n >= (int)sizeof buf)
        n = 0;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    /* One write(2) per line so lines of concurrent threads do not interleave. */
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}
