/*
 * linux/associate.c - the raw calls: associate, release, and the bind that
 * honours an association.
 */
#ifdef __linux__

#include "linux.h"

#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/stat.h>

/* ------------------------------------------------- the raw calls */

static int socket_identity(int fd, dev_t *dev, ino_t *ino)
{
    struct stat st;
    if (fstat(fd, &st))
        return lx_fail("fstat");
    if (!S_ISSOCK(st.st_mode))
        return portres_refuse(ENOTSOCK);
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

/* The checks every association starts with: an unbound socket; its type
 * in *TYPE and its identity in *DEV, *INO. */
static int check_associable(int fd, int *type, dev_t *dev, ino_t *ino)
{
    int family, err;
    unsigned bound;
    if ((err = portres_socket_info(fd, &family, type, &bound)))
        return err;
    /* Only TCP/UDP over IP can be associated, as on Windows (WSAEOPNOTSUPP). */
    if ((family != AF_INET && family != AF_INET6) || (*type != SOCK_STREAM && *type != SOCK_DGRAM))
        return portres_refuse(EOPNOTSUPP);
    if (bound)
        return portres_refuse(EISCONN);
    return socket_identity(fd, dev, ino);
}

int portres_associate(portres_socket s, uint64_t token)
{
    dev_t dev = 0;
    ino_t ino = 0;
    int type = 0;
    portres_block *b;
    int err = check_associable(s, &type, &dev, &ino);
    if (err)
        return err;
    pthread_mutex_lock(&registry_lock);
    b = find_block(token);
    if (!b) /* a persistent token is the package's to resolve (portres_associate_range) */
        err = portres_refuse(ENOENT);
    else if (type != sock_type_for(b->protocol))
        err = portres_refuse(EPROTOTYPE);
    else if (!(err = confine_autobind(s, b->start, b->count)))
        err = record_association(dev, ino, b, 0, 0);
    pthread_mutex_unlock(&registry_lock);
    return err;
}

/* Persistent blocks are the package's: it resolves a persistent token
 * itself, against the kernel's list, at every use, and hands over the
 * block; no token of one is kept here to go stale. */
int portres_associate_range(portres_socket s, int protocol, unsigned start, unsigned count)
{
    dev_t dev = 0;
    ino_t ino = 0;
    int type = 0, err;
    if (start < 1 || count < 1 || start > 65535 || count > 65535 || start + count - 1 > 65535
        || (protocol != PORTRES_TCP && protocol != PORTRES_UDP))
        return portres_refuse(EINVAL);
    if ((err = check_associable(s, &type, &dev, &ino)))
        return err;
    if (type != sock_type_for(protocol))
        return portres_refuse(EPROTOTYPE);
    if ((err = confine_autobind(s, start, count)))
        return err;
    pthread_mutex_lock(&registry_lock);
    err = record_association(dev, ino, NULL, start, count); /* no runtime block */
    pthread_mutex_unlock(&registry_lock);
    return err;
}

/* A persistent block is what the kernel's list says, at every use: gone
 * (ENOENT) once ip_local_reserved_ports no longer holds all its ports. */
static int range_still_reserved(unsigned start, unsigned count)
{
    int err;
    unsigned p;
    unsigned char *map = reserved_port_map(&err);
    if (err)
        return err;
    for (p = start; p < start + count && !err; p++)
        if (!in_map(map, p))
            err = portres_refuse(ENOENT); /* refused, as outside the block */
    free(map);
    return err;
}

/* Bind to the first free port of a persistent block.  Such ports are only
 * kept out of the kernel's automatic choice (ip_local_reserved_ports), so a
 * plain bind is the whole mechanism. */
static int bind_in_range(int fd, const struct sockaddr *addr, socklen_t addrlen, unsigned start,
                         unsigned count, unsigned *port_out)
{
    struct sockaddr_storage ss;
    unsigned want, i;
    if (addrlen > (socklen_t)sizeof ss || addrlen < (socklen_t)sizeof(struct sockaddr_in))
        return portres_refuse(EINVAL);
    memcpy(&ss, addr, addrlen);
    want = get_port(addr);
    if (want && (want < start || want - start >= count))
        return portres_refuse(EADDRNOTAVAIL);
    for (i = want ? want - start : 0; i < count; i++) {
        set_port((struct sockaddr *)&ss, start + i);
        if (bind(fd, (struct sockaddr *)&ss, addrlen) == 0) {
            *port_out = start + i;
            return 0;
        }
        if (errno != EADDRINUSE || want)
            return lx_fail("bind");
    }
    return portres_fail(EADDRINUSE, "bind");
}

int portres_release(portres_socket s, uint64_t token)
{
    portres_block *b;
    dev_t dev = 0;
    ino_t ino = 0;
    int err = socket_identity(s, &dev, &ino);
    if (err)
        return err;
    pthread_mutex_lock(&registry_lock);
    b = find_block(token);
    if (!b) {
        pthread_mutex_unlock(&registry_lock);
        return portres_refuse(ENOENT);
    }
    close_block_registry_held(b, 0); /* found by token: B is its owner's to free */
    return 0;
}

/* The association of the socket (DEV, INO) is spent once it is bound, from
 * a runtime block or a persistent one alike. */
static void association_spent(dev_t dev, ino_t ino)
{
    struct association *a;
    pthread_mutex_lock(&registry_lock);
    if ((a = find_association(dev, ino)))
        forget_association(a);
    pthread_mutex_unlock(&registry_lock);
}

int portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen, unsigned *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    dev_t dev = 0;
    ino_t ino = 0;
    struct association *a;
    portres_block *b = NULL;
    int err = socket_identity(s, &dev, &ino);
    if (err)
        return err;

    pthread_mutex_lock(&registry_lock);
    a = find_association(dev, ino);
    if (a && a->range_count) {
        unsigned start = a->range_start, count = a->range_count;
        pthread_mutex_unlock(&registry_lock);
        if ((err = range_still_reserved(start, count)))
            return err;
        err = bind_in_range(s, addr, (socklen_t)addrlen, start, count, port);
        if (!err)
            association_spent(dev, ino);
        return err;
    }
    if (a)
        b = a->block;
    if (b) {
        if ((err = check_bindable(b, s, addr))) {
            pthread_mutex_unlock(&registry_lock);
            return err;
        }
        err = bind_in_block(b, s, addr, (socklen_t)addrlen, port, 1, 0);
        if (!err)
            association_spent(dev, ino);
        return err;
    }
    pthread_mutex_unlock(&registry_lock);
    if (bind(s, addr, (socklen_t)addrlen))
        return lx_fail("bind");
    if (getsockname(s, (struct sockaddr *)&ss, &len))
        return lx_fail("getsockname");
    *port = get_port((struct sockaddr *)&ss);
    return 0;
}

#endif /* __linux__ */
