/* libFuzzer target: the history readers and the checker on any bytes. */
#include <stddef.h>
#include <stdint.h>

#include "lincheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lc_history *h = NULL;
    struct lc_options opt;
    struct lc_result res;
    char err[256];
    int pass;

    for (pass = 0; pass < 2; pass++) {
        int rc = pass == 0 ? lc_read_edn((const char *)data, size, &h, err,
                                         sizeof(err))
                           : lc_read_jsonl((const char *)data, size, &h, err,
                                           sizeof(err));
        if (rc != 0)
            continue;
        lc_options_init_knossos(&opt);
        opt.time_limit_s = 0.5;
        opt.memory_limit = 16 << 20;
        if (lc_check(h, &opt, &res, err, sizeof(err)) == 0)
            lc_result_free(&res);
        lc_history_free(h);
        h = NULL;
    }
    return 0;
}
