/*
 * linux/linux.h - what the files of the Linux backend share: the block and
 * association structures, the process-wide state and the helpers each file
 * offers the others.  Plain C, private to src/linux/ (the binding sees only
 * portres.h).
 *
 * The backend, one file per mechanism:
 *   sys.c           descriptors, sockaddrs, /proc files, socket()
 *   placeholders.c  the placeholder sockets that hold a port
 *   reserved.c      the ip_local_reserved_ports parser
 *   acquire.c       acquiring a block (a given range, or a wildcard window)
 *   registry.c      tokens, live blocks, associations, fork, one-time init
 *   bpf.c           UDP steering: the drop filter and reuseport selectors
 *   sockdiag.c      NETLINK_SOCK_DIAG dumps and destroy listeners
 *   reclaim.c       giving handed-out ports back (epoll items, destroy messages)
 *   bind.c          binding a caller's socket in a block
 *   associate.c     the raw calls: associate, release, bind
 *   outbound.c      an associated socket's automatic port choice kept in its block
 *   inspect.c       the sockets on a range of ports
 *   overlapped.c    the overlapped shape (every operation completes at once)
 *
 * Linux has no port-reservation facility, so a runtime reservation is held
 * by one placeholder socket per port:
 *
 *   - dual-stack [::] (IPV6_V6ONLY=0; AF_INET when the host has no IPv6), so
 *     no other program can bind the port in any family;
 *   - bound BEFORE SO_REUSEPORT is set: a second reservation of the same
 *     block (which binds without SO_REUSEPORT) is refused even from the same
 *     uid, while a socket of ours that sets SO_REUSEPORT before its bind can
 *     still share the port (same-uid reuseport rule of inet_bind_conflict);
 *   - never listening (a TCP placeholder takes no connection), never
 *     SO_REUSEADDR, close-on-exec.
 *
 * A socket bound from the reservation shares its port with the placeholder,
 * which stays: the port remains reserved after that socket closes.  UDP
 * needs care, because a placeholder in the same reuseport group would take
 * a share of the datagrams: each UDP placeholder drops whatever reaches it
 * (a "return 0" filter), and a group a caller's socket joins is steered to
 * the caller (a "return 1" reuseport selector: the placeholder, first in
 * the group, is index 0); see attach_ret() (bpf.c) for how the two programs
 * are shared.  See layout_udp() for the cases that need a different
 * placeholder layout (a V6ONLY caller, a port shared by an AF_INET and a
 * V6ONLY socket).  A port handed out returns to the block when the
 * caller's socket is released: see reclaim.c.
 *
 * The hot paths make the system calls a plain program would, and no more
 * (bench/README.md has the figures): res.socket() is socket(), one
 * SO_REUSEPORT and bind() (the C floor of a plain socket() + bind(port 0));
 * a block of N ports is N x (socket(), bind(), SO_REUSEPORT), released with
 * close_range(2).
 *
 * Tokens are 64-bit values that never repeat in a process (registry.c),
 * kept in a process-wide registry, and an association (portres_associate)
 * is kept by socket inode until the bind.
 *
 * Errors: every failure returns an errno and records the failing call with
 * portres_fail() / lx_fail() (portres.h, "Errors").
 */
#ifndef PORTRES_LINUX_H
#define PORTRES_LINUX_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "portres.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <linux/inet_diag.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "sockdiag.h"

/* The helpers below are shared by the backend's files only: keep them out
 * of the extension's dynamic symbol table. */
#pragma GCC visibility push(hidden)

/* Record errno as the failure of CALL and return it. */
static inline int lx_fail(const char *call)
{
    return portres_fail(errno, call);
}

/* Per-port state flags. */
enum {
    PORT_USED = 1,     /* handed to a caller's socket (may have closed since) */
    PORT_STEERED = 2,  /* the placeholder's reuseport group steers to index 1 */
    PORT_PAIR = 4,     /* UDP: held by an AF_INET + a V6ONLY AF_INET6 pair */
    PORT_STEERED4 = 8, /* PAIR mode: the AF_INET placeholder's group steered */
    PORT_TRACKED = 16, /* USED, and the caller's socket is in the block's epoll */
    PORT_CLOSING = 32, /* USED; the caller's socket's file is released, but the
                        * socket may not be off the port yet: see reclaim.c */
    PORT_V6 = 64,      /* USED: the caller's socket is AF_INET6 */
    PORT_LOSSY = 128,  /* TRACKED, but its destroy message may never come */
};

/* The two hand-out sides of a port.  An AF_INET socket takes the IPv4
 * side, a V6ONLY AF_INET6 socket the IPv6 side, a dual-stack AF_INET6 one
 * both: so 0.0.0.0:p and a V6ONLY [::]:p are two hand-outs of port p, as a
 * server listening on both has them.  Each hand-out is tracked in a slot:
 * slot I (state[I], the sockets that take the IPv4 side, PORT_V6 when that
 * is a dual-stack one holding both) or slot COUNT + I (state6[I], a V6ONLY
 * socket); cookies[] and the epoll item data are by slot. */
enum { SIDE4 = 1, SIDE6 = 2 };

struct portres_block {
    pthread_mutex_t lock;
    struct portres_block *next, *prev; /* registry or unlisted list, under registry_lock */
    int listed;                        /* which list: LISTED_* (registry.c) */
    size_t marker_line;                /* its line in the runtime marker, or SIZE_MAX */
    struct association *assoc;         /* its associations, under registry_lock */
    uint64_t token;
    unsigned start, count;
    int protocol;
    int closed;
    int family;            /* of the main placeholders */
    unsigned cursor;       /* next port index to try */
    int *fds;              /* main placeholder per port */
    int *fds4;             /* UDP PAIR mode: AF_INET placeholder, or -1 */
    unsigned char *state;  /* per port: the IPv4 side (or both), PORT_* */
    unsigned char *state6; /* per port: the IPv6 side, USED TRACKED CLOSING
                            * LOSSY V6 only; NULL before the first hand-out
                            * (allocated with cookies, freed with them) */
    uint64_t *cookies;     /* per slot: SO_COOKIE of the socket it was handed to */
    int epfd;              /* release tracking (see reclaim.c), or -1 */
    int infofd;            /* /proc/self/fdinfo/<epfd>, or -1 */
    int diagfd;            /* NETLINK_SOCK_DIAG kept for confirming dumps, or -1 */
    int destroyfd;         /* NETLINK_SOCK_DIAG in the destroy groups (reclaim.c), or -1 */
    int destroy_state;     /* reclaim.c: not set up, on, unavailable */
    pid_t track_pid;       /* the process infofd describes */
    int spare;             /* acquire: an unbound socket the next probe reuses, or -1 */
};

/* The association of a socket that is not bound yet, by its inode: with a
 * runtime block (BLOCK), or a persistent range (BLOCK NULL).  In a hash
 * chain by (dev, ino), and in its block's list. */
struct association {
    dev_t dev;
    ino_t ino;
    portres_block *block;
    unsigned range_start, range_count; /* a persistent block; 0 for runtime */
    struct association *hnext;         /* hash chain */
    struct association *bnext, *bprev; /* the block's list */
};

/* The state flags of hand-out slot S of B (see SIDE4). */
static inline unsigned char *slot_state(portres_block *b, unsigned s)
{
    return s < b->count ? &b->state[s] : &b->state6[s - b->count];
}

/* The sides of port index I handed out now (SIDE4 | SIDE6 bits). */
static inline unsigned port_sides(const portres_block *b, unsigned i)
{
    unsigned t = 0;
    if (b->state[i] & PORT_USED)
        t |= b->state[i] & PORT_V6 ? SIDE4 | SIDE6 : SIDE4;
    if (b->state6 && (b->state6[i] & PORT_USED))
        t |= SIDE6;
    return t;
}

/* ------------------------------------------------------------ registry.c */

extern pthread_mutex_t registry_lock;
extern int have_ipv6; /* set once by portres_backend_init */

/* Every lookup below is O(1) in the number of blocks and associations the
 * process holds (hash tables, lists with back links): an acquire, close,
 * associate or bind costs the same with 10,000 blocks held as with none. */
uint64_t new_token(void);
void list_unlisted(portres_block *b);
void unlist(portres_block *b);
int register_block(portres_block *b);
portres_block *find_block(uint64_t token);                  /* registry_lock held; NULL if none */
struct association *find_association(dev_t dev, ino_t ino); /* registry_lock held */
int record_association(dev_t dev, ino_t ino, portres_block *block, unsigned range_start,
                       unsigned range_count);
void forget_association(struct association *a); /* registry_lock held */
/* registry_lock held, released on return; OWNED: the caller holds B (see registry.c) */
void close_block_registry_held(portres_block *b, int owned);

/* ------------------------------------------------------------------ sys.c */

int read_proc_file(const char *path, char **out);
int read_proc_ints(const char *path, int *vals, int n);
int set_int(int fd, int level, int name, int value);
void sockaddr_for_port(int family, unsigned port, struct sockaddr_storage *ss, socklen_t *len);
void set_port(struct sockaddr *sa, unsigned port);
unsigned get_port(const struct sockaddr *sa);
int is_wildcard(const struct sockaddr *sa);
int sock_type_for(int protocol);
int new_socket(int family, int type, unsigned still_needed);
void close_fd(int *fd);
void close_fds(int *fds, unsigned n);

/* ------------------------------------------------------------- reserved.c */

unsigned char *reserved_port_map(int *err);
int in_map(const unsigned char *map, unsigned port);
void set_in_map(unsigned char *map, unsigned port);

/* --------------------------------------------------------- placeholders.c */

int new_placeholder(int family, int v6only, int protocol, unsigned port, int reuseport_first,
                    unsigned still_needed);
int place(portres_block *b, int fd, unsigned port);
int main_socket(portres_block *b, unsigned still_needed);

/* ------------------------------------------------------------------ bpf.c */

void udp_block_ref(void);
void udp_block_unref(void);
void shared_prog_check(unsigned k, int check);
int attach_ret(int fd, int optname, unsigned k);
int layout_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard);
int steer_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard);
/* fork(): take the programs' lock before, release it after; the child
 * closes the programs (no UDP block is left there). */
void bpf_atfork_prepare(void);
void bpf_atfork_parent(void);
void bpf_atfork_child(void);

/* -------------------------------------------------------------- reclaim.c */

/* Tracking descriptors set to -1 (acquire), closed (release, forked child). */
void reclaim_init(portres_block *b);
void reclaim_close(portres_block *b);
/* Before the bind of the caller's FD in hand-out slot S (I, or COUNT + I
 * for the IPv6 side of port index I): track it (its epoll item, its
 * cookie).  Returns 0, or errno: the hand-out is refused. */
int track_handout(portres_block *b, unsigned s, int fd);
/* The bind after track_handout() failed: forget FD. */
void untrack_handout(portres_block *b, unsigned s, int fd);
/* The bind after track_handout() succeeded; the socket is of FAMILY. */
void handed_out(portres_block *b, unsigned s, int family);
/* Return to the pool the handed-out ports whose socket is gone; *FREED
 * counts them.  Block locked.  Returns 0, or errno when the ports could not
 * be checked (then nothing is freed that is not known to be free). */
int reclaim(portres_block *b, unsigned *freed);

/* ------------------------------------------------------------- outbound.c */

/* An associated socket's automatic port choice narrowed to [START,
 * START+COUNT) where the kernel can (IP_LOCAL_PORT_RANGE); 0 or errno. */
int confine_autobind(int fd, unsigned start, unsigned count);

/* ----------------------------------------------------------------- bind.c */

int check_bindable(portres_block *b, int fd, const struct sockaddr *addr);
int bind_in_block(portres_block *b, int fd, const struct sockaddr *addr, socklen_t addrlen,
                  unsigned *port_out, int registry_held, int fresh);

#pragma GCC visibility pop

#endif /* PORTRES_LINUX_H */
