/* arena.c: per-request memory; everything allocated for a request is released at once. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "kw.h"

#define ARENA_BLOCK 8192

struct block {
	struct block *next;
	size_t size, used;
	_Alignas(16) unsigned char data[];
};

struct kw_arena {
	struct block *head;	/* newest block first; the last one is kept on reset */
};

static struct block *
block_new(size_t size)
{
	struct block *b = malloc(sizeof(*b) + size);

	if (b == NULL)
		return NULL;
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

/* Returns a new arena owned by the caller (kw_arena_free), or NULL. */
struct kw_arena *
kw_arena_new(void)
{
	struct kw_arena *a = malloc(sizeof(*a));

	if (a == NULL)
		return NULL;
	if ((a->head = block_new(ARENA_BLOCK)) == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

/*
 * Returns n zeroed bytes aligned to 16, owned by the arena until the next
 * reset or free; NULL when memory is exhausted.
 */
void *
kw_arena_alloc(struct kw_arena *a, size_t n)
{
	struct block *b = a->head;
	size_t need = (n + 15) & ~(size_t)15;
	void *p;

	if (need < n)
		return NULL;
	if (b->size - b->used < need) {
		size_t size = need > ARENA_BLOCK ? need : ARENA_BLOCK;

		if ((b = block_new(size)) == NULL)
			return NULL;
		b->next = a->head;
		a->head = b;
	}
	p = b->data + b->used;
	b->used += need;
	memset(p, 0, n);
	return p;
}

/* Copies n bytes of s and a NUL into the arena; NULL when memory is exhausted. */
char *
kw_arena_strndup(struct kw_arena *a, const char *s, size_t n)
{
	char *p;

	if (n == SIZE_MAX || (p = kw_arena_alloc(a, n + 1)) == NULL)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* Releases everything allocated since creation, keeping the first block. */
void
kw_arena_reset(struct kw_arena *a)
{
	while (a->head->next != NULL) {
		struct block *b = a->head;

		a->head = b->next;
		free(b);
	}
	a->head->used = 0;
}

void
kw_arena_free(struct kw_arena *a)
{
	if (a == NULL)
		return;
	kw_arena_reset(a);
	free(a->head);
	free(a);
}
