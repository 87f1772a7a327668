/* Replays the committed corpus through the fuzz entry points (a ctest). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_entry.h"

/*
 * Usage: fuzz_replay <corpus-dir>. Every file of <corpus-dir>/frame,
 * <corpus-dir>/peer, <corpus-dir>/client and <corpus-dir>/store goes
 * through the entry of its directory, and through the others as well
 * (cheap extra coverage). A
 * finding aborts (RK_ASSERT or a sanitizer). A missing corpus, or one whose
 * inputs are all accepted or all refused by their own decoder, fails, so the
 * test cannot pass by running nothing or by a decoder refusing everything.
 */

#define REPLAY_MAX_INPUT (8u << 20)

typedef int (*entry_fn)(const uint8_t *, size_t);

static const struct {
    const char *dir;
    entry_fn fn;
} entries[] = {
    {"frame", rk_fuzz_frame_count},
    {"peer", rk_fuzz_peer_count},
    {"client", rk_fuzz_client_count},
    {"store", rk_fuzz_store_count},
};
#define N_ENTRIES (sizeof entries / sizeof entries[0])

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    uint8_t *buf = malloc(REPLAY_MAX_INPUT);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX_INPUT, f) : 0;
    int bad = buf == NULL || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir through all entries, `own` first; counts
 * the inputs its own entry accepted. */
static long replay_dir(const char *root, size_t own, long *accepted)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, entries[own].dir);
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "fuzz_replay: cannot open %s\n", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(names, cap * sizeof(*p));
            if (p == NULL)
                abort();
            names = p;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_names);
    long ran = 0;
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        uint8_t *buf;
        size_t len;
        if (read_file(path, &buf, &len) != 0) {
            fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
            return -1;
        }
        *accepted += entries[own].fn(buf, len) > 0;
        for (size_t k = 0; k < N_ENTRIES; k++)
            if (k != own)
                entries[k].fn(buf, len);
        free(buf);
        ran++;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    printf("fuzz_replay: %s: %ld inputs, %ld accepted\n", entries[own].dir, ran,
           *accepted);
    return ran;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
        return 2;
    }
    for (size_t k = 0; k < N_ENTRIES; k++) {
        long accepted = 0;
        long ran = replay_dir(argv[1], k, &accepted);
        if (ran <= 0 || accepted == 0 || accepted == ran) {
            fprintf(stderr,
                    "fuzz_replay: %s: the corpus must hold inputs that are "
                    "accepted and inputs that are refused\n",
                    entries[k].dir);
            return 1;
        }
    }
    return 0;
}
