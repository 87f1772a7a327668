/* Fuzz entry points shared by the libFuzzer targets and the corpus replay. */
#ifndef FUZZ_ENTRY_H
#define FUZZ_ENTRY_H

/*
 * Each entry takes arbitrary bytes, runs a decoder on them, and checks the
 * decoder's promises with RK_ASSERT (abort = finding): no crash, no
 * unbounded allocation (ASan's allocation limit catches those), results
 * that re-encode and decode to the same thing, and the same frames whatever
 * the slicing. They always return 0 (libFuzzer's convention).
 */

#include <stddef.h>
#include <stdint.h>

/* rk_frame decoder. Byte 0 picks the frame limit, byte 1 seeds how the rest
 * is sliced; the rest is the stream. */
int rk_fuzz_frame(const uint8_t *data, size_t size);
/* raft_codec: the input as a PeerBatch and as a PeerHello. */
int rk_fuzz_peer(const uint8_t *data, size_t size);
/* Client messages: the input as a Request, a Response and a ShardMap. */
int rk_fuzz_client(const uint8_t *data, size_t size);
/* Storage: the input as a WAL record (a batch) and as a KV command. */
int rk_fuzz_store(const uint8_t *data, size_t size);

/* The same, returning how many of the decoders tried accepted the input
 * (the replay test checks its corpus holds both accepted and refused
 * inputs, so that it cannot pass by rejecting everything). */
int rk_fuzz_frame_count(const uint8_t *data, size_t size);
int rk_fuzz_peer_count(const uint8_t *data, size_t size);
int rk_fuzz_client_count(const uint8_t *data, size_t size);
int rk_fuzz_store_count(const uint8_t *data, size_t size);

/* libFuzzer's hook, defined by each fuzz_<name>.c target. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
