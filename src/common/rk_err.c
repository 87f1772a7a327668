/* The error table: messages and names generated from RK_ERR_MAP. */
#include "rk_err.h"

#include <stdio.h>
#include <string.h>

const char *rk_strerror(int err)
{
    switch (err) {
#define RK__ERR_MSG(name, val, msg, wire)                                      \
    case val:                                                                  \
        return msg;
        RK_ERR_MAP(RK__ERR_MSG)
#undef RK__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *rk_err_name(int err)
{
    switch (err) {
#define RK__ERR_NAME(name, val, msg, wire)                                     \
    case val:                                                                  \
        return #name;
        RK_ERR_MAP(RK__ERR_NAME)
#undef RK__ERR_NAME
    default:
        return "RK_E?";
    }
}

const char *rk_err_wire_name(int err)
{
    switch (err) {
#define RK__ERR_WIRE(name, val, msg, wire)                                     \
    case val:                                                                  \
        return #wire;
        RK_ERR_MAP(RK__ERR_WIRE)
#undef RK__ERR_WIRE
    default:
        return "INTERNAL";
    }
}

void rk_errf(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, RK_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void rk_errwrap(char *buf, const char *fmt, ...)
{
    char prefix[RK_ERRMSG_SIZE];
    char old[RK_ERRMSG_SIZE];
    va_list ap;

    memcpy(old, buf, RK_ERRMSG_SIZE);
    old[RK_ERRMSG_SIZE - 1] = '\0';
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t n = strlen(prefix);
    if (n > RK_ERRMSG_SIZE - 3)
        n = RK_ERRMSG_SIZE - 3;
    memcpy(buf, prefix, n);
    buf[n++] = ':';
    buf[n++] = ' ';
    size_t m = strlen(old);
    if (m > RK_ERRMSG_SIZE - 1 - n)
        m = RK_ERRMSG_SIZE - 1 - n;
    memcpy(buf + n, old, m);
    buf[n + m] = '\0';
}
