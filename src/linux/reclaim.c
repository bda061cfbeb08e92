/*
 * linux/reclaim.c - giving handed-out ports back to their block.
 *
 * A port handed out returns to the block only once the socket it was
 * handed to can no longer hold it or take its traffic, whatever that
 * socket did meanwhile: listened, connected, was reset by its peer, moved
 * to another descriptor or process (dup(), fork(), SCM_RIGHTS).  A reuse
 * does not walk the kernel's socket tables (but for the sockets a block
 * handed out before its first reclaim, once, and the fallbacks below): its
 * cost does not depend on how many sockets exist elsewhere on the machine.
 *
 * Every hand-out is tracked from before its bind (track_handout(); if
 * tracking cannot be set up, the hand-out is refused and the socket stays
 * unbound), by two things the kernel ties to that one socket:
 *
 *  - an item in the block's epoll instance (no events asked: it is never
 *    waited on).  An epoll item belongs to the open file description, not
 *    to a descriptor: dup(), fork() and SCM_RIGHTS copies keep it, and the
 *    kernel removes it when the file is released, in any process.
 *    /proc/self/fdinfo/<epfd> lists the live items, the hand-out slot as
 *    their data (the port index, or COUNT + index for a port's IPv6 side:
 *    see SIDE4 in linux.h): one pread(), O(live sockets of the block).  Each
 *    side of a port is tracked and given back on its own, by the same rules.
 *    A slot whose item is there is in use, in any state.
 *  - the socket's cookie (SO_COOKIE, unique for the kernel's lifetime), and
 *    a NETLINK_SOCK_DIAG socket of the block that has joined the destroy
 *    groups of the block's protocol (SKNLGRP_INET{,6}_{TCP,UDP}_DESTROY; no
 *    privilege needed): the kernel sends it one message, with the cookie,
 *    per socket of this network namespace freed (__sk_free()), and a
 *    classic BPF filter on that socket keeps only those whose local port is
 *    in the block (sockdiag.c).  The block joins at its first reclaim, so
 *    that a block never exhausted does not pay for it (about 20 us to set
 *    up and to close, and a kernel work item per socket freed in the
 *    namespace while it listens).  A message only comes to a listener that
 *    had joined when the socket was freed: the ports handed out before it
 *    joined are LOSSY, confirmed by the dump below when they close, once.
 *
 * Why both: __fput() removes a file's epoll items first
 * (eventpoll_release()) and only then releases the socket (sock_close(),
 * which takes it off the port, leaves its multicast groups...).  A port
 * whose item is gone is only CLOSING: for a moment the old socket may still
 * be a UDP socket or a TCP listener in the port's reuseport group, and
 * would take the datagrams or connections meant for the socket bound next.
 * The destroy message comes after all of that (the socket is freed), so a
 * port returns when its socket's message has arrived.  The message is sent
 * from a kernel work queue, a few microseconds after close() returns: a
 * reclaim that finds nothing free but a CLOSING port waits for it (poll(),
 * at most CLOSING_WAIT_MS).
 *
 * When the message cannot be had: the netlink socket overran (ENOBUFS:
 * thousands of connections accepted on the block's ports closed between
 * two reclaims), the kernel could not allocate it, the wait timed out (a
 * TCP connection the caller closed first stays in FIN_WAIT1 or LAST_ACK,
 * unowned, while its peer does not answer; a listener whose SYN_RECV
 * requests keep it for a second), or the kernel has no destroy groups or
 * SO_COOKIE.  Then a CLOSING port is confirmed by a sock_diag dump of just
 * the sockets that take a port's traffic (every UDP socket; TCP listeners):
 * for a socket whose file is released that answer cannot go stale, since
 * such a socket never starts to listen or rejoins a table.  The dump is
 * never used for a socket whose file is alive: the epoll item alone says
 * "in use", and a dump, which walks the listening, bound and established
 * tables one after another, misses a socket that moves between them.
 *
 * A TCP socket whose file is released and that is not a listener (a
 * connection left closing, an orphan) takes no new traffic: it returns the
 * port as soon as its message or that dump says so.  Connections a
 * listener accepted are sockets of their own (other cookies): they do not
 * keep the port from the block.  Either way the placeholder holds the port
 * throughout: no other program can bind it.
 */
#ifdef __linux__

#include "linux.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* The destroy listener: not set up yet, set up, or unavailable (the kernel
 * refused the groups: CLOSING ports go to the dump). */
enum { DESTROY_NONE = 0, DESTROY_ON = 1, DESTROY_OFF = 2 };

struct count_ctx {
    const portres_block *b;
    unsigned *counts;
};

static void count_cb(const struct inet_diag_msg *m, void *ctx)
{
    struct count_ctx *c = ctx;
    unsigned port = ntohs(m->id.idiag_sport);
    if (port >= c->b->start && port - c->b->start < c->b->count)
        c->counts[port - c->b->start]++;
}

/* Count, per port of the block, the FAMILY sockets the kernel has on it in
 * the states of the STATES mask (added to COUNTS). */
static int diag_count(portres_block *b, int family, uint32_t states, unsigned *counts)
{
    struct count_ctx c = {b, counts};
    return diag_dump_on(&b->diagfd, b->protocol, family, b->start, b->start + b->count - 1, states,
                        count_cb, &c);
}

/* The sockets that take traffic meant for the port: every UDP socket, TCP
 * listeners only (TCP_LISTEN is state 10). */
#define STATES_TAKING_TRAFFIC(protocol) ((protocol) == PORTRES_UDP ? ~0u : 1u << 10)

void reclaim_init(portres_block *b)
{
    b->epfd = b->infofd = b->diagfd = b->destroyfd = -1;
}

void reclaim_close(portres_block *b)
{
    close_fd(&b->destroyfd);
    close_fd(&b->epfd);
    close_fd(&b->infofd);
    close_fd(&b->diagfd);
}

/* Set up B's tracking at its first hand-out: the cookie table and the epoll
 * instance.  Returns 0 or errno (the call recorded). */
static int start_tracking(portres_block *b)
{
    /* One allocation (freed with cookies): a cookie per slot, then state6. */
    if (!b->cookies && !(b->cookies = calloc(b->count, 2 * sizeof *b->cookies + 1)))
        return portres_fail(ENOMEM, "calloc");
    b->state6 = (unsigned char *)(b->cookies + 2 * (size_t)b->count);
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0)
        return lx_fail("epoll_create1");
    b->track_pid = getpid();
    return 0;
}

/* The hand-out slots of B now (the IPv6 sides exist once tracking has
 * started). */
static unsigned n_slots(const portres_block *b)
{
    return b->state6 ? 2 * b->count : b->count;
}

int track_handout(portres_block *b, unsigned s, int fd)
{
    struct epoll_event ev;
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    int err;
    if (b->epfd < 0 && (err = start_tracking(b)))
        return err;
    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len))
        cookie = 0; /* before Linux 4.12: its release is confirmed by a dump */
    memset(&ev, 0, sizeof ev);
    ev.data.u64 = s;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev))
        return lx_fail("epoll_ctl");
    b->cookies[s] = cookie;
    return 0;
}

void untrack_handout(portres_block *b, unsigned s, int fd)
{
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL);
    b->cookies[s] = 0;
}

void handed_out(portres_block *b, unsigned s, int family)
{
    unsigned char *st = slot_state(b, s);
    *st = (unsigned char)((*st & ~(PORT_V6 | PORT_CLOSING | PORT_LOSSY)) | PORT_USED | PORT_TRACKED
                          | (family == AF_INET6 ? PORT_V6 : 0)
                          | (b->cookies[s] && b->destroy_state == DESTROY_ON ? 0 : PORT_LOSSY));
}

/* Hand-out slot S is back in the pool. */
static void give_back(portres_block *b, unsigned s, unsigned *freed)
{
    *slot_state(b, s) &= (unsigned char)~(PORT_USED | PORT_TRACKED | PORT_CLOSING | PORT_LOSSY);
    b->cookies[s] = 0;
    (*freed)++;
}

/* Every tracked slot of B may have lost its destroy message. */
static void all_lossy(portres_block *b)
{
    unsigned s;
    for (s = 0; s < n_slots(b); s++)
        if (*slot_state(b, s) & PORT_TRACKED)
            *slot_state(b, s) |= PORT_LOSSY;
}

static void destroyed_cb(const struct inet_diag_msg *m, void *ctx)
{
    void **a = ctx;
    portres_block *b = a[0];
    unsigned port = ntohs(m->id.idiag_sport), i;
    uint64_t cookie = (uint64_t)m->id.idiag_cookie[0] | (uint64_t)m->id.idiag_cookie[1] << 32;
    if (port < b->start || port - b->start >= b->count)
        return;
    i = port - b->start;
    /* Another socket on the port (a connection a listener accepted, a
     * socket bound before, the other side's socket) has another cookie. */
    if (cookie && (b->state[i] & PORT_TRACKED) && b->cookies[i] == cookie)
        give_back(b, i, a[1]);
    else if (cookie && b->state6 && (b->state6[i] & PORT_TRACKED)
             && b->cookies[b->count + i] == cookie)
        give_back(b, b->count + i, a[1]);
}

/* Take in the destroy messages queued for B: the ports whose socket is
 * freed return; *FREED counts them.  Messages lost to an overrun
 * (ENOBUFS) leave the ports then handed out to the dump. */
static void take_destroyed(portres_block *b, unsigned *freed)
{
    void *ctx[2] = {b, freed};
    if (b->destroyfd < 0)
        return;
    if (diag_destroyed(b->destroyfd, destroyed_cb, ctx) == 0)
        return;
    all_lossy(b); /* ENOBUFS, or the socket failed */
}

/* Tracked ports whose socket's file is released become CLOSING.  Returns
 * 0, or errno when fdinfo cannot be read or parsed (then no port is taken
 * for released: never guess a socket gone). */
static int find_released(portres_block *b)
{
    size_t cap, tracked = 0, items = 0, parsed = 0;
    ssize_t len;
    unsigned s, slots = n_slots(b);
    char *buf = NULL, *p;
    unsigned char *alive;

    for (s = 0; s < slots; s++)
        tracked += (*slot_state(b, s) & (PORT_TRACKED | PORT_CLOSING)) == PORT_TRACKED;
    if (!tracked)
        return 0;
    if (getpid() != b->track_pid)      /* a forked child: fdinfo would read the parent's table */
        return portres_refuse(ECHILD); /* nothing read: the rule refuses */
    if (b->infofd < 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", b->epfd);
        b->infofd = open(path, O_RDONLY | O_CLOEXEC);
        if (b->infofd < 0)
            return lx_fail("open(/proc/self/fdinfo)");
    }
    /* "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x\n" */
    for (cap = 512 + 128 * tracked;; cap *= 2) {
        char *nbuf = realloc(buf, cap + 1);
        if (!nbuf) {
            free(buf);
            return portres_fail(ENOMEM, "realloc");
        }
        buf = nbuf;
        len = pread(b->infofd, buf, cap, 0); /* one read: one snapshot */
        if (len < 0) {
            int err = lx_fail("pread(/proc/self/fdinfo)");
            free(buf);
            return err;
        }
        if ((size_t)len < cap)
            break;
    }
    buf[len] = '\0';
    alive = calloc((slots + 7) / 8, 1);
    if (!alive) {
        free(buf);
        return portres_fail(ENOMEM, "calloc");
    }
    for (p = buf; (p = strstr(p, "tfd:")); items++) {
        char *data = strstr(p, " data:"), *end, *eol = strchr(p, '\n');
        unsigned long long v;
        p += 4;
        if (!data || (eol && data > eol))
            continue;
        v = strtoull(data + 6, &end, 16);
        if (end == data + 6 || v >= slots)
            continue;
        alive[v / 8] |= (unsigned char)(1u << (v % 8));
        parsed++;
    }
    free(buf);
    if (parsed != items) { /* not the format this was written for */
        free(alive);
        return portres_fail(EPROTO, "pread(/proc/self/fdinfo)");
    }
    for (s = 0; s < slots; s++)
        if ((*slot_state(b, s) & PORT_TRACKED) && !((alive[s / 8] >> (s % 8)) & 1))
            *slot_state(b, s) |= PORT_CLOSING;
    free(alive);
    return 0;
}

static void take_destroyed_cb(void *ctx)
{
    void **a = ctx;
    take_destroyed(a[0], a[1]);
}

/* Wait, at most CLOSING_WAIT_MS, for a destroy message that gives a port
 * back. */
static void wait_destroyed(portres_block *b, unsigned *freed)
{
    void *ctx[2] = {b, freed};
    diag_wait_destroyed(b->destroyfd, take_destroyed_cb, ctx, freed);
}

/* Our placeholders of FAMILY that take port index I's traffic (TCP ones
 * never listen). */
static unsigned placeholders_taking_traffic(const portres_block *b, unsigned i, int family)
{
    if (b->protocol != PORTRES_UDP)
        return 0;
    return (b->family == family && b->fds[i] >= 0)
           + (family == AF_INET && b->fds4 && b->fds4[i] >= 0);
}

/* CLOSING slots whose socket is off the port (no socket of its family but
 * our placeholders takes the port's traffic) return to the block; *FREED
 * counts them.  Only the families of those sockets are dumped.  The two
 * slots of a port are never of one family (an AF_INET6 socket in slot I is
 * dual-stack: it holds both sides, slot COUNT + I stays free), so the count
 * of a family is the placeholders' and that one socket's.  Returns 0 or
 * errno (a dump failed). */
static int confirm_by_dump(portres_block *b, unsigned *freed)
{
    static const int families[2] = {AF_INET, AF_INET6};
    unsigned *counts = malloc(b->count * sizeof *counts), s, f, slots = n_slots(b);
    int err = 0;
    if (!counts)
        return portres_fail(ENOMEM, "malloc");
    for (f = 0; f < 2 && !err; f++) {
        unsigned char v6 = f ? PORT_V6 : 0, any = 0;
        for (s = 0; s < slots; s++)
            any |= (*slot_state(b, s) & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6);
        if (!any)
            continue;
        memset(counts, 0, b->count * sizeof *counts);
        if ((err = diag_count(b, families[f], STATES_TAKING_TRAFFIC(b->protocol), counts)))
            break;
        for (s = 0; s < slots; s++) {
            unsigned i = s < b->count ? s : s - b->count;
            if ((*slot_state(b, s) & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6)
                && counts[i] <= placeholders_taking_traffic(b, i, families[f]))
                give_back(b, s, freed);
        }
    }
    free(counts);
    return err;
}

/* Join B's destroy listener at its first reclaim (see the top comment). */
static void start_listening(portres_block *b)
{
    int fd = diag_destroy_listener(b->protocol, have_ipv6, b->start, b->start + b->count - 1);
    if (fd >= 0) {
        b->destroyfd = fd;
        b->destroy_state = DESTROY_ON;
    } else if (-fd != EMFILE && -fd != ENFILE && -fd != ENOMEM && -fd != ENOBUFS) {
        b->destroy_state = DESTROY_OFF; /* no such groups here: dumps */
    } /* else out of resources for now: the next reclaim tries again */
}

int reclaim(portres_block *b, unsigned *freed)
{
    unsigned i, closing = 0, lossy = 0;
    int err = 0;
    *freed = 0;
    /* Ports another socket of our uid holds (its bind failed with
     * EADDRINUSE, so it was never ours to track): the next bind tries them
     * again.  Not counted: they are not known to be free. */
    for (i = 0; i < n_slots(b); i++)
        if ((*slot_state(b, i) & (PORT_USED | PORT_TRACKED)) == PORT_USED)
            *slot_state(b, i) &= (unsigned char)~PORT_USED;
    if (b->epfd < 0)
        return 0;
    if (b->destroy_state == DESTROY_NONE)
        start_listening(b);
    take_destroyed(b, freed);
    if (*freed)
        return 0;
    err = find_released(b);
    for (i = 0; i < n_slots(b); i++) {
        closing += (*slot_state(b, i) & PORT_CLOSING) != 0;
        lossy += (*slot_state(b, i) & (PORT_CLOSING | PORT_LOSSY)) == (PORT_CLOSING | PORT_LOSSY);
    }
    if (!closing)
        return err;
    if (b->destroy_state == DESTROY_ON && lossy < closing)
        wait_destroyed(b, freed);
    if (!*freed) {
        int derr = confirm_by_dump(b, freed);
        if (!err)
            err = derr;
    }
    return *freed ? 0 : err;
}

#endif /* __linux__ */
