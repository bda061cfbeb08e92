/*
 * linux/sockdiag.c - NETLINK_SOCK_DIAG dumps (declared in sockdiag.h; bench/
 * compiles this file too).
 */
#ifdef __linux__

#include "portres.h"
#include "sockdiag.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* What the dumps read: "socket:[ino]" sockets of one family and protocol,
 * filtered by local port in the kernel (inet_diag bytecode). */

int diag_dump_on(int *fdp, int protocol, int family, unsigned lo, unsigned hi, uint32_t states,
                 void (*cb)(const struct inet_diag_msg *, void *), void *ctx)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
        struct nlattr attr;
        struct inet_diag_bc_op ops[4];
    } msg;
    struct sockaddr_nl nladdr = {.nl_family = AF_NETLINK};
    char buf[16384];
    int fd = *fdp, err = 0, done = 0;

    if (fd < 0) {
        fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
            return portres_fail(errno, "socket(NETLINK_SOCK_DIAG)");
        *fdp = fd;
    }
    memset(&msg, 0, sizeof msg);
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.req.sdiag_family = (uint8_t)family;
    msg.req.sdiag_protocol = protocol == PORTRES_UDP ? IPPROTO_UDP : IPPROTO_TCP;
    msg.req.idiag_states = states;
    /* Filter in the kernel: sport >= start && sport <= end.  A "no" jump
     * of len + 4 rejects (inet_diag bytecode convention). */
    msg.attr.nla_len = sizeof msg.attr + sizeof msg.ops;
    msg.attr.nla_type = INET_DIAG_REQ_BYTECODE;
    msg.ops[0] = (struct inet_diag_bc_op){INET_DIAG_BC_S_GE, 8, 20};
    msg.ops[1] = (struct inet_diag_bc_op){0, 0, (unsigned short)lo};
    msg.ops[2] = (struct inet_diag_bc_op){INET_DIAG_BC_S_LE, 8, 12};
    msg.ops[3] = (struct inet_diag_bc_op){0, 0, (unsigned short)hi};

    if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&nladdr, sizeof nladdr) < 0) {
        err = portres_fail(errno, "sendto(NETLINK_SOCK_DIAG)");
        goto out;
    }
    while (!done) {
        ssize_t len = recv(fd, buf, sizeof buf, 0);
        struct nlmsghdr *h;
        if (len <= 0) {
            if (len < 0 && errno == EINTR)
                continue;
            err = portres_fail(len < 0 ? errno : EPROTO, "recv(NETLINK_SOCK_DIAG)");
            break;
        }
        for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                err = portres_fail(e->error ? -e->error : EPROTO, "recv(NETLINK_SOCK_DIAG)");
                done = 1;
                break;
            }
            cb(NLMSG_DATA(h), ctx);
        }
    }
out:
    if (err) {
        close(*fdp);
        *fdp = -1;
    }
    return err;
}

int diag_dump(int protocol, int family, unsigned lo, unsigned hi, uint32_t states,
              void (*cb)(const struct inet_diag_msg *, void *), void *ctx)
{
    int fd = -1, err = diag_dump_on(&fd, protocol, family, lo, hi, states, cb, ctx);
    if (fd >= 0)
        close(fd);
    return err;
}

#endif /* __linux__ */
