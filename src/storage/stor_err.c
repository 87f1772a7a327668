/* Translation of LMDB and errno failures into RK_E* codes, and fail-stop. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "rk_log.h"
#include "stor_int.h"

int stor__from_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return RK_ENOTFOUND;
    case MDB_KEYEXIST:
        return RK_EEXIST;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
        return RK_ENOSPC;
    case MDB_CORRUPTED:
    case MDB_PANIC:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_TXN:
    case MDB_BAD_DBI:
        return RK_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return RK_EVERSION;
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_DBS_FULL:
    case EAGAIN:
    case EBUSY:
        return RK_EBUSY;
    case MDB_BAD_VALSIZE:
    case MDB_BAD_RSLOT:
    case EINVAL:
        return RK_EINVAL;
    case ENOMEM:
        return RK_ENOMEM;
    case ENOENT:
        return RK_ENOTFOUND;
    case EEXIST:
        return RK_EEXIST;
    default:
        return RK_EIO;
    }
}

int stor__fail(struct stor *s, int err, const char *fmt, ...)
{
    char msg[RK_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&s->mu);
    int first = atomic_load(&s->failed) == 0;
    if (first) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", msg);
        atomic_store(&s->failed, err);
    }
    pthread_mutex_unlock(&s->mu);
    if (first)
        rk_log(RK_LOG_ERROR,
               "storage %s: fail-stop (%s): %s; nothing is acknowledged from "
               "now on",
               s->path, rk_err_name(err), msg);
    return err;
}

int stor_failed(const struct stor *s)
{
    return atomic_load(&((struct stor *)s)->failed);
}

const char *stor_errmsg(const struct stor *s)
{
    return s->errmsg;
}
