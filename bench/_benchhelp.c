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
 *   bare_cycle(n, shared_port, track) -> ns
 *       n x (socket(AF_INET, SOCK_STREAM), bind, close): bind(127.0.0.1:0),
 *       or with shared_port SO_REUSEPORT + bind(0.0.0.0:shared_port) (a port
 *       a placeholder holds) and, with track, epoll_ctl(ADD) of the socket
 *       into an epoll instance first (the kernel side of res.socket() +
 *       close() on a block that tracks releases).
 *   diag_dump(tcp, lo, hi) -> (ns, sockets)
 *       the kernel's price of mapping a port range: one NETLINK_SOCK_DIAG
 *       dump per family (AF_INET, AF_INET6) of the TCP (tcp=1) or UDP
 *       sockets whose local port is in [lo, hi], every state, filtered in
 *       the kernel, by the backend's own code (src/linux/sockdiag.c,
 *       compiled in); timed inside C.
 *   udp_floor(n) -> ns
 *       the C floor of a UDP acquire(1): n x (socket(AF_INET6, SOCK_DGRAM),
 *       bind([::]:0), SO_REUSEPORT, a drop filter, close()).  The filter is
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

static PyObject *bare_cycle(PyObject *self, PyObject *args)
{
    int n, shared, track, i, one = 1, err = 0, ep = -1;
    long long t0, t1;
    struct sockaddr_in a;
    (void)self;
    if (!PyArg_ParseTuple(args, "iii", &n, &shared, &track))
        return NULL;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = shared ? htonl(INADDR_ANY) : htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)shared);
    if (track && (ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    for (i = 0; i < n && !err; i++) {
        struct epoll_event ev;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            break;
        }
        memset(&ev, 0, sizeof ev);
        if ((shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
            || bind(fd, (struct sockaddr *)&a, sizeof a)
            || (track && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)))
            err = errno;
        close(fd);
    }
    t1 = now_ns();
    Py_END_ALLOW_THREADS
    if (ep >= 0)
        close(ep);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(t1 - t0);
}

/* The project's own dump code (src/linux/sockdiag.c, compiled in by
 * bench/run.py): one socket per call, as a dump outside a block makes. */
static void count_cb(const struct inet_diag_msg *m, void *ctx)
{
    (void)m;
    (*(long *)ctx)++;
}

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
    int n, i, one = 1, zero = 0, err = 0, prog;
    long long t0, t1;
    struct sockaddr_in6 a;
    struct sock_filter insn = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog cprog = {1, &insn};
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &n))
        return NULL;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    prog = load_drop();
    Py_BEGIN_ALLOW_THREADS
    t0 = now_ns();
    for (i = 0; i < n && !err; i++) {
        int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            break;
        }
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero)
            || bind(fd, (struct sockaddr *)&a, sizeof a)
            || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)
            || (prog >= 0 ? setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog)
                          : setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &cprog, sizeof cprog)))
            err = errno;
        close(fd);
    }
    t1 = now_ns();
    Py_END_ALLOW_THREADS
    if (prog >= 0)
        close(prog);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(t1 - t0);
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
    {"udp_floor", udp_floor, METH_VARARGS, "The C floor of a UDP acquire(1), n times."},
    {"probe_acquire", probe_acquire, METH_VARARGS, "A C loop probing a range with binds."},
    {"bare_cycle", bare_cycle, METH_VARARGS, "socket+bind+close cycles in C."},
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
