/*
 * linux/bind.c - binding a caller's socket to a free port of a block.
 */
#ifdef __linux__

#include "linux.h"

#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>

static int socket_v6only(int fd, int family)
{
    int v = 0;
    socklen_t len = sizeof v;
    if (family != AF_INET6)
        return 0;
    if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len))
        return 0;
    return v != 0;
}

/* Whether FD is bound to a device (SO_BINDTODEVICE; the name's length is 0
 * when it is not). */
static int socket_has_device(int fd)
{
    char name[IFNAMSIZ];
    socklen_t len = sizeof name;
    return getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, &len) == 0 && len > 0;
}

/* ::ffff:0.0.0.0: an AF_INET6 socket on every IPv4 address (and no IPv6). */
static int is_v4mapped_any(const struct sockaddr *sa)
{
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr32[3] == 0;
}

/* UDP: the caller's socket, just bound on port index I, ties with port I's
 * main placeholder on the wildcard address but does not join its reuseport
 * group (it is bound to a device, or on ::ffff:0.0.0.0), so steering cannot
 * help.  A lookup stops at the first socket of the port's hash chain that
 * heads a reuseport group (udp4/udp6_lib_lookup2), and the placeholder is
 * ahead of the caller's socket there: it would take every datagram.  So the
 * placeholder is made again behind it: a new one with SO_REUSEPORT before
 * bind (an AF_INET6 reuseport socket goes to the tail of the chain; it joins
 * the old one's group and keeps its steering program), then the old one is
 * closed.  The port stays held throughout. */
static int placeholder_behind(portres_block *b, unsigned i)
{
    int v6only = (b->state[i] & PORT_PAIR) != 0;
    int fd = new_placeholder(AF_INET6, v6only, b->protocol, b->start + i, 1, 1);
    if (fd < 0)
        return -fd;
    close_fd(&b->fds[i]);
    b->fds[i] = fd;
    return 0;
}

/* One bind request: the caller's socket, the address (its port set per
 * try), the sides of a port it takes (NEED) and its UDP form. */
struct request {
    int fd;
    struct sockaddr *sa;
    socklen_t len;
    unsigned need; /* SIDE4 | SIDE6 */
    int v6only, wildcard, apart;
    int flex; /* a fresh AF_INET6 socket: made V6ONLY on a port whose IPv4 side is taken */
};

/* Bind R's socket to port index I of B, block locked.  APART: a UDP caller
 * that does not join the main placeholder's group (see
 * placeholder_behind()); so is a V6ONLY one on a port that keeps its
 * dual-stack placeholder (its IPv4 side is handed out: see layout_udp()). */
static int bind_index(portres_block *b, const struct request *r, unsigned i)
{
    int err, family = r->sa->sa_family, apart = r->apart;
    /* The IPv6 side alone is slot COUNT + I; anything taking IPv4 is slot I. */
    unsigned slot = r->need & SIDE4 ? i : b->count + i;
    if (b->protocol == PORTRES_UDP && (err = layout_udp(b, i, family, r->v6only, r->wildcard)))
        return err;
    if (b->protocol == PORTRES_UDP && family == AF_INET6 && b->family == AF_INET6 && r->v6only
        && r->wildcard && !(b->state[i] & PORT_PAIR))
        apart = 1;
    set_port(r->sa, b->start + i);
    if ((err = track_handout(b, slot, r->fd))) /* tracked from before the bind, or refused */
        return err;
    if (bind(r->fd, r->sa, r->len)) {
        err = lx_fail("bind");
        untrack_handout(b, slot, r->fd);
        return err;
    }
    handed_out(b, slot, family);
    if (b->protocol == PORTRES_UDP
        && (err =
                apart ? placeholder_behind(b, i) : steer_udp(b, i, family, r->v6only, r->wildcard)))
        return err; /* rare (EMFILE, ENOMEM); the socket stays bound, see caller */
    return 0;
}

/* A bind from the block was refused on port index I, which no socket of ours
 * holds.  If the caller's socket and the port's placeholder have different
 * owners (the process changed uid after acquire()), the port is not taken:
 * SO_REUSEPORT shares a port only between sockets of one uid.  Returns EPERM
 * then (recorded as the bind's), else 0.  Only on this failure path: the
 * hot path pays nothing for it. */
static int owner_differs(const portres_block *b, unsigned i, int fd)
{
    struct stat mine, ph;
    if (b->fds[i] < 0 || fstat(fd, &mine) || fstat(b->fds[i], &ph))
        return 0;
    return mine.st_uid != ph.st_uid ? portres_fail(EPERM, "bind") : 0;
}

/* R's socket becomes V6ONLY to take only port I's IPv6 side (R->flex, the
 * IPv4 side is taken).  Returns 0 or errno. */
static int take_v6_side(struct request *r)
{
    int err;
    if (r->need == SIDE6)
        return 0;
    if ((err = set_int(r->fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)))
        return err;
    r->need = SIDE6;
    r->v6only = 1;
    return 0;
}

/* Port index I refused R's bind with EADDRINUSE: a socket of our uid
 * shares it by SO_REUSEPORT outside portres; leave R's sides of it to that
 * socket until the next reclaim. */
static void leave_taken(portres_block *b, const struct request *r, unsigned i)
{
    if (r->need & SIDE4)
        b->state[i] =
            (unsigned char)((b->state[i] & ~PORT_V6) | PORT_USED | (r->need & SIDE6 ? PORT_V6 : 0));
    else if (b->state6)
        b->state6[i] |= PORT_USED;
}

/* Try the ports of B from its cursor for R.  PARTIAL: the ports with one
 * side taken whose other side R fits (else only wholly free ports).
 * Returns 0 (bound), EADDRINUSE (no port fits), or another errno. */
static int scan(portres_block *b, struct request *r, int partial)
{
    unsigned n, i;
    int err = portres_refuse(EADDRINUSE);
    for (n = 0; n < b->count; n++) {
        unsigned taken;
        i = (b->cursor + n) % b->count;
        taken = port_sides(b, i);
        if (!partial ? taken != 0 : r->flex ? taken != SIDE4 : !taken || (taken & r->need))
            continue;
        if (partial && r->flex && (err = take_v6_side(r)))
            return err;
        err = bind_index(b, r, i);
        if (err == EADDRINUSE && owner_differs(b, i, r->fd))
            return EPERM; /* every port would refuse it: say why */
        if (err == EADDRINUSE) {
            leave_taken(b, r, i);
            continue;
        }
        if (!err)
            b->cursor = (i + 1) % b->count;
        return err;
    }
    return err;
}

/* Bind to port index I of B, as R asks, reclaiming while a side R needs is
 * taken.  A fresh AF_INET6 socket (R->flex) takes both sides when it can,
 * else the IPv6 side (V6ONLY). */
static int bind_port(portres_block *b, struct request *r, unsigned i)
{
    unsigned freed, taken;
    int err, rerr = 0;
    /* One reclaim may give back one side of the port and not (yet) the
     * other: go on while each gives something back. */
    while ((taken = port_sides(b, i)) & r->need) {
        rerr = reclaim(b, &freed);
        if (!freed)
            break;
    }
    taken = port_sides(b, i); /* a reclaim also drops the sides left to others */
    if (r->flex && taken == SIDE4 && (err = take_v6_side(r)))
        return err;
    if (taken & r->need)
        return rerr ? rerr : portres_refuse(EADDRINUSE); /* could not tell: say why */
    err = bind_index(b, r, i);
    if (err == EADDRINUSE && owner_differs(b, i, r->fd))
        err = EPERM;
    return err;
}

/* Bind FD in B: a free port, or the port of ADDR when it is not 0.  Called
 * with B locked; the caller's SO_REUSEPORT is already set.  FRESH: FD is a
 * socket the binding just created (dual-stack, set by bind_in_block()).
 *
 * A port-0 request takes a wholly free port first, reclaiming if there is
 * none, and only then a port whose other side is taken (a V6ONLY socket
 * beside an AF_INET one, or the other way round): a server opening
 * 0.0.0.0 and [::] sockets on one port asks for that port. */
static int bind_in_block_locked(portres_block *b, int fd, struct sockaddr *sa, socklen_t addrlen,
                                unsigned *port_out, int fresh)
{
    unsigned want = get_port(sa), freed = 0;
    int err, family = sa->sa_family;
    struct request r;

    if (b->closed)
        return portres_refuse(EBADF);
    if (want && (want < b->start || want - b->start >= b->count))
        return portres_refuse(EADDRNOTAVAIL);
    r.fd = fd;
    r.sa = sa;
    r.len = addrlen;
    r.apart = 0;
    /* (not on an IPv4-mapped address, which a V6ONLY socket cannot bind) */
    r.flex = fresh && family == AF_INET6
             && !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    r.wildcard = is_wildcard(sa);
    /* The kernel makes an AF_INET6 socket bound to an IPv6 address (not
     * IPv4-mapped) V6ONLY: it takes the IPv6 side alone. */
    r.v6only =
        family == AF_INET6
        && ((!r.wildcard && !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr))
            || (!fresh && socket_v6only(fd, family)));
    r.need = family != AF_INET6 ? SIDE4 : r.v6only ? SIDE6 : SIDE4 | SIDE6;
    if (b->protocol == PORTRES_UDP && family == AF_INET6 && b->family == AF_INET6) {
        if (is_v4mapped_any(sa)) /* ties with the dual-stack placeholder on IPv4 */
            r.apart = r.wildcard = 1, r.flex = 0;
        else if (r.wildcard && !fresh)
            r.apart = socket_has_device(fd);
    }
    if (want) {
        err = bind_port(b, &r, want - b->start);
    } else {
        int rerr = 0;
        err = scan(b, &r, 0);
        /* A reclaim stops at the first slots it can give back (the
         * messages already in), which may be sides of no use to R (the
         * IPv6 side of a port whose IPv4 side is out): go on while each
         * gives something back, so the ports still closing are waited for
         * or confirmed.  Each pass gives back at least one slot, so this
         * ends. */
        while (err == EADDRINUSE) {
            rerr = reclaim(b, &freed);
            if (!freed)
                break;
            err = scan(b, &r, 0);
        }
        if (err == EADDRINUSE && (r.flex || r.need != (SIDE4 | SIDE6)))
            err = scan(b, &r, 1);
        if (err == EADDRINUSE && rerr)
            err = rerr; /* could not tell: say why, not "block full" */
    }
    if (!err)
        *port_out = get_port(sa);
    return err;
}

/* Bind FD in B.  REGISTRY_HELD: registry_lock is held on entry (B was just
 * found by token) and released here once B is locked, so B cannot be
 * closed and freed in between.  FRESH: FD is a socket the binding just
 * created and closes on failure: SO_REUSEPORT is known to be off and need
 * not be restored. */
int bind_in_block(portres_block *b, int fd, const struct sockaddr *addr, socklen_t addrlen,
                  unsigned *port_out, int registry_held, int fresh)
{
    struct sockaddr_storage ss;
    int err, one = 1, old_reuseport = 0;
    socklen_t optlen = sizeof old_reuseport;

    if (addrlen > (socklen_t)sizeof ss || addrlen < (socklen_t)sizeof(struct sockaddr_in)) {
        if (registry_held)
            pthread_mutex_unlock(&registry_lock);
        return portres_refuse(EINVAL);
    }
    memcpy(&ss, addr, addrlen);
    /* A socket portres makes is dual-stack whatever net.ipv6.bindv6only
     * says (the documented default, the same on Windows); a caller's own
     * socket keeps its setting. */
    if (fresh && addr->sa_family == AF_INET6 && (err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0))) {
        if (registry_held)
            pthread_mutex_unlock(&registry_lock);
        return err;
    }
    if (!fresh)
        getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &old_reuseport, &optlen);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        err = lx_fail("setsockopt(SO_REUSEPORT)");
        if (registry_held)
            pthread_mutex_unlock(&registry_lock);
        return err;
    }
    pthread_mutex_lock(&b->lock);
    if (registry_held)
        pthread_mutex_unlock(&registry_lock);
    err = bind_in_block_locked(b, fd, (struct sockaddr *)&ss, addrlen, port_out, fresh);
    pthread_mutex_unlock(&b->lock);
    if (err && !fresh) /* leave the caller's socket as it was */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &old_reuseport, sizeof old_reuseport);
    return err;
}

/* The checks every bind from a block starts with. */
int check_bindable(portres_block *b, int fd, const struct sockaddr *addr)
{
    int family, type;
    unsigned bound;
    int err = portres_socket_info(fd, &family, &type, &bound);
    if (err)
        return err;
    /* The type first: a raw socket's getsockname() port is its protocol,
     * not a bind. */
    if ((family != AF_INET && family != AF_INET6) || (type != SOCK_STREAM && type != SOCK_DGRAM))
        return portres_refuse(EOPNOTSUPP);
    if (bound)
        return portres_refuse(EISCONN);
    if (type != sock_type_for(b->protocol))
        return portres_refuse(EPROTOTYPE);
    if (family != addr->sa_family)
        return portres_refuse(EAFNOSUPPORT);
    return 0;
}

int portres_block_bind(portres_block *b, portres_socket s, const struct sockaddr *addr, int addrlen,
                       unsigned *port)
{
    int err = check_bindable(b, s, addr);
    return err ? err : bind_in_block(b, s, addr, (socklen_t)addrlen, port, 0, 0);
}

int portres_block_bind_new(portres_block *b, portres_socket s, const struct sockaddr *addr,
                           int addrlen, unsigned *port)
{
    return bind_in_block(b, s, addr, (socklen_t)addrlen, port, 0, 1);
}

int portres_block_socket(portres_block *b, int family, const struct sockaddr *addr, int addrlen,
                         portres_socket *out, unsigned *port)
{
    int fd, err;
    if (family != addr->sa_family)
        return portres_refuse(EAFNOSUPPORT);
    if (portres_block_closed(b))
        return portres_refuse(EBADF);
    fd = new_socket(family, sock_type_for(b->protocol), 1);
    if (fd < 0)
        return errno; /* recorded by new_socket() */
    err = bind_in_block(b, fd, addr, (socklen_t)addrlen, port, 0, 1);
    if (err) {
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

int portres_socket_info(portres_socket s, int *family, int *type, unsigned *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int v;
    socklen_t vlen = sizeof v;

    /* getsockname() gives the family and the port in one call. */
    memset(&ss, 0, sizeof ss);
    if (getsockname(s, (struct sockaddr *)&ss, &len) == 0) {
        *family = ss.ss_family;
    } else if (errno == EBADF || errno == ENOTSOCK) {
        return lx_fail("getsockname");
    } else { /* a family without getsockname */
        if (getsockopt(s, SOL_SOCKET, SO_DOMAIN, &v, &vlen))
            return lx_fail("getsockopt(SO_DOMAIN)");
        *family = v;
        vlen = sizeof v;
    }
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &vlen))
        return lx_fail("getsockopt(SO_TYPE)");
    *type = v;
    *bound_port = *family == AF_INET || *family == AF_INET6 ? get_port((struct sockaddr *)&ss) : 0;
    return 0;
}

/* Privilege drop: the placeholders of B go to UID (fchown(2) of a socket
 * moves its owner, the uid SO_REUSEPORT compares, since Linux 4.10), so a
 * process that drops to UID after acquire() still binds from B.  Sockets
 * made later by the process (UDP layout changes) are its own uid's: UID
 * once it has dropped.  Needs CAP_CHOWN unless UID is the owner already. */
int portres_block_set_owner(portres_block *b, unsigned uid)
{
    unsigned i;
    int err = 0;
    pthread_mutex_lock(&b->lock);
    if (b->closed)
        err = portres_refuse(EBADF);
    for (i = 0; !err && i < b->count; i++) {
        if (b->fds[i] >= 0 && fchown(b->fds[i], (uid_t)uid, (gid_t)-1))
            err = lx_fail("fchown");
        else if (b->fds4 && b->fds4[i] >= 0 && fchown(b->fds4[i], (uid_t)uid, (gid_t)-1))
            err = lx_fail("fchown");
    }
    pthread_mutex_unlock(&b->lock);
    return err;
}

/* The uid owning B's placeholders (for messages), or -1 if closed. */
long portres_block_owner(portres_block *b)
{
    struct stat st;
    long uid = -1;
    pthread_mutex_lock(&b->lock);
    if (!b->closed && b->fds[0] >= 0 && fstat(b->fds[0], &st) == 0)
        uid = (long)st.st_uid;
    pthread_mutex_unlock(&b->lock);
    return uid;
}

#endif /* __linux__ */
