/*
 * linux/placeholders.c - the placeholder sockets that hold a block's ports.
 */
#ifdef __linux__

#include "linux.h"

#include <unistd.h>
#include <netinet/in.h>

/* One placeholder: bound first, SO_REUSEPORT after (see the top comment);
 * or, for the UDP layouts that must form a steerable group at once,
 * SO_REUSEPORT before the bind.  An AF_INET6 one always gets IPV6_V6ONLY
 * set to V6ONLY, whatever net.ipv6.bindv6only says now.  Returns the fd or
 * -errno. */
int new_placeholder(int family, int v6only, int protocol, unsigned port, int reuseport_first,
                    unsigned still_needed)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err, fd = new_socket(family, sock_type_for(protocol), still_needed);
    if (fd < 0)
        return -errno;
    if (family == AF_INET6 && (err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only)))
        goto fail;
    if (reuseport_first && (err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1)))
        goto fail;
    sockaddr_for_port(family, port, &ss, &len);
    if (bind(fd, (struct sockaddr *)&ss, len)) {
        err = lx_fail("bind");
        goto fail;
    }
    if (!reuseport_first && (err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1)))
        goto fail;
    /* A UDP placeholder drops what reaches it instead of queueing it. */
    if (protocol == PORTRES_UDP && (err = attach_ret(fd, SO_ATTACH_FILTER, 0)))
        goto fail;
    return fd;
fail:
    close(fd);
    return -err;
}

/* Bind the unbound socket FD as the main placeholder of PORT in B: bind,
 * then SO_REUSEPORT (and the UDP drop filter).  Returns 0, or the bind's
 * errno with FD still unbound (so reusable), or -errno when FD is spoiled
 * (bound, but a later step failed). */
int place(portres_block *b, int fd, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err;
    sockaddr_for_port(b->family, port, &ss, &len);
    if (bind(fd, (struct sockaddr *)&ss, len))
        return lx_fail("bind");
    if ((err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1))
        || (b->protocol == PORTRES_UDP && (err = attach_ret(fd, SO_ATTACH_FILTER, 0))))
        return -err;
    return 0;
}

/* A new socket for a main placeholder of B: dual-stack when AF_INET6, set
 * explicitly (net.ipv6.bindv6only=1 would make it IPv6-only, leaving
 * 0.0.0.0:port to anyone). */
int main_socket(portres_block *b, unsigned still_needed)
{
    int err, fd = new_socket(b->family, sock_type_for(b->protocol), still_needed);
    if (fd < 0)
        return -errno;
    if (b->family == AF_INET6 && (err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0))) {
        close(fd);
        return -err;
    }
    return fd;
}

#endif /* __linux__ */
