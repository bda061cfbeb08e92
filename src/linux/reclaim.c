/*
 * linux/reclaim.c - giving handed-out ports back to their block.
 */
#ifdef __linux__

#include "linux.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>

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

/* Any state but TIME_WAIT, which does not stop a reuseport bind. */
#define STATES_ON_PORT (~(1u << 6))
/* The sockets that take traffic meant for the port: every UDP socket, TCP
 * listeners only (TCP_LISTEN is state 10). */
#define STATES_TAKING_TRAFFIC(protocol) ((protocol) == PORTRES_UDP ? ~0u : 1u << 10)

/* ------------------------------------------------- giving ports back
 *
 * A port handed out returns to the block once the caller's socket is gone:
 * its file released (the last descriptor closed, in any process: dup(),
 * fork() and SCM_RIGHTS copies keep it).  Two ways to tell:
 *
 *  - a sock_diag dump counting the sockets on each port of the block.  It
 *    walks the kernel's whole socket hash tables, however small the block:
 *    about 400 us with 262144 TCP ehash buckets, more on bigger machines;
 *  - the block's epoll instance.  The caller's socket is added to it (no
 *    events asked: it is never waited on), and the kernel removes an epoll
 *    item exactly when the item's file is released, not when a descriptor
 *    closes.  /proc/self/fdinfo/<epfd> lists the live items, with the port
 *    index as their data: one pread(), O(live sockets of the block).
 *
 * A block starts without tracking, so that a block never exhausted pays
 * nothing for it.  Its first reclaim uses the dump, and turns tracking on
 * when the dump cost more than tracking the whole block would (about
 * TRACK_COST_NS per hand-out: the epoll_ctl, and the item's removal when
 * the socket closes): small blocks track, a block of thousands of ports on
 * a quiet machine keeps dumping, once per cycle of the cursor through it.
 * Tracking adopts the sockets then alive whose descriptor still holds them;
 * from then on every hand-out adds the caller's socket, and a reclaim
 * reads fdinfo.  A port whose socket could not be tracked (an epoll_ctl
 * error, a descriptor that moved) keeps the dump as fallback.
 *
 * They differ where the socket's file is released while sockets it
 * spawned stay on the port (connections it accepted, or left closing in
 * FIN_WAIT or LAST_ACK): the dump keeps such a port used until they are
 * gone, tracking returns it when the socket closes, as for TIME_WAIT.
 * Either way the placeholder holds the port: no other program can bind it.
 *
 * An epoll item goes first when a file is released (__fput() calls
 * eventpoll_release() before the socket's release, which takes it off the
 * port), so a port tracking sees released is only CLOSING: for a moment
 * the old socket may still be a UDP socket or a TCP listener in the port's
 * reuseport group, and would take the datagrams or connections meant for
 * the socket bound next (measured: 1 datagram in 3 lost when the closing
 * socket's release is slowed by multicast memberships).  A CLOSING port
 * returns once a dump of just those sockets (every UDP socket; TCP
 * listeners, a walk of the small listener table) shows it gone: about
 * 10-25 us, paid only when a released port is reused.
 */

#define TRACK_COST_NS 600

/* Turn release tracking on for B: its epoll instance and its fdinfo. */
static int start_tracking(portres_block *b)
{
    char path[64];
    int err;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0)
        return lx_fail("epoll_create1");
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", b->epfd);
    b->infofd = open(path, O_RDONLY | O_CLOEXEC);
    if (b->infofd < 0) {
        err = lx_fail("open(/proc/self/fdinfo)");
        close_fd(&b->epfd);
        return err;
    }
    b->track_pid = getpid();
    return 0;
}

/* Back to dumps only (fdinfo unreadable): tracked ports become untracked. */
static void stop_tracking(portres_block *b)
{
    unsigned i;
    close_fd(&b->infofd);
    close_fd(&b->epfd);
    for (i = 0; i < b->count; i++)
        b->state[i] &= (unsigned char)~PORT_TRACKED;
}

/* Track the caller's socket FD, bound to port index I. */
static void track(portres_block *b, unsigned i, int fd)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.u64 = i;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        b->state[i] |= PORT_TRACKED;
}

/* Port index I was just bound on the caller's FD, of FAMILY. */
void handed_out(portres_block *b, unsigned i, int fd, int family)
{
    b->state[i] =
        (unsigned char)((b->state[i] & ~PORT_V6) | PORT_USED | (family == AF_INET6 ? PORT_V6 : 0));
    if (!b->handed)
        b->handed = malloc(b->count * sizeof *b->handed);
    if (b->handed)
        b->handed[i] = fd;
    if (b->epfd >= 0)
        track(b, i, fd);
}

/* Whether FD is still a socket of B's type bound to port index I. */
static int holds_port(const portres_block *b, int fd, unsigned i)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (getsockname(fd, (struct sockaddr *)&ss, &len)
        || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
        || get_port((struct sockaddr *)&ss) != b->start + i)
        return 0;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0
           && type == sock_type_for(b->protocol);
}

/* Tracked ports whose socket's file is released become CLOSING.  Returns
 * 0, or errno when fdinfo cannot be read or parsed (the caller then stops
 * tracking: never guess a socket gone). */
static int reclaim_tracked(portres_block *b)
{
    size_t cap, tracked = 0, items = 0, parsed = 0;
    ssize_t len;
    unsigned i;
    char *buf = NULL, *p;
    unsigned char *alive;

    for (i = 0; i < b->count; i++)
        tracked += (b->state[i] & PORT_TRACKED) != 0;
    if (!tracked)
        return 0;
    if (getpid() != b->track_pid) /* a forked child: infofd reads the parent's table */
        return portres_fail(ECHILD, "pread(/proc/self/fdinfo)");
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
    alive = calloc((b->count + 7) / 8, 1);
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
        if (end == data + 6 || v >= b->count)
            continue;
        alive[v / 8] |= (unsigned char)(1u << (v % 8));
        parsed++;
    }
    free(buf);
    if (parsed != items) { /* not the format this was written for */
        free(alive);
        return portres_fail(EPROTO, "pread(/proc/self/fdinfo)");
    }
    for (i = 0; i < b->count; i++) {
        if ((b->state[i] & PORT_TRACKED) && !((alive[i / 8] >> (i % 8)) & 1)) {
            b->state[i] = (unsigned char)((b->state[i] & ~PORT_TRACKED) | PORT_CLOSING);
        }
    }
    free(alive);
    return 0;
}

/* Untracked ports on which only our placeholders remain return to the
 * block; *FREED counts them.  The first time, tracking starts, and the
 * untracked ports still held by exactly one socket (the one we bound, at
 * its descriptor) are tracked from now on.  Returns 0 or errno (the dump
 * failed: EMFILE for its netlink socket, ENOMEM...). */
static int reclaim_dump(portres_block *b, unsigned *freed)
{
    unsigned *counts = calloc(b->count, sizeof *counts), i, n = 0;
    int adopt, err;
    struct timespec t0, t1;
    long long spent;
    if (!counts)
        return portres_fail(ENOMEM, "calloc");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((err = diag_count(b, AF_INET, STATES_ON_PORT, counts))
        || (have_ipv6 && (err = diag_count(b, AF_INET6, STATES_ON_PORT, counts)))) {
        free(counts);
        return err;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    spent = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    adopt = b->epfd >= 0 || (spent > (long long)b->count * TRACK_COST_NS && start_tracking(b) == 0);
    for (i = 0; i < b->count; i++) {
        unsigned ours = (b->fds[i] >= 0) + (b->fds4 && b->fds4[i] >= 0);
        if ((b->state[i] & (PORT_USED | PORT_TRACKED)) != PORT_USED)
            continue;
        if (counts[i] <= ours) {
            b->state[i] &= (unsigned char)~(PORT_USED | PORT_CLOSING);
            n++;
        } else if (adopt && !(b->state[i] & PORT_CLOSING) && counts[i] == ours + 1 && b->handed
                   && holds_port(b, b->handed[i], i)) {
            track(b, i, b->handed[i]);
        }
    }
    free(counts);
    *freed += n;
    return 0;
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

/* CLOSING ports whose socket is off the port (no socket of its family but
 * our placeholders takes its traffic) return to the block; *FREED counts
 * them.  Only the families of those sockets are dumped.  Returns 0 or
 * errno (a dump failed). */
static int reclaim_closing(portres_block *b, unsigned *freed)
{
    static const int families[2] = {AF_INET, AF_INET6};
    unsigned *counts = malloc(b->count * sizeof *counts), i, f;
    int err = 0;
    if (!counts)
        return portres_fail(ENOMEM, "malloc");
    for (f = 0; f < 2 && !err; f++) {
        unsigned char v6 = f ? PORT_V6 : 0, any = 0;
        for (i = 0; i < b->count; i++)
            any |= (b->state[i] & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6);
        if (!any)
            continue;
        memset(counts, 0, b->count * sizeof *counts);
        if ((err = diag_count(b, families[f], STATES_TAKING_TRAFFIC(b->protocol), counts)))
            break;
        for (i = 0; i < b->count; i++) {
            if ((b->state[i] & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6)
                && counts[i] <= placeholders_taking_traffic(b, i, families[f])) {
                b->state[i] &= (unsigned char)~(PORT_USED | PORT_CLOSING);
                (*freed)++;
            }
        }
    }
    free(counts);
    return err;
}

/* Return to the pool the handed-out ports whose socket is gone; *FREED
 * counts them.  Block locked.  Returns 0, or errno when the ports could not
 * be checked (then nothing is freed that is not known to be free). */
int reclaim(portres_block *b, unsigned *freed)
{
    unsigned i, untracked = 0, closing = 0;
    int err = 0;
    *freed = 0;
    if (b->infofd >= 0 && reclaim_tracked(b))
        stop_tracking(b);
    for (i = 0; i < b->count; i++) {
        unsigned char st = b->state[i];
        untracked += (st & (PORT_USED | PORT_TRACKED | PORT_CLOSING)) == PORT_USED;
        closing += (st & PORT_CLOSING) != 0;
    }
    if (closing)
        err = reclaim_closing(b, freed);
    if (untracked && !*freed)
        return reclaim_dump(b, freed);
    return err;
}

#endif /* __linux__ */
