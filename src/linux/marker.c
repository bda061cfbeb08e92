/*
 * linux/marker.c - the runtime marker: what `portres list --runtime` reads
 * in other processes (portres/_runtime_linux.py).
 *
 * One memfd per process, named "portres", close-on-exec, made with the
 * first block and then kept (a descriptor per process, not per block): the
 * kernel ties it to the process, so it is in /proc/<pid>/fd while the
 * process lives and gone with it.  Each live block has one fixed-width line,
 * "tcp 41000     4" padded with spaces to MARKER_LINE bytes, "\n" last; a
 * freed line is all spaces and is reused.  The file is mapped MAP_SHARED,
 * so a line is written with plain stores: no system call per acquire or
 * close once the memfd exists (ftruncate + mremap only when it grows).
 *
 * Readers never trust it alone: a block is listed only when the kernel
 * shows this pid's sockets on every port of it, so a torn or stale line
 * lists nothing.  Every function runs with registry_lock held.
 */
#ifdef __linux__

#include "marker.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define MARKER_NAME "portres"
#define MARKER_LINE 24    /* bytes per line, "\n" included: "tcp 65535 65535" fits */
#define MARKER_FIRST 170u /* lines in the first mapping: one page */

static int mfd = -1;
static dev_t mdev;
static ino_t mino;
static char *map;          /* MAP_SHARED over the memfd, map_lines lines */
static size_t map_lines;   /* lines the file and the mapping hold */
static size_t used;        /* lines ever written (the rest are zeros) */
static size_t *free_lines; /* freed lines, reused first */
static size_t n_free, arr_cap;

/* Room for line USED; 0, or -1 (nothing is changed). */
static int grow(void)
{
    size_t lines = map_lines ? map_lines * 2 : MARKER_FIRST;
    struct stat st;
    void *p;

    if (lines > arr_cap) {
        size_t *f = realloc(free_lines, lines * sizeof *f);
        if (!f)
            return -1;
        free_lines = f;
        arr_cap = lines;
    }
    if (mfd < 0) {
        mfd = memfd_create(MARKER_NAME, MFD_CLOEXEC);
        if (mfd < 0)
            return -1;
        if (fstat(mfd, &st)) {
            close_fd(&mfd);
            return -1;
        }
        mdev = st.st_dev;
        mino = st.st_ino;
    } else if (fstat(mfd, &st) || st.st_dev != mdev || st.st_ino != mino) {
        /* Someone closed our descriptor (os.closerange...) and the number
         * may now be another file: never truncate that.  Keep the lines
         * we have; the rest of the blocks go unlisted. */
        return -1;
    }
    if (ftruncate(mfd, (off_t)(lines * MARKER_LINE)))
        return -1;
    p = map ? mremap(map, map_lines * MARKER_LINE, lines * MARKER_LINE, MREMAP_MAYMOVE)
            : mmap(NULL, lines * MARKER_LINE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (p == MAP_FAILED)
        return -1; /* the file is larger than the mapping: harmless zeros */
    map = p;
    map_lines = lines;
    return 0;
}

/* "tcp 41000     4": the protocol, then START and COUNT right-aligned in
 * five columns each (the width of 65535), spaces after, "\n" last. */
static void format_line(char *line, const portres_block *b)
{
    unsigned v[2] = {b->start, b->count}, k;
    memset(line, ' ', MARKER_LINE - 1);
    memcpy(line, b->protocol == PORTRES_UDP ? "udp" : "tcp", 3);
    for (k = 0; k < 2; k++) { /* each number's last digit in column 8, then 14 */
        unsigned x = v[k], col = 8 + 6 * k;
        do {
            line[col--] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
    }
    line[MARKER_LINE - 1] = '\n';
}

void marker_add(portres_block *b)
{
    size_t i;

    if (n_free) {
        i = free_lines[--n_free];
    } else {
        if (used == map_lines && grow())
            return; /* best effort: the reservation holds without its line */
        i = used++;
    }
    format_line(map + i * MARKER_LINE, b);
    b->marker_line = i;
}

void marker_remove(portres_block *b)
{
    size_t i = b->marker_line;
    if (i >= used)
        return; /* it has no line (see marker_add) */
    memset(map + i * MARKER_LINE, ' ', MARKER_LINE - 1);
    free_lines[n_free++] = i;
    b->marker_line = SIZE_MAX;
}

void marker_atfork_child(void)
{
    /* The page is shared with the parent: a store here would change the
     * parent's lines.  The arrays are this process's copy and are kept. */
    if (map)
        munmap(map, map_lines * MARKER_LINE);
    map = NULL;
    map_lines = used = n_free = 0; /* the blocks, closed in the child, keep no line */
    close_fd(&mfd);
}

#endif /* __linux__ */
