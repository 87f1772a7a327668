/* Replays the shard fuzz entry on generated maps, their mutations and the
 * committed corpus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>

#include "rk_rand.h"
#include "shard.h"
#include "shard_fuzz.h"
#include "shard_test_util.h"

/* Encodes m without its checksum into a malloc'd buffer. */
static uint8_t *body_of(const struct shard_map *m, size_t *len)
{
    size_t size = shard_map_encoded_size(m), n;
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(shard_map_encode(m, buf, size, &n), 0);
    *len = size - 8;
    return buf;
}

/* A few maps with different features, as seeds. */
static int seed_map(int i, struct shard_map *m)
{
    struct rk_rand r;
    rk_rand_seed(&r, (uint64_t)i);
    uint32_t n = 1 + (uint32_t)rk_rand_below(&r, 7);
    uint32_t s = 1 + (uint32_t)rk_rand_below(&r, 12);
    if (test_map(m, n, s, n < 3 ? n : 3, 1 + (uint32_t)(i % 4)) != 0)
        return -1;
    if (i % 3 == 1) {
        struct shard_node nd = test_node(n + 1);
        assert_int_equal(shard_map_node_add(m, &nd), 0);
    }
    if (i % 4 == 2 && n > 1)
        assert_int_equal(shard_map_node_set_state(m, 1, SHARD_NODE_DRAINING),
                         0);
    if (i % 5 == 3) {
        shard_id rid;
        assert_int_equal(shard_map_split_begin(m, 1, &rid, NULL, NULL), 0);
    }
    if (i % 7 == 4 && n > 2)
        assert_int_equal(shard_map_node_set_state(m, 2, SHARD_NODE_REMOVED), 0);
    return 0;
}

static void test_seeds_and_mutations(void **state)
{
    (void)state;
    const char *dir = getenv("SHARD_WRITE_CORPUS"); /* fuzzer seeds */
    struct rk_rand r;
    rk_rand_seed(&r, 99);
    uint32_t decoded = 0, tried = 0;
    for (int i = 0; i < 24; i++) {
        struct shard_map m;
        assert_int_equal(seed_map(i, &m), 0);
        size_t len;
        uint8_t *body = body_of(&m, &len);
        assert_int_equal(shard_fuzz_map(body, len), 1);
        if (dir != NULL) {
            char path[512];
            snprintf(path, sizeof(path), "%s/seed-%02d", dir, i);
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(body, 1, len, f), len);
            fclose(f);
        }
        /* Mutations: flipped, overwritten, dropped and repeated bytes. */
        uint8_t *mut = malloc(len + 64);
        assert_non_null(mut);
        for (int k = 0; k < 400; k++) {
            size_t n = len;
            memcpy(mut, body, len);
            int edits = 1 + (int)rk_rand_below(&r, 4);
            for (int e = 0; e < edits && n > 0; e++) {
                size_t at = rk_rand_below(&r, n);
                switch (rk_rand_below(&r, 4)) {
                case 0:
                    mut[at] ^= (uint8_t)(1u << rk_rand_below(&r, 8));
                    break;
                case 1:
                    mut[at] = (uint8_t)rk_rand_next(&r);
                    break;
                case 2:
                    memmove(mut + at, mut + at + 1, n - at - 1);
                    n--;
                    break;
                default:
                    if (n < len + 63) {
                        memmove(mut + at + 1, mut + at, n - at);
                        n++;
                    }
                }
            }
            decoded += (uint32_t)shard_fuzz_map(mut, n);
            tried++;
        }
        free(mut);
        free(body);
        shard_map_free(&m);
    }
    printf("shard fuzz replay: %u mutations, %u still valid maps\n", tried,
           decoded);
}

/* Every file of the committed corpus (fuzzer findings stay regressions). */
static void test_corpus(void **state)
{
    (void)state;
    DIR *d = opendir(RK_SHARD_CORPUS);
    if (d == NULL) {
        skip();
        return;
    }
    struct dirent *e;
    uint32_t files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", RK_SHARD_CORPUS, e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        uint8_t *buf = malloc(1u << 20);
        assert_non_null(buf);
        size_t n = fread(buf, 1, 1u << 20, f);
        fclose(f);
        shard_fuzz_map(buf, n);
        free(buf);
        files++;
    }
    closedir(d);
    printf("shard fuzz corpus: %u files\n", files);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeds_and_mutations),
        cmocka_unit_test(test_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
