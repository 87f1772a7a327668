/* libFuzzer target: shard map decoder, encoder and planner (RK_FUZZ=ON, clang).
 */
#include <stddef.h>
#include <stdint.h>

#include "shard_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shard_fuzz_map(data, size);
    return 0;
}
