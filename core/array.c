#include "core/array.h"

#include <stdint.h>
#include <stdlib.h>

#define ARRAY_FIRST_CAP 8

void *array_grow(void *items, size_t *cap, size_t need, size_t size)
{
	size_t more = items != NULL && *cap > 0 ? *cap : ARRAY_FIRST_CAP;
	while (more < need) {
		if (more > SIZE_MAX / 2)
			return NULL;
		more *= 2;
	}
	if (size != 0 && more > SIZE_MAX / size)
		return NULL;
	void *grown = realloc(items, more * size);
	if (grown == NULL)
		return NULL;
	*cap = more;
	return grown;
}
