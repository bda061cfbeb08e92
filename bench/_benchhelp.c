/*
 * _benchhelp.c - the C side of the portres benchmarks (bench/run.py).
 *
 * Built at bench time with cc into a temporary directory as a tiny CPython
 * extension (no setuptools), with src/linux/sockdiag.c and src/error.c:
 * bench/run.py imports it from there.
 *
 * The bare-syscall baselines run their whole N-port loop inside C and time
 * it there with clock_gettime(CLOCK_MONOTONIC) (the clock behind
 * time.perf_counter_ns): the one Python call per loop is NOT counted in the
 * baseline, so portres, timed from Python around its public call, carries
 * its own call overhead and the baseline carries none.
 *
 *   bare_hold(start, n, type, v6only, reuseport_first) -> (hold_ns, close_ns)
 *       per port: socket(AF_INET6, type|SOCK_CLOEXEC), IPV6_V6ONLY=0 only
 *       when the sysctl default is not already 0 (v6only=1 means "set it"),
 *       bind([::]:start+i), setsockopt(SO_REUSEPORT); then close() each.
 *   bare_socket_bind(n, shared_start) -> (hold_ns, close_ns)
 *       per socket: socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC) and
 *       bind(127.0.0.1:0); with shared_start != 0 instead SO_REUSEPORT and
 *       bind(0.0.0.0:shared_start+i) (a port held by a placeholder).
 *   floor_cycle(n, type, port, nports, step)
 *           -> (ns, drained, yielded, polled, missed, overrun)
 *       the reuse cycle of a block (res.socket() + close()) in C, built up
 *       step by step (the floor section of bench/run.py); n x an AF_INET
 *       socket of TYPE, then per STEP, each adding to the one before:
 *         'a' bind(127.0.0.1:0) + close(): the plain cycle (no port, block);
 *         'b' SO_REUSEPORT + bind(0.0.0.0:port + k) instead, k < nports in
 *             turn, ports the caller's block holds by its placeholders;
 *         'c' + getsockopt(SO_COOKIE) before the bind;
 *         'd' + epoll_ctl(ADD) into the block's epoll instance before the
 *             bind (no events asked; the kernel removes it at close);
 *         'e' + the block's destroy listener (sockdiag.c's own
 *             diag_destroy_listener(): the same groups and cBPF port
 *             filter); a port is taken again once its last socket's
 *             message is in (the cookie matches), from the cursor as
 *             bind.c scan() takes them; when none is, the listener is
 *             drained (diag_destroyed()), and if that gives none back,
 *             not waited for: every port counts as given back;
 *         'f' + waiting then for a message by reclaim.c's own wait
 *             (sockdiag.c diag_wait_destroyed(): sched_yield() and a drain
 *             twice, then poll() and a drain for at most CLOSING_WAIT_MS),
 *             and reclaim()'s fallback when none comes (a dump);
 *         'g' + the fdinfo read reclaim.c find_released() makes before it
 *             waits (reclaim()'s own path).
 *       The epoll instance, listener and fdinfo descriptor are made before
 *       the timed loop and closed after it (a block makes them once).  The
 *       counts say how each reclaim ended (from 'e' on; a reclaim is when
 *       every port of the block is handed out and none known free, as
 *       bind.c scan() then reclaim() see it): a message was in at the
 *       first drain, after sched_yield(), after poll(); none was (not
 *       waited for, or CLOSING_WAIT_MS passed); the listener overran
 *       (ENOBUFS).  From 'f' on the last two pay reclaim()'s fallback, a
 *       dump of the sockets that take the block's traffic.
 *   diag_dump(tcp, lo, hi) -> (ns, sockets)
 *       the kernel's price of mapping a port range: one NETLINK_SOCK_DIAG
 *       dump per family (AF_INET, AF_INET6) of the TCP (tcp=1) or UDP
 *       sockets whose local port is in [lo, hi], every state, filtered in
 *       the kernel, by the backend's own code (src/linux/sockdiag.c,
 *       compiled in); timed inside C.
 *   udp_floor(n, getname=False) -> ns
 *       the C floor of a UDP acquire(1): n x (socket(AF_INET6, SOCK_DGRAM),
 *       IPV6_V6ONLY=0, bind([::]:0), SO_REUSEPORT, a drop filter, close()),
 *       by the loop floor_cycle() uses.  The filter is
 *       an eBPF "return 0" loaded once per call and attached by reference
 *       (SO_ATTACH_BPF) where the process may load one, the one-instruction
 *       cBPF form otherwise, as the backend does.
 *   probe_acquire(count, lo, hi, seed) -> ns
 *       the C floor of a wildcard acquire(count) in a crowded range: from a
 *       random window of [lo, hi], bind count TCP sockets ([::], dual-stack)
 *       to consecutive free ports, probing each window from its far end (a
 *       failed bind moves the next window past the taken port and reuses
 *       the unbound socket), then close them.  The same probing as the
 *       backend, without its bookkeeping.
 *   noop(*args) -> None        a METH_FASTCALL function doing nothing
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>

#include "portres.h"
#include "linux/sockdiag.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static PyObject *noop(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self, (void)args, (void)nargs;
    Py_RETURN_NONE;
}

static PyObject *fail(int err, int *fds, int n)
{
    int i;
    for (i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *bare_hold(PyObject *self, PyObject *args)
{
    int start, n, type, v6only, reuseport_first, i, one = 1, zero = 0, err = 0;
    int *fds;
    long long t0, t1, t2;
    struct sockaddr_in6 a;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiii", &start, &n, &type, &v6only, &reuseport_first))
        return NULL;
    if (n < 1 || start < 1 || start + n - 1 > 65535)
        return PyErr_Format(PyExc_ValueError, "bad block %d+%d", start, n);
    fds = malloc((size_t)n * sizeof *fds);
    if (!fds)
        return PyErr_NoMemory();
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;

    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        int fd = socket(AF_INET6, type | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            break;
        }
        fds[i] = fd;
        a.sin6_port = htons((uint16_t)(start + i));
        if ((v6only && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero))
            || (reuseport_first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            || bind(fd, (struct sockaddr *)&a, sizeof a)
            || (!reuseport_first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))) {
            err = errno;
            i++;
            break;
        }
    }
    t1 = now_ns();
    if (!err) {
        for (i = 0; i < n; i++)
            close(fds[i]);
    }
    t2 = now_ns();
    Py_END_ALLOW_THREADS

    if (err)
        return fail(err, fds, i);
    free(fds);
    return Py_BuildValue("(LL)", t1 - t0, t2 - t1);
}

static PyObject *bare_socket_bind(PyObject *self, PyObject *args)
{
    int n, shared_start, i, one = 1, err = 0;
    int *fds;
    long long t0, t1, t2;
    struct sockaddr_in a;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &n, &shared_start))
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "bad n %d", n);
    fds = malloc((size_t)n * sizeof *fds);
    if (!fds)
        return PyErr_NoMemory();
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = shared_start ? htonl(INADDR_ANY) : htonl(INADDR_LOOPBACK);

    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            break;
        }
        fds[i] = fd;
        a.sin_port = shared_start ? htons((uint16_t)(shared_start + i)) : 0;
        if ((shared_start && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            || bind(fd, (struct sockaddr *)&a, sizeof a)) {
            err = errno;
            i++;
            break;
        }
    }
    t1 = now_ns();
    if (!err) {
        for (i = 0; i < n; i++)
            close(fds[i]);
    }
    t2 = now_ns();
    Py_END_ALLOW_THREADS

    if (err)
        return fail(err, fds, i);
    free(fds);
    return Py_BuildValue("(LL)", t1 - t0, t2 - t1);
}

static void count_cb(const struct inet_diag_msg *m, void *ctx)
{
    (void)m;
    (*(long *)ctx)++;
}

/* One socket's cycle in a C loop, the steps in the order the backend makes
 * them (bind.c bind_in_block() then reclaim.c track_handout(): SO_REUSEPORT,
 * the cookie, the epoll item, the bind; placeholders.c: IPV6_V6ONLY first,
 * SO_REUSEPORT and the drop filter after a placeholder's bind).  One loop
 * for every cycle baseline, so that they differ only in the steps set. */
struct cycle {
    int family, type;
    struct sockaddr_storage addr; /* the port is set per cycle when nports */
    socklen_t addrlen;
    unsigned port, nports; /* nports: bind port + k, k < nports (ports placeholders hold) */
    unsigned cursor;       /* the next k, as a block's cursor */
    int v6only_zero;       /* IPV6_V6ONLY = 0 before the bind */
    int reuseport;         /* SO_REUSEPORT: 0 no, 1 before the bind, 2 after it */
    int cookie;            /* SO_COOKIE read before the bind */
    int ep;                /* an epoll instance: an item added before the bind, or -1 */
    int filter;            /* a drop filter after the bind: prog >= 0 by reference, else cBPF */
    int prog;
    int getname;       /* getsockname() after it all: the port a bind to 0 got */
    int destroyfd;     /* the block's destroy listener, or -1 */
    int wait;          /* 1: wait for a reused port's message as wait_destroyed() does */
    int infofd;        /* /proc/self/fdinfo/<ep>: read before that wait (2), or -1 */
    uint64_t *cookies; /* per port: the cookie of the socket whose message is awaited */
    int diagfd;        /* the block's netlink socket for dumps, or -1 */
    unsigned freed;    /* ports given back by the current reclaim */
    int lossy, err;    /* the current reclaim's drains: messages lost, another error */
    long how[5];       /* per reclaim: HOW_* */
};

/* How a reclaim ended: its port's message was in at the first drain, after
 * sched_yield(), after poll(); it was not (not waited for, or
 * CLOSING_WAIT_MS passed: a dump); the listener overran (a dump). */
enum { HOW_DRAINED, HOW_YIELDED, HOW_POLLED, HOW_MISSED, HOW_OVERRUN };

/* bench/run.py names the steps of the floor section by these letters. */
enum {
    STEP_PLAIN = 'a',
    STEP_SHARED,
    STEP_COOKIE,
    STEP_EPOLL,
    STEP_LISTEN,
    STEP_WAIT,
    STEP_FDINFO
};

static void destroyed_cb(const struct inet_diag_msg *m, void *ctx)
{
    struct cycle *c = ctx;
    unsigned port = ntohs(m->id.idiag_sport);
    uint64_t cookie = (uint64_t)m->id.idiag_cookie[0] | (uint64_t)m->id.idiag_cookie[1] << 32;
    if (port >= c->port && port - c->port < c->nports && cookie
        && c->cookies[port - c->port] == cookie) {
        c->cookies[port - c->port] = 0; /* reclaim.c destroyed_cb(): its own socket's message */
        c->freed++;
    }
}

/* reclaim.c find_released(), which a reclaim makes when no message gave a
 * port back: getpid(), one pread() of the epoll instance's fdinfo into a
 * buffer sized for the tracked sockets, each item's data parsed into a
 * bitmap. */
static int read_fdinfo(struct cycle *c, unsigned tracked)
{
    size_t cap = 512 + 128 * (size_t)tracked;
    char *buf = malloc(cap + 1), *p;
    unsigned char *alive = calloc((c->nports + 7) / 8, 1);
    ssize_t len;
    (void)getpid(); /* its check for a forked child */
    len = buf && alive ? pread(c->infofd, buf, cap, 0) : -1;
    int err = len < 0 ? (buf && alive ? errno : ENOMEM) : 0;
    if (!err) {
        buf[len] = '\0';
        for (p = buf; (p = strstr(p, "tfd:"));) {
            char *data = strstr(p, " data:"), *end, *eol = strchr(p, '\n');
            unsigned long long v;
            p += 4;
            if (!data || (eol && data > eol))
                continue;
            v = strtoull(data + 6, &end, 16);
            if (end != data + 6 && v < c->nports)
                alive[v / 8] |= (unsigned char)(1u << (v % 8));
        }
    }
    free(buf);
    free(alive);
    return err;
}

/* What reclaim() does when no message can give the port back (the wait
 * timed out, or the listener overran: ENOBUFS, every port LOSSY):
 * confirm_by_dump(), a dump of the AF_INET sockets that take the block's
 * traffic (TCP listeners, every UDP socket) on its kept netlink socket;
 * the closed sockets are off their ports by then, so all are given back.
 * Without the wait (step e) nothing is dumped: all are given back as they
 * are, and the block's next sweep drains again. */
static int confirm_by_dump(struct cycle *c, int how)
{
    long count = 0;
    int err = 0;
    c->how[how]++;
    if (c->wait)
        err = diag_dump_on(&c->diagfd, c->type == SOCK_DGRAM ? PORTRES_UDP : PORTRES_TCP, AF_INET,
                           c->port, c->port + c->nports - 1, c->type == SOCK_DGRAM ? ~0u : 1u << 10,
                           count_cb, &count);
    memset(c->cookies, 0, c->nports * sizeof *c->cookies);
    return err;
}

/* reclaim.c take_destroyed(): the messages queued; an overrun (ENOBUFS:
 * messages lost) makes the reclaim's ports LOSSY, another error is kept
 * for the caller. */
static void drain(void *ctx)
{
    struct cycle *c = ctx;
    int err = diag_destroyed(c->destroyfd, destroyed_cb, c);
    if (err == ENOBUFS)
        c->lossy = 1;
    else if (err && !c->err)
        c->err = err;
}

/* Every port of the block was handed out and none is known free: as
 * reclaim() does, drain the listener; if that gave none back, read fdinfo
 * (find_released(), step g) and, unless messages were lost, wait for a
 * message that gives a port back with reclaim.c's own wait
 * (diag_wait_destroyed()); else confirm by a dump.  Without wait (step e)
 * every port counts as given back after the drain.  Returns 0 or errno. */
static int reclaim(struct cycle *c)
{
    int err, how;
    c->freed = 0;
    c->lossy = 0;
    drain(c);
    if (c->err)
        return c->err;
    if (c->freed) {
        c->how[HOW_DRAINED]++;
        return 0;
    }
    if (!c->wait)
        return confirm_by_dump(c, HOW_MISSED);
    if (c->wait == 2 && (err = read_fdinfo(c, 1)))
        return err;
    if (!c->lossy) {
        how = diag_wait_destroyed(c->destroyfd, drain, c, &c->freed);
        if (c->err)
            return c->err;
        if (c->freed) {
            c->how[how == 1 ? HOW_YIELDED : HOW_POLLED]++;
            return 0;
        }
    }
    return confirm_by_dump(c, c->lossy ? HOW_OVERRUN : HOW_MISSED);
}

/* bind.c scan(): the first port from the cursor whose last socket's
 * message is in.  Returns 1 (*K set) or 0 (none). */
static int free_port(const struct cycle *c, unsigned *k)
{
    unsigned n;
    for (n = 0; n < c->nports; n++)
        if (!c->cookies[(c->cursor + n) % c->nports]) {
            *k = (c->cursor + n) % c->nports;
            return 1;
        }
    return 0;
}

/* The port index the next cycle binds: without a listener the next in
 * turn; with one, a free port as scan() takes it, after a reclaim when
 * there is none (a reclaim leaves one free).  Returns 0 or errno. */
static int next_port(struct cycle *c, unsigned *k)
{
    int err;
    *k = c->cursor;
    if (c->destroyfd >= 0 && !free_port(c, k) && ((err = reclaim(c)) || !free_port(c, k)))
        return err ? err : EAGAIN;
    c->cursor = (*k + 1) % c->nports;
    return 0;
}

/* N cycles of C; *NS is their time.  Returns 0 or errno. */
static int run_cycles(struct cycle *c, int n, long long *ns)
{
    struct sock_filter insn = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog cprog = {1, &insn};
    int i, one = 1, zero = 0, err = 0;
    long long t0 = now_ns();
    for (i = 0; i < n && !err; i++) {
        struct epoll_event ev;
        struct sockaddr_storage name;
        socklen_t namelen = sizeof name;
        uint64_t cookie = 0;
        socklen_t len = sizeof cookie;
        unsigned k = 0;
        int fd;
        if (c->nports && (err = next_port(c, &k)))
            break;
        if ((fd = socket(c->family, c->type | SOCK_CLOEXEC, 0)) < 0) {
            err = errno;
            break;
        }
        if (c->nports)
            ((struct sockaddr_in *)&c->addr)->sin_port = htons((uint16_t)(c->port + k));
        memset(&ev, 0, sizeof ev);
        ev.data.u64 = k;
        if ((c->v6only_zero && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero))
            || (c->reuseport == 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            || (c->cookie && getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len))
            || (c->ep >= 0 && epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev))
            || bind(fd, (struct sockaddr *)&c->addr, c->addrlen)
            || (c->reuseport == 2 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            || (c->filter
                && (c->prog >= 0
                        ? setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &c->prog, sizeof c->prog)
                        : setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &cprog, sizeof cprog)))
            || (c->getname && getsockname(fd, (struct sockaddr *)&name, &namelen)))
            err = errno;
        else if (c->destroyfd >= 0)
            c->cookies[k] = cookie;
        close(fd);
    }
    *ns = now_ns() - t0;
    return err;
}

/* floor_cycle(n, type, port, nports, step): see the top comment. */
static PyObject *floor_cycle(PyObject *self, PyObject *args)
{
    int n, type, port, nports, step, err = 0, have6;
    long long ns = 0;
    struct cycle c;
    struct sockaddr_in *a = (struct sockaddr_in *)&c.addr;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiC", &n, &type, &port, &nports, &step))
        return NULL;
    if (step < STEP_PLAIN || step > STEP_FDINFO || nports < 1 || nports > 1024
        || (step > STEP_PLAIN && (port < 1 || port + nports - 1 > 65535)))
        return PyErr_Format(PyExc_ValueError, "bad step %c or block %d+%d", step, port, nports);
    memset(&c, 0, sizeof c);
    c.family = AF_INET;
    c.type = type;
    c.addrlen = sizeof *a;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(step == STEP_PLAIN ? INADDR_LOOPBACK : INADDR_ANY);
    c.ep = c.destroyfd = c.infofd = c.diagfd = c.prog = -1;
    if (step > STEP_PLAIN) {
        c.port = (unsigned)port;
        c.nports = (unsigned)nports;
        c.reuseport = 1;
    }
    c.cookie = step >= STEP_COOKIE;
    c.wait = step >= STEP_WAIT ? 1 + (step == STEP_FDINFO) : 0;
    /* Set up as a block does once (its first hand-out, its first
     * reclaim): not timed, about 20 us in all. */
    if (step >= STEP_EPOLL && (c.ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (step >= STEP_LISTEN) {
        int fd6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0); /* registry.c: have_ipv6 */
        have6 = fd6 >= 0;
        if (fd6 >= 0)
            close(fd6);
        c.destroyfd = diag_destroy_listener(type == SOCK_DGRAM ? PORTRES_UDP : PORTRES_TCP, have6,
                                            c.port, c.port + c.nports - 1);
        if (c.destroyfd < 0)
            err = -c.destroyfd;
        c.cookies = calloc((size_t)nports, sizeof *c.cookies);
        if (!err && !c.cookies)
            err = ENOMEM;
    }
    if (!err && step == STEP_FDINFO) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", c.ep);
        if ((c.infofd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            err = errno;
    }
    if (!err) {
        Py_BEGIN_ALLOW_THREADS
        err = run_cycles(&c, n, &ns);
        Py_END_ALLOW_THREADS
    }
    if (c.ep >= 0)
        close(c.ep);
    if (c.destroyfd >= 0)
        close(c.destroyfd);
    if (c.infofd >= 0)
        close(c.infofd);
    if (c.diagfd >= 0)
        close(c.diagfd);
    free(c.cookies);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(Llllll)", ns, c.how[HOW_DRAINED], c.how[HOW_YIELDED], c.how[HOW_POLLED],
                         c.how[HOW_MISSED], c.how[HOW_OVERRUN]);
}

/* The project's own dump code (src/linux/sockdiag.c, compiled in by
 * bench/run.py): one socket per call, as a dump outside a block makes. */
static int dump_family(int tcp, int family, unsigned lo, unsigned hi, long *count)
{
    return diag_dump(tcp ? PORTRES_TCP : PORTRES_UDP, family, lo, hi, ~0u, count_cb, count);
}

static PyObject *time_diag_dump(PyObject *self, PyObject *args)
{
    int tcp, err;
    unsigned lo, hi;
    long count = 0;
    long long t0, t1;
    (void)self;
    if (!PyArg_ParseTuple(args, "iII", &tcp, &lo, &hi))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    err = dump_family(tcp, AF_INET, lo, hi, &count);
    if (!err)
        err = dump_family(tcp, AF_INET6, lo, hi, &count);
    t1 = now_ns();
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(Ll)", t1 - t0, count);
}

static int load_drop(void)
{
#ifdef SYS_bpf
    struct bpf_insn insns[2];
    union bpf_attr attr;
    memset(insns, 0, sizeof insns);
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    insns[0].dst_reg = BPF_REG_0;
    insns[1].code = BPF_JMP | BPF_EXIT;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t) "MIT";
    return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
#else
    return -1;
#endif
}

static PyObject *udp_floor(PyObject *self, PyObject *args)
{
    int n, getname = 0, err;
    long long ns = 0;
    struct cycle c;
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c.addr;
    (void)self;
    if (!PyArg_ParseTuple(args, "i|p", &n, &getname))
        return NULL;
    memset(&c, 0, sizeof c);
    c.getname = getname;
    c.family = a->sin6_family = AF_INET6;
    c.type = SOCK_DGRAM;
    c.addrlen = sizeof *a;
    a->sin6_addr = in6addr_any;
    c.v6only_zero = c.filter = 1;
    c.reuseport = 2;
    c.ep = c.destroyfd = c.infofd = c.diagfd = -1;
    c.prog = load_drop();
    Py_BEGIN_ALLOW_THREADS
    err = run_cycles(&c, n, &ns);
    Py_END_ALLOW_THREADS
    if (c.prog >= 0)
        close(c.prog);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(ns);
}

static PyObject *probe_acquire(PyObject *self, PyObject *args)
{
    int count, lo, hi, i, err = 0, spare = -1, zero = 0, found = 0;
    unsigned seed;
    int *fds;
    long long t0, t1;
    struct sockaddr_in6 a;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiI", &count, &lo, &hi, &seed))
        return NULL;
    if (count < 1 || lo < 1 || hi > 65535 || hi - lo + 1 < count)
        return PyErr_Format(PyExc_ValueError, "bad range");
    fds = malloc((size_t)count * sizeof *fds);
    if (!fds)
        return PyErr_NoMemory();
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    {
        unsigned span = (unsigned)(hi - lo + 1), tried = 0, first = (unsigned)lo + seed % span;
        while (!found && !err && tried < span) {
            int k, n = 0;
            if (first + (unsigned)count - 1 > (unsigned)hi) {
                tried += (unsigned)hi - first + 1;
                first = (unsigned)lo;
                continue;
            }
            for (k = count - 1; k >= 0; k--) { /* far end first */
                int fd = spare >= 0 ? spare : socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
                spare = -1;
                if (fd < 0 || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero)) {
                    err = errno;
                    if (fd >= 0)
                        close(fd);
                    break;
                }
                a.sin6_port = htons((uint16_t)(first + (unsigned)k));
                if (bind(fd, (struct sockaddr *)&a, sizeof a)) {
                    spare = fd; /* unbound: the next probe reuses it */
                    break;
                }
                fds[n++] = fd;
            }
            if (k < 0) {
                found = 1;
                for (i = 0; i < n; i++)
                    close(fds[i]);
                break;
            }
            for (i = 0; i < n; i++) /* a plain loop starts the next window afresh */
                close(fds[i]);
            tried += (unsigned)k + 1;
            first += (unsigned)k + 1;
        }
    }
    t1 = now_ns();
    if (spare >= 0)
        close(spare);
    Py_END_ALLOW_THREADS
    free(fds);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (!found)
        return PyErr_Format(PyExc_OSError, "no free window of %d", count);
    return PyLong_FromLongLong(t1 - t0);
}

static PyMethodDef methods[] = {
    {"udp_floor", udp_floor, METH_VARARGS,
     "The C floor of a UDP acquire(1), n times (getname: and the getsockname() that learns its "
     "port)."},
    {"probe_acquire", probe_acquire, METH_VARARGS, "A C loop probing a range with binds."},
    {"floor_cycle", floor_cycle, METH_VARARGS, "The reuse cycle in C, step by step."},
    {"diag_dump", time_diag_dump, METH_VARARGS, "Time the sock_diag map of a port range."},
    {"noop", (PyCFunction)(void (*)(void))noop, METH_FASTCALL, "Do nothing."},
    {"bare_hold", bare_hold, METH_VARARGS, "Bind N placeholder-like sockets, then close them."},
    {"bare_socket_bind", bare_socket_bind, METH_VARARGS, "N socket()+bind() in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_benchhelp", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__benchhelp(void)
{
    return PyModule_Create(&module);
}
