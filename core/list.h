/*
 * list — container_of and one intrusive doubly linked list, used
 * everywhere a struct is kept on a list (after BSD sys/queue.h and nginx's
 * ngx_queue_t), instead of a hand-made list per struct.
 *
 * A list is a circular chain through a head node: an empty list's head
 * points at itself, so insertion and removal never test for the ends. A
 * head must be list_init()ed before use (a zeroed head is not a list; the
 * insertions check that, always). A node that is on no list has NULL
 * links (list_node_init, or zeroed memory), so list_linked() tells whether
 * it is on one. Nothing here allocates; the owner of the struct owns the
 * node.
 */
#ifndef FERRY_CORE_LIST_H
#define FERRY_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/check.h"

/* The struct of `type` whose `member` is at ptr. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct list_node {
	struct list_node *prev, *next;
};

static inline void list_init(struct list_node *head)
{
	head->prev = head->next = head;
}

static inline void list_node_init(struct list_node *node)
{
	node->prev = node->next = NULL;
}

static inline bool list_empty(const struct list_node *head)
{
	return head->next == head;
}

/* Is the node on a list (as opposed to unlinked)? */
static inline bool list_linked(const struct list_node *node)
{
	return node->next != NULL;
}

static inline void list_link_between(struct list_node *node, struct list_node *prev,
				     struct list_node *next)
{
	CHECK(prev->next == next && next->prev == prev); /* an initialised list */
	CHECK(!list_linked(node));                       /* not on another list */
	node->prev = prev;
	node->next = next;
	prev->next = node;
	next->prev = node;
}

static inline void list_insert_head(struct list_node *head, struct list_node *node)
{
	CHECK(head->next != NULL); /* list_init()ed */
	list_link_between(node, head, head->next);
}

static inline void list_insert_tail(struct list_node *head, struct list_node *node)
{
	CHECK(head->prev != NULL); /* list_init()ed */
	list_link_between(node, head->prev, head);
}

/* Take the node off its list; it is unlinked afterwards. */
static inline void list_remove(struct list_node *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	node->prev = node->next = NULL;
}

/* Move every node of `from` to the tail of `head`, in order; `from` is
 * left empty. */
static inline void list_splice_tail(struct list_node *head, struct list_node *from)
{
	if (list_empty(from))
		return;
	struct list_node *first = from->next, *last = from->prev;
	first->prev = head->prev;
	head->prev->next = first;
	last->next = head;
	head->prev = last;
	list_init(from);
}

/* The first node, or NULL when the list is empty. */
static inline struct list_node *list_first(const struct list_node *head)
{
	return head->next != head ? head->next : NULL;
}

/* The node after `node` on the list headed by `head`, or NULL at the end. */
static inline struct list_node *list_next(const struct list_node *head,
					  const struct list_node *node)
{
	return node->next != head ? node->next : NULL;
}

/* Visit every node; the body may not remove `pos` (see the _safe form). */
#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Visit every node; the body may remove `pos` (not others). */
#define list_for_each_safe(pos, tmp, head)                                                         \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                           \
	     (pos) = (tmp), (tmp) = (pos)->next)

/* Typed iteration: `pos` is a pointer to the struct holding `member`. */
#define list_for_each_entry(pos, head, member)                                                     \
	for ((pos) = container_of((head)->next, __typeof__(*(pos)), member);                       \
	     &(pos)->member != (head);                                                             \
	     (pos) = container_of((pos)->member.next, __typeof__(*(pos)), member))

#define list_for_each_entry_safe(pos, tmp, head, member)                                           \
	for ((pos) = container_of((head)->next, __typeof__(*(pos)), member),                       \
	    (tmp) = container_of((pos)->member.next, __typeof__(*(pos)), member);                  \
	     &(pos)->member != (head);                                                             \
	     (pos) = (tmp), (tmp) = container_of((pos)->member.next, __typeof__(*(pos)), member))

#endif
