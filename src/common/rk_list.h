/* Intrusive circular doubly-linked list and queue (embed a struct rk_list). */
#ifndef RK_LIST_H
#define RK_LIST_H

/*
 * A list head and a list node are the same struct. An empty head (and an
 * unlinked node) points to itself, so removal needs no head and a node can
 * tell whether it is linked. Recover the owner with rk_list_entry():
 *
 *     struct req { struct rk_list link; ... };
 *     struct rk_list q;  rk_list_init(&q);
 *     rk_list_push_tail(&q, &r->link);
 *     struct rk_list *n = rk_list_pop_head(&q);
 *     struct req *r = rk_list_entry(n, struct req, link);
 */

#include <stdbool.h>
#include <stddef.h>

#include "rk_assert.h"

struct rk_list {
    struct rk_list *prev;
    struct rk_list *next;
};

#define rk_list_entry(ptr, type, member) container_of(ptr, type, member)

/* Iterates over the nodes; the loop body must not unlink `pos`. */
#define rk_list_foreach(pos, head)                                             \
    for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Iterates allowing the body to unlink (or free) `pos`. */
#define rk_list_foreach_safe(pos, tmp, head)                                   \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);           \
         (pos) = (tmp), (tmp) = (pos)->next)

static inline void rk_list_init(struct rk_list *l)
{
    l->prev = l;
    l->next = l;
}

static inline bool rk_list_empty(const struct rk_list *head)
{
    return head->next == head;
}

/* True if the node is on some list (it must have been initialised or
 * removed with rk_list_remove). */
static inline bool rk_list_linked(const struct rk_list *n)
{
    return n->next != n;
}

static inline void rk__list_insert(struct rk_list *n, struct rk_list *prev,
                                   struct rk_list *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

static inline void rk_list_push_tail(struct rk_list *head, struct rk_list *n)
{
    rk__list_insert(n, head->prev, head);
}

static inline void rk_list_push_head(struct rk_list *head, struct rk_list *n)
{
    rk__list_insert(n, head, head->next);
}

/* Inserts n right after pos (a node or the head). */
static inline void rk_list_insert_after(struct rk_list *pos, struct rk_list *n)
{
    rk__list_insert(n, pos, pos->next);
}

/* Unlinks n and leaves it self-linked (unlinking twice is harmless). */
static inline void rk_list_remove(struct rk_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    rk_list_init(n);
}

/* First/last node, or NULL if the list is empty. */
static inline struct rk_list *rk_list_head(const struct rk_list *head)
{
    return rk_list_empty(head) ? NULL : head->next;
}

static inline struct rk_list *rk_list_tail(const struct rk_list *head)
{
    return rk_list_empty(head) ? NULL : head->prev;
}

static inline struct rk_list *rk_list_pop_head(struct rk_list *head)
{
    struct rk_list *n = rk_list_head(head);
    if (n)
        rk_list_remove(n);
    return n;
}

static inline struct rk_list *rk_list_pop_tail(struct rk_list *head)
{
    struct rk_list *n = rk_list_tail(head);
    if (n)
        rk_list_remove(n);
    return n;
}

/* Moves n (linked or not) to the tail of head (LRU "touch"). */
static inline void rk_list_move_tail(struct rk_list *head, struct rk_list *n)
{
    rk_list_remove(n);
    rk_list_push_tail(head, n);
}

/* Moves every node of src to the tail of dst; src becomes empty. */
static inline void rk_list_splice_tail(struct rk_list *dst, struct rk_list *src)
{
    if (rk_list_empty(src))
        return;
    struct rk_list *first = src->next, *last = src->prev;
    first->prev = dst->prev;
    dst->prev->next = first;
    last->next = dst;
    dst->prev = last;
    rk_list_init(src);
}

/* Number of nodes (walks the list). */
static inline size_t rk_list_count(const struct rk_list *head)
{
    size_t n = 0;
    for (const struct rk_list *p = head->next; p != head; p = p->next)
        n++;
    return n;
}

#endif
