/*
 * linux/sockdiag.c - NETLINK_SOCK_DIAG dumps and the destroy listener
 * (declared in sockdiag.h; bench/ compiles this file too).
 */
#ifdef __linux__

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SO_ATTACH_FILTER under -std=c11 */
#endif

#include "portres.h"
#include "sockdiag.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/filter.h>
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

/* The destroy listener (see reclaim.c).  The filter runs on each message
 * the kernel multicasts, before it is queued: the message is the nlmsghdr
 * (16 bytes) and the inet_diag_msg, whose local port (network order) is
 * at byte 4 of it. */
int diag_destroy_listener(int protocol, int with_ipv6, unsigned lo, unsigned hi)
{
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, NLMSG_HDRLEN + 4), /* A = ntohs(sport) */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 2),
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, hi, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu), /* keep */
        BPF_STMT(BPF_RET | BPF_K, 0),           /* drop */
    };
    struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
    struct sockaddr_nl nladdr = {.nl_family = AF_NETLINK};
    int err, fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -portres_fail(errno, "socket(NETLINK_SOCK_DIAG)");
    /* The filter first: nothing unfiltered is queued once the groups are joined. */
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog)) {
        err = portres_fail(errno, "setsockopt(SO_ATTACH_FILTER)");
        close(fd);
        return -err;
    }
    if (protocol == PORTRES_UDP)
        nladdr.nl_groups = 1u << (SKNLGRP_INET_UDP_DESTROY - 1)
                           | (with_ipv6 ? 1u << (SKNLGRP_INET6_UDP_DESTROY - 1) : 0);
    else
        nladdr.nl_groups = 1u << (SKNLGRP_INET_TCP_DESTROY - 1)
                           | (with_ipv6 ? 1u << (SKNLGRP_INET6_TCP_DESTROY - 1) : 0);
    if (bind(fd, (struct sockaddr *)&nladdr, sizeof nladdr)) {
        err = portres_fail(errno, "bind(NETLINK_SOCK_DIAG groups)");
        close(fd);
        return -err;
    }
    return fd;
}

int diag_destroyed(int fd, diag_cb cb, void *ctx)
{
    /* One message per datagram (about 200 bytes): take up to 16 per call. */
    enum { BATCH = 16, SIZE = 1024 };
    char bufs[BATCH][SIZE];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    unsigned k;
    for (;;) {
        int got;
        memset(msgs, 0, sizeof msgs);
        for (k = 0; k < BATCH; k++) {
            iov[k].iov_base = bufs[k];
            iov[k].iov_len = SIZE;
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return portres_fail(errno, "recvmmsg(NETLINK_SOCK_DIAG groups)");
        }
        for (k = 0; k < (unsigned)got; k++) {
            size_t len = msgs[k].msg_len;
            struct nlmsghdr *h;
            for (h = (struct nlmsghdr *)bufs[k]; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len))
                if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY
                    && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                    cb(NLMSG_DATA(h), ctx);
        }
        if (got < BATCH)
            return 0;
    }
}

int diag_wait_destroyed(int fd, void (*take)(void *ctx), void *ctx, const unsigned *done)
{
    struct timespec t0, t;
    long left = CLOSING_WAIT_MS;
    int tries;
    /* The message is usually a work item queued on this CPU: let it run
     * before sleeping on the socket. */
    for (tries = 0; tries < 2 && !*done; tries++) {
        sched_yield();
        take(ctx);
    }
    if (*done)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!*done && left > 0) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return 0;
        take(ctx);
        clock_gettime(CLOCK_MONOTONIC, &t);
        left =
            CLOSING_WAIT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
    }
    return *done ? 2 : 0;
}

#endif /* __linux__ */
