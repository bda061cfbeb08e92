/*
 * linux/marker.h - the runtime marker (marker.c): this process's live blocks,
 * one line each, in a memfd named "portres" that other processes read
 * through /proc/<pid>/fd (portres/_runtime_linux.py).  Private to
 * src/linux/; every function runs with registry_lock held.
 */
#ifndef PORTRES_LINUX_MARKER_H
#define PORTRES_LINUX_MARKER_H

#include "linux.h"

#pragma GCC visibility push(hidden)

/* The block B was just registered: write its line and note it in B (best
 * effort: listing is a view, the reservation holds without it). */
void marker_add(portres_block *b);
/* The block B left the registry: clear its line. */
void marker_remove(portres_block *b);
/* fork(), in the child: unmap and close the parent's marker (the child's
 * blocks are gone, and the MAP_SHARED page is the parent's to write). */
void marker_atfork_child(void);

#pragma GCC visibility pop

#endif /* PORTRES_LINUX_MARKER_H */
