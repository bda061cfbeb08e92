/*
 * linux/inspect.c - the kernel's sockets on a range of ports.
 */
#ifdef __linux__

#include "linux.h"

#include <stdlib.h>
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
    c->items[c->n++] = (portres_port_socket){
        c->family, m->idiag_state, ntohs(m->id.idiag_sport), m->idiag_uid, m->idiag_inode,
    };
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
