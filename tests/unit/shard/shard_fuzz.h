/* Fuzz entry point of rk_shard: decode a map, re-encode it, plan and simulate
 * on it. */
#ifndef SHARD_FUZZ_H
#define SHARD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/*
 * `data` is an encoded map WITHOUT its trailing checksum (the entry adds
 * it, so a fuzzer reaches the parser instead of stopping at the checksum).
 * If it decodes: encoding it again must give the same bytes, and a plan
 * computed on it must apply step by step with every shard keeping a live
 * quorum, ending balanced unless some shard was stuck. Aborts on any
 * violation; returns 1 if the input decoded, else 0.
 */
int shard_fuzz_map(const uint8_t *data, size_t len);

#endif
