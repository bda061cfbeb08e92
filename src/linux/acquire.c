/*
 * linux/acquire.c - acquiring a block: a given range, or a wildcard window of the
 * ephemeral range.
 */
#ifdef __linux__

#include "linux.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/random.h>

/* fork() safety while a block is built: every step that makes, closes or
 * moves one of its descriptors runs under B's lock, which atfork_prepare
 * (registry.c) takes too, so a child finds each descriptor recorded in B
 * and closes it.  A step is a few system calls: fork() waits for one at
 * most. */
static void step_begin(portres_block *b)
{
    pthread_mutex_lock(&b->lock);
}

static void step_end(portres_block *b)
{
    pthread_mutex_unlock(&b->lock);
}

/* Close every placeholder of B (a failed acquire). */
static void drop_placeholders(portres_block *b)
{
    step_begin(b);
    close_fds(b->fds, b->count);
    close_fd(&b->spare);
    step_end(b);
}

/* Bind placeholders for ports [first, first+count); on failure close the
 * ones bound, set *bad to the port that failed and return errno. */
static int hold_range(portres_block *b, unsigned first, unsigned *bad)
{
    unsigned i;
    int fd = 0;
    for (i = 0; i < b->count && fd >= 0; i++) {
        step_begin(b);
        fd = new_placeholder(b->family, 0, b->protocol, first + i, 0, b->count - i);
        if (fd >= 0)
            b->fds[i] = fd;
        step_end(b);
    }
    if (fd < 0) {
        *bad = first + i - 1;
        drop_placeholders(b);
        return -fd;
    }
    return 0;
}

/* Rotate A[0..N) left by R. */
static void rotate_left(int *a, unsigned n, unsigned r)
{
    unsigned i, j;
    int t;
    r %= n;
    if (!r)
        return;
    for (i = 0, j = r - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
    for (i = r, j = n - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
    for (i = 0, j = n - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
}

/* A wildcard block of one port: the kernel's own choice (a bind to port
 * 0) is a free port of the ephemeral range outside ip_local_reserved_ports,
 * found in the kernel without reading either sysctl. */
static int hold_any_one(portres_block *b, unsigned *port_out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int err, fd;
    step_begin(b);
    fd = main_socket(b, 1);
    if (fd < 0) {
        step_end(b);
        return -fd;
    }
    err = place(b, fd, 0);
    if (!err && getsockname(fd, (struct sockaddr *)&ss, &len))
        err = lx_fail("getsockname");
    if (err)
        close(fd);
    else
        b->fds[0] = fd;
    step_end(b);
    if (err)
        return err < 0 ? -err : err;
    *port_out = get_port((struct sockaddr *)&ss);
    return 0;
}

/* A wildcard block: a window of the ephemeral range whose ports are all
 * free, from a random place.
 *
 * Probing a port is a bind() on a socket that a failed bind leaves unbound,
 * so the next probe reuses it: a taken port costs one failed bind, never a
 * socket.  Each window is filled from its far end down (as Boyer-Moore
 * compares), so a taken port moves the next window just past it, a whole
 * window at once when it is the far end; the placeholders bound above it
 * are kept in a ring indexed by port % count (any window of count ports
 * maps onto distinct slots) and serve the next window, which contains them.
 * Each port of the range is probed at most once per pass, and a pass costs
 * about one failed bind per window length of taken range, never more than
 * one per taken port: never a failed bind per (window, port) pair.  No
 * sock_diag dump maps the range instead: a dump walks the kernel's whole
 * socket tables (shared by every network namespace) and reports each socket
 * of the range, about as much as a failed bind per socket in it, so probing
 * on is never dearer than the dump (bench/README.md, crowded range). */
/* A wildcard search under way (hold_wildcard). */
struct wildcard {
    portres_block *b;
    unsigned lo, hi, span, count;
    unsigned char *taken; /* ports known taken: reserved, or refused */
    unsigned *ports;      /* ports[slot]: the port b->fds[slot] holds */
};

/* Step 1: the ephemeral range, the reserved ports, a random start offset. */
static int wildcard_start(struct wildcard *w, portres_block *b, unsigned *offset)
{
    int range[2] = {32768, 60999}, err;
    uint32_t rnd = 0;

    memset(w, 0, sizeof *w);
    w->b = b;
    w->count = b->count;
    w->taken = reserved_port_map(&err);
    if (err)
        return err;
    errno = 0; /* set again only by a failed open/pread, which records itself */
    if (read_proc_ints("/proc/sys/net/ipv4/ip_local_port_range", range, 2) != 2) {
        free(w->taken);
        return errno ? errno : portres_fail(EIO, "pread(ip_local_port_range)"); /* short */
    }
    w->lo = (unsigned)range[0];
    w->hi = (unsigned)range[1];
    if (w->lo < 1 || w->hi > 65535 || w->lo > w->hi || w->hi - w->lo + 1 < w->count) {
        free(w->taken);
        return portres_refuse(EADDRINUSE);
    }
    if (!(w->ports = malloc(w->count * sizeof *w->ports))) {
        free(w->taken);
        return portres_fail(ENOMEM, "malloc");
    }
    w->span = w->hi - w->lo + 1;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)getpid() * 2654435761u;
    *offset = rnd % w->span;
    return 0;
}

/* Step 2: hold the window [FIRST, FIRST+count), from the far end down: a
 * taken port moves the next window past it, and the ports bound above it
 * stay held for that window.  Returns 0 when all are held; the bind's
 * errno with *BAD the port refused; or another errno (give up). */
static int wildcard_fill(struct wildcard *w, unsigned first, unsigned *bad)
{
    portres_block *b = w->b;
    int *fds = b->fds, err = 0;
    unsigned k;

    for (k = 0; k < w->count; k++) {
        unsigned port = first + w->count - 1 - k, slot = port % w->count;
        int fd;
        if (fds[slot] >= 0 && w->ports[slot] == port)
            continue;
        step_begin(b);
        close_fd(&fds[slot]); /* a port outside this window */
        if (b->spare < 0)
            b->spare = main_socket(b, w->count - k);
        if (b->spare < 0) {
            err = b->spare;
            b->spare = -1;
            step_end(b);
            return -err;
        }
        fd = b->spare;
        err = place(b, fd, port);
        if (err == 0) { /* the spare is now this port's placeholder */
            fds[slot] = fd;
            b->spare = -1;
            w->ports[slot] = port;
        } else if (err < 0) { /* bound, then a setsockopt failed */
            close_fd(&b->spare);
        }
        step_end(b);
        if (err == 0)
            continue;
        if (err < 0)
            return -err;
        *bad = port; /* the spare is still unbound: the next probe reuses it */
        return err;
    }
    return 0;
}

/* Step 3: BAD is taken. */
static int wildcard_note_taken(struct wildcard *w, unsigned bad)
{
    if (!w->taken && !(w->taken = calloc(65536 / 8, 1)))
        return portres_fail(ENOMEM, "calloc");
    set_in_map(w->taken, bad);
    return 0;
}

/* Step 4: free the search; on failure close every placeholder it bound. */
static void wildcard_end(struct wildcard *w, int err)
{
    if (err) {
        drop_placeholders(w->b);
    } else {
        step_begin(w->b);
        close_fd(&w->b->spare);
        step_end(w->b);
    }
    free(w->ports);
    free(w->taken);
}

static int hold_wildcard(portres_block *b, unsigned *first_out)
{
    struct wildcard w;
    unsigned offset = 0, tried = 0, run, bad = 0;
    int err;

    if (b->count == 1)
        return hold_any_one(b, first_out);
    if ((err = wildcard_start(&w, b, &offset)))
        return err;
    err = portres_fail(EADDRINUSE, "bind");
    while (tried < w.span) {
        unsigned first = w.lo + offset;
        if (first + w.count - 1 > w.hi) { /* a window never wraps */
            tried += w.hi - first + 1;
            offset = 0;
            continue;
        }
        /* Skip to a window that the map says is free. */
        for (run = 0; run < w.count && !in_map(w.taken, first + run); run++)
            ;
        if (run < w.count) {
            tried += run + 1;
            offset = (first + run + 1 - w.lo) % w.span;
            continue;
        }
        err = wildcard_fill(&w, first, &bad);
        if (err == 0) {
            step_begin(b);
            rotate_left(b->fds, w.count, first % w.count);
            step_end(b);
            *first_out = first;
            break;
        }
        if (err != EADDRINUSE && err != EACCES)
            break; /* EMFILE, ENOMEM...: sliding will not help */
        if ((err = wildcard_note_taken(&w, bad)))
            break;
        tried += bad - first + 1;
        offset = (bad + 1 - w.lo) % w.span;
        err = portres_fail(EADDRINUSE, "bind");
    }
    wildcard_end(&w, err);
    return err;
}

int portres_block_acquire(int protocol, unsigned start, unsigned count, portres_block **out,
                          unsigned *conflict_port)
{
    portres_block *b;
    unsigned i, first = start;
    int err;

    *out = NULL;
    *conflict_port = 0;
    /* The binding has validated PROTOCOL, START and COUNT (portres.h). */
    portres_backend_init();

    b = calloc(1, sizeof *b);
    if (!b)
        return portres_fail(ENOMEM, "calloc");
    b->fds = malloc(count * sizeof *b->fds);
    b->state = calloc(count, 1);
    if (!b->fds || !b->state) {
        free(b->fds);
        free(b->state);
        free(b);
        return portres_fail(ENOMEM, "malloc");
    }
    for (i = 0; i < count; i++)
        b->fds[i] = -1;
    b->spare = -1;
    b->marker_line = SIZE_MAX;
    reclaim_init(b);
    pthread_mutex_init(&b->lock, NULL);
    b->protocol = protocol;
    b->count = count;
    b->family = have_ipv6 ? AF_INET6 : AF_INET;
    if (protocol == PORTRES_UDP) {
        udp_block_ref();
        shared_prog_check(0, 1);
    }

    list_unlisted(b); /* where fork() finds its descriptors from the first */
    err = start ? hold_range(b, start, conflict_port) : hold_wildcard(b, &first);
    if (!err) {
        b->start = first;
        b->token = new_token();
        if ((err = register_block(b)))
            drop_placeholders(b);
    }
    if (err) {
        unlist(b);
        if (protocol == PORTRES_UDP)
            udp_block_unref();
        pthread_mutex_destroy(&b->lock);
        free(b->fds);
        free(b->state);
        free(b);
        return err;
    }
    *out = b;
    return 0;
}

void portres_block_get_info(const portres_block *b, portres_block_info *info)
{
    *info = PORTRES_BLOCK_INFO_OF(b);
}

int portres_block_closed(const portres_block *b)
{
    return __atomic_load_n(&b->closed, __ATOMIC_ACQUIRE);
}

#endif /* __linux__ */
