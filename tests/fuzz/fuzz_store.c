/* libFuzzer target: rk_fuzz_store (see fuzz_entry.h). */
#include "fuzz_entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return rk_fuzz_store(data, size);
}
