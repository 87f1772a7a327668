/* Always-on invariant assertions (Redis serverAssert); never for input checks. */
#ifndef RK_ASSERT_H
#define RK_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define RK_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__,     \
                    __LINE__, __func__, #cond);                                \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define RK_UNREACHABLE() RK_ASSERT(!"unreachable")

#ifndef container_of
#define container_of(ptr, type, member)                                        \
    ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

#endif
