/*
 * linux/inspect.c - the kernel's sockets on a range of ports.
 */
#ifdef __linux__

#include "linux.h"

#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

/* ------------------------------------------------- port inspection */

struct list_ctx {
    portres_port_socket *items;
    size_t n, cap;
    int family;
    int err;
};

static void list_cb(const struct inet_diag_msg *m, void *ctx)
{
    struct list_ctx *c = ctx;
    if (c->err)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        portres_port_socket *p = realloc(c->items, cap * sizeof *p);
        if (!p) {
            c->err = portres_fail(ENOMEM, "realloc");
            return;
        }
        c->items = p;
        c->cap = cap;
    }
    portres_port_socket *s = &c->items[c->n++];
    memset(s, 0, sizeof *s);
    s->family = c->family;
    s->state = m->idiag_state;
    s->port = ntohs(m->id.idiag_sport);
    /* idiag_src/idiag_dst are __be32[4]: the address bytes as they are. */
    memcpy(s->local, m->id.idiag_src, c->family == AF_INET ? 4 : 16);
    memcpy(s->remote, m->id.idiag_dst, c->family == AF_INET ? 4 : 16);
    s->remote_port = ntohs(m->id.idiag_dport);
    s->uid = m->idiag_uid;
    s->inode = m->idiag_inode;
}

int portres_port_sockets(int protocol, unsigned lo, unsigned hi, portres_port_socket **out,
                         size_t *n)
{
    struct list_ctx c = {NULL, 0, 0, AF_INET, 0};
    int err;
    portres_backend_init();
    err = diag_dump(protocol, AF_INET, lo, hi, ~0u, list_cb, &c);
    if (!err && !c.err && have_ipv6) {
        c.family = AF_INET6;
        err = diag_dump(protocol, AF_INET6, lo, hi, ~0u, list_cb, &c);
    }
    if (!err)
        err = c.err;
    if (err) {
        free(c.items);
        return err;
    }
    *out = c.items;
    *n = c.n;
    return 0;
}

void portres_port_sockets_free(portres_port_socket *sockets)
{
    free(sockets);
}

#endif /* __linux__ */
