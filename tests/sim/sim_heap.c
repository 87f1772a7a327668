/* The event heap (ordered by time, then sequence) and message copies. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
    if (a->time != b->time)
        return a->time < b->time;
    return a->seq < b->seq;
}

void sim_heap_init(struct sim_heap *h)
{
    memset(h, 0, sizeof(*h));
}

void sim_heap_free(struct sim_heap *h)
{
    for (size_t i = 0; i < h->len; i++)
        free(h->ev[i].msg);
    free(h->ev);
    memset(h, 0, sizeof(*h));
}

int sim_heap_push(struct sim_heap *h, const struct sim_event *e)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        struct sim_event *ev = realloc(h->ev, cap * sizeof(*ev));
        if (ev == NULL)
            return RK_ENOMEM;
        h->ev = ev;
        h->cap = cap;
    }
    size_t i = h->len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(e, &h->ev[p]))
            break;
        h->ev[i] = h->ev[p];
        i = p;
    }
    h->ev[i] = *e;
    return 0;
}

const struct sim_event *sim_heap_peek(const struct sim_heap *h)
{
    return h->len ? &h->ev[0] : NULL;
}

bool sim_heap_pop(struct sim_heap *h, struct sim_event *out)
{
    if (h->len == 0)
        return false;
    *out = h->ev[0];
    struct sim_event last = h->ev[--h->len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct sim_event *best = &last;
        if (l < h->len && ev_less(&h->ev[l], best)) {
            m = l;
            best = &h->ev[l];
        }
        if (r < h->len && ev_less(&h->ev[r], best))
            m = r;
        if (m == i)
            break;
        h->ev[i] = h->ev[m];
        i = m;
    }
    if (h->len)
        h->ev[i] = last;
    return true;
}

struct raft_msg *sim_msg_clone(const struct raft_msg *m)
{
    size_t size = sizeof(*m) + (size_t)m->n_entries * sizeof(struct raft_entry);
    for (uint32_t i = 0; i < m->n_entries; i++)
        size += m->entries[i].len;
    size += m->chunk_len;
    char *blk = malloc(size ? size : 1);
    if (blk == NULL)
        return NULL;
    struct raft_msg *c = (struct raft_msg *)blk;
    *c = *m;
    char *p = blk + sizeof(*m);
    c->entries = NULL;
    if (m->n_entries) {
        c->entries = (struct raft_entry *)p;
        p += (size_t)m->n_entries * sizeof(struct raft_entry);
        for (uint32_t i = 0; i < m->n_entries; i++) {
            c->entries[i] = m->entries[i];
            c->entries[i].data = NULL;
            if (m->entries[i].len) {
                memcpy(p, m->entries[i].data, m->entries[i].len);
                c->entries[i].data = p;
                p += m->entries[i].len;
            }
        }
    }
    c->chunk_data = NULL;
    if (m->chunk_len) {
        memcpy(p, m->chunk_data, m->chunk_len);
        c->chunk_data = p;
        p += m->chunk_len;
    }
    RK_ASSERT((size_t)(p - blk) == size);
    return c;
}
