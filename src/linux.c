/*
 * linux.c - the Linux backend: every kernel call portres makes on Linux.
 *
 * Linux has no port-reservation facility, so a runtime reservation is held
 * by one placeholder socket per port (DESIGN.md, "Linux backend"):
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
 * the group, is index 0); see attach_ret() for how the two programs are
 * shared.  See steer_udp() for the one case that needs a different
 * placeholder layout.  A port handed out returns to the block when the
 * caller's socket is released: see "giving ports back" (reclaim()).
 *
 * The hot paths make the system calls a plain program would, and no more
 * (bench/README.md has the figures): res.socket() is socket(), one
 * SO_REUSEPORT and bind() (the C floor of a plain socket() + bind(port 0));
 * a block of N ports is N x (socket(), bind(), SO_REUSEPORT), released with
 * close_range(2).
 *
 * Tokens are random 64-bit values kept in a process-wide registry, and an
 * association (portres_associate) is kept by socket inode until the bind.
 */
#ifdef __linux__

#ifndef _GNU_SOURCE
#  define _GNU_SOURCE
#endif

#include "portres.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef SO_ATTACH_BPF
#  define SO_ATTACH_BPF 50
#endif
#ifndef SO_ATTACH_REUSEPORT_CBPF
#  define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_ATTACH_REUSEPORT_EBPF
#  define SO_ATTACH_REUSEPORT_EBPF 52
#endif

/* Per-port state flags. */
enum {
    PORT_USED = 1,     /* handed to a caller's socket (may have closed since) */
    PORT_STEERED = 2,  /* the placeholder's reuseport group steers to index 1 */
    PORT_PAIR = 4,     /* UDP: held by an AF_INET + a V6ONLY AF_INET6 pair */
    PORT_STEERED4 = 8, /* PAIR mode: the AF_INET placeholder's group steered */
    PORT_TRACKED = 16, /* USED, and the caller's socket is in the block's epoll */
    PORT_CLOSING = 32, /* USED; the caller's socket's file is released, but the
                        * socket may not be off the port yet: see reclaim() */
    PORT_V6 = 64,      /* USED: the caller's socket is AF_INET6 */
};

struct portres_block {
    pthread_mutex_t lock;
    struct portres_block *next;   /* registry list, under registry_lock */
    uint64_t token;
    unsigned start, count;
    int protocol;
    int closed;
    int family;                   /* of the main placeholders */
    unsigned cursor;              /* next port index to try */
    int *fds;                     /* main placeholder per port */
    int *fds4;                    /* UDP PAIR mode: AF_INET placeholder, or -1 */
    unsigned char *state;
    int *handed;                  /* per port: the caller's descriptor it was bound on */
    int epfd;                     /* release tracking (see reclaim()), or -1 */
    int infofd;                   /* /proc/self/fdinfo/<epfd>, or -1 */
    int diagfd;                   /* NETLINK_SOCK_DIAG kept for reclaim_closing(), or -1 */
    pid_t track_pid;              /* the process infofd describes */
};

struct association {
    dev_t dev;
    ino_t ino;
    uint64_t token;
    unsigned range_start, range_count;   /* a persistent block; 0 for runtime */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static portres_block *registry;
static struct association *associations;
static size_t n_associations, cap_associations;

/* ---------------------------------------------------------------- helpers */

static int have_ipv6 = -1;        /* set once by portres_backend_init */
static int bindv6only_default;    /* net.ipv6.bindv6only */

static int read_proc_file(const char *path, char **out);

/* Up to N integers from a /proc file; returns how many (0 on error). */
static int read_proc_ints(const char *path, int *vals, int n)
{
    char *buf = NULL, *p, *end;
    int got = 0;
    if (read_proc_file(path, &buf))
        return 0;
    for (p = buf; got < n; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        vals[got++] = (int)v;
    }
    free(buf);
    return got;
}

static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int portres_backend_init(void)
{
    int v = 0;
    pthread_once(&atfork_once, register_atfork);
    if (have_ipv6 < 0) {
        int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0)
            close(fd);
        bindv6only_default = read_proc_ints("/proc/sys/net/ipv6/bindv6only", &v, 1) ? v : 0;
        have_ipv6 = fd >= 0;
    }
    return 0;
}

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof value) ? errno : 0;
}

/* The programs "return K": K = 0 drops (a socket filter), K = 1 picks the
 * second socket of a reuseport group.
 *
 * A cBPF program given to SO_ATTACH_FILTER or SO_ATTACH_REUSEPORT_CBPF is
 * copied, checked and JIT-compiled for every socket: about 5 us and a page
 * of kernel memory per UDP port.  Where the process may load eBPF programs
 * (root or CAP_BPF; anyone with kernel.unprivileged_bpf_disabled=0), each
 * is loaded once as an eBPF socket filter and attached by reference
 * (SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_EBPF): the same verdict for a
 * reference count.  Otherwise, and whenever that fails, the cBPF form.
 * The programs' descriptors are kept while a UDP block is held, and closed
 * with the last one: no descriptor outlives the reservations. */
static pthread_mutex_t prog_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int fd; uint32_t id; int failed; } ret_prog[2] = { { -1, 0, 0 }, { -1, 0, 0 } };
static unsigned udp_blocks;   /* UDP blocks held (or being acquired), under prog_lock */

static void udp_block_ref(void)
{
    pthread_mutex_lock(&prog_lock);
    udp_blocks++;
    pthread_mutex_unlock(&prog_lock);
}

static void udp_block_unref(void)
{
    unsigned k;
    pthread_mutex_lock(&prog_lock);
    if (udp_blocks && --udp_blocks == 0) {
        for (k = 0; k < 2; k++) {
            int fd = ret_prog[k].fd;
            __atomic_store_n(&ret_prog[k].fd, -1, __ATOMIC_RELAXED);
            if (fd >= 0)
                close(fd);
        }
    }
    pthread_mutex_unlock(&prog_lock);
}

#ifdef SYS_bpf
/* The id of the eBPF socket filter at FD, or 0. */
static uint32_t prog_id(int fd)
{
    struct bpf_prog_info info;
    union bpf_attr attr;
    memset(&info, 0, sizeof info);
    memset(&attr, 0, sizeof attr);
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = sizeof info;
    attr.info.info = (uint64_t)(uintptr_t)&info;
    if (syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof attr))
        return 0;
    return info.type == BPF_PROG_TYPE_SOCKET_FILTER ? info.id : 0;
}
#endif

/* Load the shared program "return K" if need be, or (CHECK) make sure the
 * descriptor kept for it still holds it: a program that closes descriptors
 * it does not know may have closed it.  Called once per acquire or bind. */
static void shared_prog_check(unsigned k, int check)
{
#ifdef SYS_bpf
    pthread_mutex_lock(&prog_lock);
    if (ret_prog[k].fd >= 0 && check && prog_id(ret_prog[k].fd) != ret_prog[k].id)
        __atomic_store_n(&ret_prog[k].fd, -1, __ATOMIC_RELAXED);   /* not ours: not closed */
    if (ret_prog[k].fd < 0 && !ret_prog[k].failed) {
        struct bpf_insn insns[2];
        union bpf_attr attr;
        int fd;
        memset(insns, 0, sizeof insns);
        insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;   /* r0 = K */
        insns[0].dst_reg = BPF_REG_0;
        insns[0].imm = (int32_t)k;
        insns[1].code = BPF_JMP | BPF_EXIT;            /* return r0 */
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = (uint64_t)(uintptr_t)insns;
        attr.insn_cnt = 2;
        attr.license = (uint64_t)(uintptr_t)"MIT";
        fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);   /* O_CLOEXEC */
        if (fd < 0) {
            ret_prog[k].failed = 1;   /* EPERM: unprivileged */
        } else if (!(ret_prog[k].id = prog_id(fd))) {
            close(fd);
            ret_prog[k].failed = 1;
        } else {
            __atomic_store_n(&ret_prog[k].fd, fd, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&prog_lock);
#else
    (void)k, (void)check;
#endif
}

/* Attach "return K" to FD: as a socket filter (OPTNAME SO_ATTACH_FILTER)
 * or as its reuseport group's selector (SO_ATTACH_REUSEPORT_CBPF). */
static int attach_ret(int fd, int optname, unsigned k)
{
    struct sock_filter insn = BPF_STMT(BPF_RET | BPF_K, k);
    struct sock_fprog prog = { 1, &insn };
    int shared = __atomic_load_n(&ret_prog[k].fd, __ATOMIC_RELAXED);
    if (shared >= 0
            && setsockopt(fd, SOL_SOCKET, optname == SO_ATTACH_FILTER ? SO_ATTACH_BPF
                          : SO_ATTACH_REUSEPORT_EBPF, &shared, sizeof shared) == 0)
        return 0;
    return setsockopt(fd, SOL_SOCKET, optname, &prog, sizeof prog) ? errno : 0;
}

static void sockaddr_for_port(int family, unsigned port, struct sockaddr_storage *ss,
                              socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_any;
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        *len = sizeof *a;
    }
}

static void set_port(struct sockaddr *sa, unsigned port)
{
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

static unsigned get_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static int is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static int sock_type_for(int protocol)
{
    return protocol == PORTRES_UDP ? SOCK_DGRAM : SOCK_STREAM;
}

/* Raise the soft RLIMIT_NOFILE towards the hard limit after an EMFILE: a
 * large block needs one descriptor per port.  Returns whether it rose. */
static int raise_nofile(unsigned still_needed)
{
    struct rlimit rl;
    rlim_t want;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return 0;
    want = rl.rlim_cur + still_needed + 64;
    if (want < rl.rlim_cur * 2)
        want = rl.rlim_cur * 2;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* socket() that raises the soft RLIMIT_NOFILE when the process runs out of
 * descriptors. */
static int new_socket(int family, int type, unsigned still_needed)
{
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0 && errno == EMFILE) {
        if (raise_nofile(still_needed))
            fd = socket(family, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            errno = EMFILE;
    }
    return fd;
}

/* Read a whole /proc file into *OUT (NUL-terminated, malloc'ed).  Returns 0
 * or errno; at the descriptor limit it raises the soft limit like
 * new_socket(), so a sysctl is never silently taken as empty. */
static int read_proc_file(const char *path, char **out)
{
    size_t cap = 4096;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EMFILE && raise_nofile(1))
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    /* A sysctl answers only the read at offset 0 (a second read returns
     * EOF): read it whole in one pread, with a buffer large enough. */
    for (;; cap *= 2) {
        ssize_t n;
        char *nbuf = realloc(buf, cap);
        if (!nbuf) {
            free(buf);
            close(fd);
            return ENOMEM;
        }
        buf = nbuf;
        n = pread(fd, buf, cap - 1, 0);
        if (n < 0 && errno == EINTR) {
            cap /= 2;
            continue;
        }
        if (n < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return err;
        }
        if ((size_t)n < cap - 1) {
            buf[n] = '\0';
            break;
        }
    }
    close(fd);
    *out = buf;
    return 0;
}

/* One placeholder: bound first, SO_REUSEPORT after (see the top comment);
 * or, for the UDP layouts that must form a steerable group at once,
 * SO_REUSEPORT before the bind.  Returns the fd or -errno. */
static int new_placeholder(int family, int v6only, int protocol, unsigned port,
                           int reuseport_first, unsigned still_needed)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err, fd = new_socket(family, sock_type_for(protocol), still_needed);
    if (fd < 0)
        return -errno;
    if (family == AF_INET6 && v6only != bindv6only_default
            && (err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only)))
        goto fail;
    if (reuseport_first && (err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1)))
        goto fail;
    sockaddr_for_port(family, port, &ss, &len);
    if (bind(fd, (struct sockaddr *)&ss, len)) {
        err = errno;
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

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

#if !defined(SYS_close_range) && (defined(__x86_64__) || defined(__i386__) \
        || defined(__aarch64__) || defined(__arm__) || defined(__riscv) \
        || defined(__powerpc__) || defined(__s390__))
#  define SYS_close_range 436   /* the same number on these (Linux 5.9+) */
#endif

/* Close the descriptors of FDS[0..N) (-1 entries skipped) and set them to
 * -1.  A run of consecutive descriptors (the usual layout: socket() returns
 * the lowest free one) goes in one close_range(2): the same kernel work as
 * a close() each, without a system call per descriptor.  Every descriptor
 * of such a run is one of ours, so nothing else is closed. */
static void close_fds(int *fds, unsigned n)
{
#ifdef SYS_close_range
    static int no_close_range;
#endif
    unsigned i = 0, j;
    while (i < n) {
        if (fds[i] < 0) {
            i++;
            continue;
        }
        for (j = i + 1; j < n && fds[j] >= 0 && fds[j] == fds[j - 1] + 1; j++)
            ;
#ifdef SYS_close_range
        if (j - i > 1 && !__atomic_load_n(&no_close_range, __ATOMIC_RELAXED)) {
            if (syscall(SYS_close_range, (unsigned)fds[i], (unsigned)fds[j - 1], 0u) == 0) {
                for (; i < j; i++)
                    fds[i] = -1;
                continue;
            }
            /* ENOSYS (before 5.9), EPERM (a seccomp filter): one by one */
            __atomic_store_n(&no_close_range, 1, __ATOMIC_RELAXED);
        }
#endif
        for (; i < j; i++)
            close_fd(&fds[i]);
    }
}

/* ------------------------------------------------------------ acquiring */

/* Ports the kernel keeps out of autobind (net.ipv4.ip_local_reserved_ports):
 * a wildcard block never takes them, as Windows never hands out excluded
 * ports.  Returns a 65536-bit map or NULL when there is none. */
static unsigned char *reserved_port_map(int *err)
{
    char *buf = NULL, *p;
    unsigned char *map;
    *err = read_proc_file("/proc/sys/net/ipv4/ip_local_reserved_ports", &buf);
    if (*err == ENOENT)   /* a kernel without the sysctl: nothing reserved */
        *err = 0;
    if (*err || !buf)
        return NULL;
    map = calloc(65536 / 8, 1);
    if (!map) {
        free(buf);
        *err = ENOMEM;
        return NULL;
    }
    for (p = buf; *p;) {
        char *end;
        unsigned long lo = strtoul(p, &end, 10), hi = lo;
        if (end == p)
            break;
        p = end;
        if (*p == '-') {
            hi = strtoul(p + 1, &end, 10);
            p = end;
        }
        for (; lo <= hi && lo < 65536; lo++)
            map[lo / 8] |= (unsigned char)(1u << (lo % 8));
        while (*p == ',' || *p == '\n' || *p == ' ')
            p++;
    }
    free(buf);
    return map;
}

static int in_map(const unsigned char *map, unsigned port)
{
    return map && (map[port / 8] >> (port % 8)) & 1;
}

static uint64_t new_token(void)
{
    uint64_t t = 0;
    while (t == 0) {
        if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t) {
            static uint64_t counter;
            t = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&t ^ ++counter;
        }
    }
    return t;
}

static void register_block(portres_block *b)
{
    portres_block *p;
    pthread_mutex_lock(&registry_lock);
    for (;;) {  /* tokens are unique among live reservations */
        for (p = registry; p && p->token != b->token; p = p->next)
            ;
        if (!p)
            break;
        b->token = new_token();
    }
    b->next = registry;
    registry = b;
    pthread_mutex_unlock(&registry_lock);
}

/* Bind placeholders for ports [first, first+count); on failure close the
 * ones bound, set *bad to the port that failed and return errno. */
static int hold_range(portres_block *b, unsigned first, unsigned *bad)
{
    unsigned i;
    for (i = 0; i < b->count; i++) {
        int fd = new_placeholder(b->family, 0, b->protocol, first + i, 0, b->count - i);
        if (fd < 0) {
            *bad = first + i;
            while (i > 0)
                close_fd(&b->fds[--i]);
            return -fd;
        }
        b->fds[i] = fd;
    }
    return 0;
}

static void set_in_map(unsigned char *map, unsigned port)
{
    map[port / 8] |= (unsigned char)(1u << (port % 8));
}

static int diag_dump(int protocol, int family, unsigned lo, unsigned hi, uint32_t states,
                     void (*cb)(const struct inet_diag_msg *, void *), void *ctx);
static void taken_cb(const struct inet_diag_msg *m, void *ctx)
{
    set_in_map(ctx, ntohs(m->id.idiag_sport));
}

/* Mark in TAKEN every port of [LO, HI] on which the kernel has a socket of
 * the protocol (any family, any state): one sock_diag dump instead of a
 * failed bind per taken port. */
static void mark_taken(int protocol, unsigned lo, unsigned hi, unsigned char *taken)
{
    if (diag_dump(protocol, AF_INET, lo, hi, ~0u, taken_cb, taken) == 0 && have_ipv6)
        diag_dump(protocol, AF_INET6, lo, hi, ~0u, taken_cb, taken);
}

/* Failed binds a wildcard acquire spends probing before it maps the whole
 * range with one sock_diag dump.  A failed bind costs about 0.5 us; the dump
 * walks the kernel's socket hash tables, whose size grows with the
 * machine's memory (about 400 us with 262144 TCP ehash buckets), and
 * reports every socket of the range (about 0.4 us each). */
#define PROBE_BUDGET 1024

/* Bind the unbound socket FD as the main placeholder of PORT in B: bind,
 * then SO_REUSEPORT (and the UDP drop filter).  Returns 0, or the bind's
 * errno with FD still unbound (so reusable), or -errno when FD is spoiled
 * (bound, but a later step failed). */
static int place(portres_block *b, int fd, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err;
    sockaddr_for_port(b->family, port, &ss, &len);
    if (bind(fd, (struct sockaddr *)&ss, len))
        return errno;
    if ((err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1))
            || (b->protocol == PORTRES_UDP && (err = attach_ret(fd, SO_ATTACH_FILTER, 0))))
        return -err;
    return 0;
}

/* A new socket for a main placeholder of B (dual-stack when AF_INET6). */
static int main_socket(portres_block *b, unsigned still_needed)
{
    int err, fd = new_socket(b->family, sock_type_for(b->protocol), still_needed);
    if (fd < 0)
        return -errno;
    if (b->family == AF_INET6 && bindv6only_default
            && (err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0))) {
        close(fd);
        return -err;
    }
    return fd;
}

/* Rotate A[0..N) left by R. */
static void rotate_left(int *a, unsigned n, unsigned r)
{
    unsigned i, j;
    int t;
    r %= n;
    if (!r)
        return;
    for (i = 0, j = r - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
    for (i = r, j = n - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
    for (i = 0, j = n - 1; i < j; i++, j--)
        t = a[i], a[i] = a[j], a[j] = t;
}

/* A wildcard block of one port: the kernel's own choice (a bind to port
 * 0) is a free port of the ephemeral range outside ip_local_reserved_ports,
 * found in the kernel without reading either sysctl. */
static int hold_any_one(portres_block *b, unsigned *port_out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int err, fd = main_socket(b, 1);
    if (fd < 0)
        return -fd;
    err = place(b, fd, 0);
    if (!err && getsockname(fd, (struct sockaddr *)&ss, &len))
        err = errno;
    if (err) {
        close(fd);
        return err < 0 ? -err : err;
    }
    b->fds[0] = fd;
    *port_out = get_port((struct sockaddr *)&ss);
    return 0;
}

/* A wildcard block: a window of the ephemeral range whose ports are all
 * free, from a random place.
 *
 * Probing a port is a bind() on a socket that a failed bind leaves unbound,
 * so the next probe reuses it: a taken port costs one failed bind, never a
 * socket.  Each window is filled from its far end down (as Boyer-Moore
 * compares), so a taken port moves the next window just past it, a whole
 * window at once when it is the far end; the placeholders bound above it
 * are kept in a ring indexed by port % count (any window of count ports
 * maps onto distinct slots) and serve the next window, which contains them.
 * Each port of the range is probed at most once per pass, and a pass costs
 * about one failed bind per window length of taken range.  After
 * PROBE_BUDGET failed binds, one sock_diag dump maps the taken ports of the
 * whole range and the remaining windows are chosen from the map: a crowded
 * range costs at most that budget plus one dump plus the binds of the
 * block, never a failed bind per (window, port) pair. */
static int hold_wildcard(portres_block *b, unsigned *first_out)
{
    int range[2] = {32768, 60999};
    unsigned lo, hi, span, offset, tried = 0, run, k, failures = 0;
    unsigned count = b->count, bad = 0;
    unsigned char *taken;
    unsigned *ports = NULL;   /* ports[slot]: the port b->fds[slot] holds */
    int mapped = 0, err = EADDRINUSE, spare = -1, *fds = b->fds;
    uint32_t rnd = 0;

    if (count == 1)
        return hold_any_one(b, first_out);
    taken = reserved_port_map(&err);
    if (err)
        return err;
    err = EADDRINUSE;
    if (read_proc_ints("/proc/sys/net/ipv4/ip_local_port_range", range, 2) != 2) {
        free(taken);
        return errno ? errno : EIO;
    }
    lo = (unsigned)range[0];
    hi = (unsigned)range[1];
    if (lo < 1 || hi > 65535 || lo > hi || hi - lo + 1 < count) {
        free(taken);
        return EADDRINUSE;
    }
    if (!(ports = malloc(count * sizeof *ports))) {
        free(taken);
        return ENOMEM;
    }
    span = hi - lo + 1;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)getpid() * 2654435761u;
    offset = rnd % span;

    while (tried < span) {
        unsigned first = lo + offset;
        if (first + count - 1 > hi) {   /* a window never wraps */
            tried += hi - first + 1;
            offset = 0;
            continue;
        }
        /* Skip to a window that the map says is free. */
        for (run = 0; run < count && !in_map(taken, first + run); run++)
            ;
        if (run < count) {
            tried += run + 1;
            offset = (first + run + 1 - lo) % span;
            continue;
        }
        /* From the far end down: a taken port moves the next window past
         * it, and the ports bound above it stay held for that window. */
        for (k = 0; k < count; k++) {
            unsigned port = first + count - 1 - k, slot = port % count;
            int fd;
            if (fds[slot] >= 0 && ports[slot] == port)
                continue;
            close_fd(&fds[slot]);   /* a port outside this window */
            fd = spare >= 0 ? spare : main_socket(b, count - k);
            spare = -1;
            if (fd < 0) {
                err = -fd;
                goto out;
            }
            err = place(b, fd, port);
            if (err == 0) {
                fds[slot] = fd;
                ports[slot] = port;
                continue;
            }
            if (err < 0) {   /* bound, then a setsockopt failed */
                close(fd);
                err = -err;
                goto out;
            }
            spare = fd;      /* still unbound: the next probe reuses it */
            bad = port;
            break;
        }
        if (k == count) {
            rotate_left(fds, count, first % count);
            *first_out = first;
            err = 0;
            goto out;
        }
        if (err != EADDRINUSE && err != EACCES)
            goto out;   /* EMFILE, ENOMEM...: sliding will not help */
        if (!taken && !(taken = calloc(65536 / 8, 1))) {
            err = ENOMEM;
            goto out;
        }
        set_in_map(taken, bad);
        if (!mapped && ++failures >= PROBE_BUDGET) {
            unsigned slot;
            mark_taken(b->protocol, lo, hi, taken);
            mapped = 1;
            for (slot = 0; slot < count; slot++)   /* our own placeholders */
                if (fds[slot] >= 0)
                    taken[ports[slot] / 8] &= (unsigned char)~(1u << (ports[slot] % 8));
        }
        tried += bad - first + 1;
        offset = (bad + 1 - lo) % span;
        err = EADDRINUSE;
    }
out:
    if (err) {
        for (k = 0; k < count; k++)
            close_fd(&fds[k]);
    }
    if (spare >= 0)
        close(spare);
    free(ports);
    free(taken);
    return err;
}

int portres_block_acquire(int protocol, unsigned start, unsigned count,
                          portres_block **out, unsigned *conflict_port)
{
    portres_block *b;
    unsigned i, first = start;
    int err;

    *out = NULL;
    *conflict_port = 0;
    if ((protocol != PORTRES_TCP && protocol != PORTRES_UDP) || count < 1
            || count > 65535 || start > 65535 || (start && start + count - 1 > 65535))
        return EINVAL;
    portres_backend_init();

    b = calloc(1, sizeof *b);
    if (!b)
        return ENOMEM;
    b->fds = malloc(count * sizeof *b->fds);
    b->state = calloc(count, 1);
    if (!b->fds || !b->state) {
        free(b->fds);
        free(b->state);
        free(b);
        return ENOMEM;
    }
    for (i = 0; i < count; i++)
        b->fds[i] = -1;
    b->epfd = b->infofd = b->diagfd = -1;
    pthread_mutex_init(&b->lock, NULL);
    b->protocol = protocol;
    b->count = count;
    b->family = have_ipv6 ? AF_INET6 : AF_INET;
    if (protocol == PORTRES_UDP) {
        udp_block_ref();
        shared_prog_check(0, 1);
    }

    err = start ? hold_range(b, start, conflict_port) : hold_wildcard(b, &first);
    if (err) {
        if (protocol == PORTRES_UDP)
            udp_block_unref();
        pthread_mutex_destroy(&b->lock);
        free(b->fds);
        free(b->state);
        free(b);
        return err;
    }
    b->start = first;
    b->token = new_token();
    register_block(b);
    *out = b;
    return 0;
}

void portres_block_get_info(const portres_block *b, portres_block_info *info)
{
    info->start = b->start;
    info->count = b->count;
    info->token = b->token;
    info->protocol = b->protocol;
}

int portres_block_closed(const portres_block *b)
{
    return __atomic_load_n(&b->closed, __ATOMIC_ACQUIRE);
}

/* Find the association of the socket (DEV, INO); registry_lock held. */
static size_t find_association(dev_t dev, ino_t ino)
{
    size_t i;
    for (i = 0; i < n_associations; i++)
        if (associations[i].dev == dev && associations[i].ino == ino)
            break;
    return i;
}

/* Remove the associations of TOKEN; registry_lock held. */
static void drop_associations(uint64_t token)
{
    size_t i = 0;
    while (i < n_associations) {
        if (associations[i].token == token)
            associations[i] = associations[--n_associations];
        else
            i++;
    }
}

/* Unlink B from the registry and close its placeholders.  Called with
 * registry_lock held; returns with it released.  Lock order: registry, then
 * block.  Once unlinked, no thread can find B by token; a thread already
 * inside B holds its lock, which is waited for here. */
static void close_block_registry_held(portres_block *b)
{
    portres_block **pp;

    for (pp = &registry; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    drop_associations(b->token);
    pthread_mutex_lock(&b->lock);
    pthread_mutex_unlock(&registry_lock);
    if (!b->closed) {
        close_fds(b->fds, b->count);
        if (b->fds4)
            close_fds(b->fds4, b->count);
        close_fd(&b->epfd);
        close_fd(&b->infofd);
        close_fd(&b->diagfd);
        __atomic_store_n(&b->closed, 1, __ATOMIC_RELEASE);
        if (b->protocol == PORTRES_UDP)
            udp_block_unref();
    }
    pthread_mutex_unlock(&b->lock);
}

/* ----------------------------------------------------------------- fork
 *
 * A runtime reservation belongs to the process that acquired it, as on
 * Windows.  A child made by fork() gets copies of the placeholder
 * descriptors; kept, they would hold the ports after the parent releases
 * them, and a UDP placeholder copy left in a port's reuseport group after a
 * layout switch would swallow datagrams.  So the child closes its copies:
 * in the child every reservation is closed.  The locks are taken around
 * fork() so that the child never inherits one held by another thread.
 */
static void atfork_prepare(void)
{
    portres_block *b;
    pthread_mutex_lock(&registry_lock);
    for (b = registry; b; b = b->next)
        pthread_mutex_lock(&b->lock);
    pthread_mutex_lock(&prog_lock);
}

static void atfork_parent(void)
{
    portres_block *b;
    pthread_mutex_unlock(&prog_lock);
    for (b = registry; b; b = b->next)
        pthread_mutex_unlock(&b->lock);
    pthread_mutex_unlock(&registry_lock);
}

static void atfork_child(void)
{
    portres_block *b, *next;
    unsigned k;
    for (b = registry; b; b = next) {
        next = b->next;
        if (!b->closed) {
            close_fds(b->fds, b->count);
            if (b->fds4)
                close_fds(b->fds4, b->count);
            close_fd(&b->epfd);
            close_fd(&b->infofd);
            close_fd(&b->diagfd);
            b->closed = 1;
        }
        b->next = NULL;
        pthread_mutex_unlock(&b->lock);
    }
    registry = NULL;
    n_associations = 0;
    for (k = 0; k < 2; k++) {   /* the shared UDP filters: no UDP block is left */
        if (ret_prog[k].fd >= 0)
            close(ret_prog[k].fd);
        ret_prog[k].fd = -1;
    }
    udp_blocks = 0;
    pthread_mutex_unlock(&prog_lock);
    pthread_mutex_unlock(&registry_lock);
}

int portres_block_close(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    close_block_registry_held(b);
    return 0;
}

void portres_block_free(portres_block *b)
{
    if (!b)
        return;
    portres_block_close(b);
    pthread_mutex_destroy(&b->lock);
    free(b->fds);
    free(b->fds4);
    free(b->state);
    free(b->handed);
    free(b);
}

/* ------------------------------------------------- binding in the block */

/* Dump the kernel's FAMILY/PROTOCOL sockets whose local port is in
 * [LO, HI], in the states of the STATES mask (bit n: TCP state n; bound but
 * inactive TCP sockets are state 13 since Linux 6.5), through
 * NETLINK_SOCK_DIAG socket *FDP (opened if it is -1, kept for the next
 * dump, closed and set to -1 after an error, which may leave part of a
 * reply unread); call CB for each.  Returns 0 or errno. */
static int diag_dump_on(int *fdp, int protocol, int family, unsigned lo, unsigned hi,
                        uint32_t states, void (*cb)(const struct inet_diag_msg *, void *),
                        void *ctx)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
        struct nlattr attr;
        struct inet_diag_bc_op ops[4];
    } msg;
    struct sockaddr_nl nladdr = { .nl_family = AF_NETLINK };
    char buf[16384];
    int fd = *fdp, err = 0, done = 0;

    if (fd < 0) {
        fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
            return errno;
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
    msg.ops[0] = (struct inet_diag_bc_op){ INET_DIAG_BC_S_GE, 8, 20 };
    msg.ops[1] = (struct inet_diag_bc_op){ 0, 0, (unsigned short)lo };
    msg.ops[2] = (struct inet_diag_bc_op){ INET_DIAG_BC_S_LE, 8, 12 };
    msg.ops[3] = (struct inet_diag_bc_op){ 0, 0, (unsigned short)hi };

    if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&nladdr, sizeof nladdr) < 0) {
        err = errno;
        goto out;
    }
    while (!done) {
        ssize_t len = recv(fd, buf, sizeof buf, 0);
        struct nlmsghdr *h;
        if (len <= 0) {
            if (len < 0 && errno == EINTR)
                continue;
            err = len < 0 ? errno : EPROTO;
            break;
        }
        for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                err = e->error ? -e->error : EPROTO;
                done = 1;
                break;
            }
            cb(NLMSG_DATA(h), ctx);
        }
    }
out:
    if (err)
        close_fd(fdp);
    return err;
}

/* diag_dump_on() with a netlink socket of its own. */
static int diag_dump(int protocol, int family, unsigned lo, unsigned hi, uint32_t states,
                     void (*cb)(const struct inet_diag_msg *, void *), void *ctx)
{
    int fd = -1, err = diag_dump_on(&fd, protocol, family, lo, hi, states, cb, ctx);
    close_fd(&fd);
    return err;
}

struct count_ctx {
    const portres_block *b;
    unsigned *counts;
};

static void count_cb(const struct inet_diag_msg *m, void *ctx)
{
    struct count_ctx *c = ctx;
    unsigned port = ntohs(m->id.idiag_sport);
    if (port >= c->b->start && port - c->b->start < c->b->count)
        c->counts[port - c->b->start]++;
}

/* Count, per port of the block, the FAMILY sockets the kernel has on it in
 * the states of the STATES mask (added to COUNTS). */
static int diag_count(portres_block *b, int family, uint32_t states, unsigned *counts)
{
    struct count_ctx c = { b, counts };
    return diag_dump_on(&b->diagfd, b->protocol, family, b->start, b->start + b->count - 1,
                        states, count_cb, &c);
}

/* Any state but TIME_WAIT, which does not stop a reuseport bind. */
#define STATES_ON_PORT (~(1u << 6))
/* The sockets that take traffic meant for the port: every UDP socket, TCP
 * listeners only (TCP_LISTEN is state 10). */
#define STATES_TAKING_TRAFFIC(protocol) ((protocol) == PORTRES_UDP ? ~0u : 1u << 10)

/* ------------------------------------------------- giving ports back
 *
 * A port handed out returns to the block once the caller's socket is gone:
 * its file released (the last descriptor closed, in any process: dup(),
 * fork() and SCM_RIGHTS copies keep it).  Two ways to tell:
 *
 *  - a sock_diag dump counting the sockets on each port of the block.  It
 *    walks the kernel's whole socket hash tables, however small the block:
 *    about 400 us with 262144 TCP ehash buckets, more on bigger machines;
 *  - the block's epoll instance.  The caller's socket is added to it (no
 *    events asked: it is never waited on), and the kernel removes an epoll
 *    item exactly when the item's file is released, not when a descriptor
 *    closes.  /proc/self/fdinfo/<epfd> lists the live items, with the port
 *    index as their data: one pread(), O(live sockets of the block).
 *
 * A block starts without tracking, so that a block never exhausted pays
 * nothing for it.  Its first reclaim uses the dump, and turns tracking on
 * when the dump cost more than tracking the whole block would (about
 * TRACK_COST_NS per hand-out: the epoll_ctl, and the item's removal when
 * the socket closes): small blocks track, a block of thousands of ports on
 * a quiet machine keeps dumping, once per cycle of the cursor through it.
 * Tracking adopts the sockets then alive whose descriptor still holds them;
 * from then on every hand-out adds the caller's socket, and a reclaim
 * reads fdinfo.  A port whose socket could not be tracked (an epoll_ctl
 * error, a descriptor that moved) keeps the dump as fallback.
 *
 * They differ where the socket's file is released while sockets it
 * spawned stay on the port (connections it accepted, or left closing in
 * FIN_WAIT or LAST_ACK): the dump keeps such a port used until they are
 * gone, tracking returns it when the socket closes, as for TIME_WAIT.
 * Either way the placeholder holds the port: no other program can bind it.
 *
 * An epoll item goes first when a file is released (__fput() calls
 * eventpoll_release() before the socket's release, which takes it off the
 * port), so a port tracking sees released is only CLOSING: for a moment
 * the old socket may still be a UDP socket or a TCP listener in the port's
 * reuseport group, and would take the datagrams or connections meant for
 * the socket bound next (measured: 1 datagram in 3 lost when the closing
 * socket's release is slowed by multicast memberships).  A CLOSING port
 * returns once a dump of just those sockets (every UDP socket; TCP
 * listeners, a walk of the small listener table) shows it gone: about
 * 10-25 us, paid only when a released port is reused.
 */

#define TRACK_COST_NS 600

/* Turn release tracking on for B: its epoll instance and its fdinfo. */
static int start_tracking(portres_block *b)
{
    char path[64];
    int err;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0)
        return errno;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", b->epfd);
    b->infofd = open(path, O_RDONLY | O_CLOEXEC);
    if (b->infofd < 0) {
        err = errno;
        close_fd(&b->epfd);
        return err;
    }
    b->track_pid = getpid();
    return 0;
}

/* Back to dumps only (fdinfo unreadable): tracked ports become untracked. */
static void stop_tracking(portres_block *b)
{
    unsigned i;
    close_fd(&b->infofd);
    close_fd(&b->epfd);
    for (i = 0; i < b->count; i++)
        b->state[i] &= (unsigned char)~PORT_TRACKED;
}

/* Track the caller's socket FD, bound to port index I. */
static void track(portres_block *b, unsigned i, int fd)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.u64 = i;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        b->state[i] |= PORT_TRACKED;
}

/* Port index I was just bound on the caller's FD, of FAMILY. */
static void handed_out(portres_block *b, unsigned i, int fd, int family)
{
    b->state[i] = (unsigned char)((b->state[i] & ~PORT_V6) | PORT_USED
                                  | (family == AF_INET6 ? PORT_V6 : 0));
    if (!b->handed)
        b->handed = malloc(b->count * sizeof *b->handed);
    if (b->handed)
        b->handed[i] = fd;
    if (b->epfd >= 0)
        track(b, i, fd);
}

/* Whether FD is still a socket of B's type bound to port index I. */
static int holds_port(const portres_block *b, int fd, unsigned i)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (getsockname(fd, (struct sockaddr *)&ss, &len)
            || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
            || get_port((struct sockaddr *)&ss) != b->start + i)
        return 0;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0
        && type == sock_type_for(b->protocol);
}

/* Tracked ports whose socket's file is released become CLOSING.  Returns
 * 0, or errno when fdinfo cannot be read or parsed (the caller then stops
 * tracking: never guess a socket gone). */
static int reclaim_tracked(portres_block *b)
{
    size_t cap, tracked = 0, items = 0, parsed = 0;
    ssize_t len;
    unsigned i;
    char *buf = NULL, *p;
    unsigned char *alive;

    for (i = 0; i < b->count; i++)
        tracked += (b->state[i] & PORT_TRACKED) != 0;
    if (!tracked)
        return 0;
    if (getpid() != b->track_pid)   /* a forked child: infofd reads the parent's table */
        return ECHILD;
    /* "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x\n" */
    for (cap = 512 + 128 * tracked;; cap *= 2) {
        char *nbuf = realloc(buf, cap + 1);
        if (!nbuf) {
            free(buf);
            return ENOMEM;
        }
        buf = nbuf;
        len = pread(b->infofd, buf, cap, 0);   /* one read: one snapshot */
        if (len < 0) {
            int err = errno;
            free(buf);
            return err;
        }
        if ((size_t)len < cap)
            break;
    }
    buf[len] = '\0';
    alive = calloc((b->count + 7) / 8, 1);
    if (!alive) {
        free(buf);
        return ENOMEM;
    }
    for (p = buf; (p = strstr(p, "tfd:")); items++) {
        char *data = strstr(p, " data:"), *end, *eol = strchr(p, '\n');
        unsigned long long v;
        p += 4;
        if (!data || (eol && data > eol))
            continue;
        v = strtoull(data + 6, &end, 16);
        if (end == data + 6 || v >= b->count)
            continue;
        alive[v / 8] |= (unsigned char)(1u << (v % 8));
        parsed++;
    }
    free(buf);
    if (parsed != items) {   /* not the format this was written for */
        free(alive);
        return EPROTO;
    }
    for (i = 0; i < b->count; i++) {
        if ((b->state[i] & PORT_TRACKED) && !((alive[i / 8] >> (i % 8)) & 1)) {
            b->state[i] = (unsigned char)((b->state[i] & ~PORT_TRACKED) | PORT_CLOSING);
        }
    }
    free(alive);
    return 0;
}

/* Untracked ports on which only our placeholders remain return to the
 * block; *FREED counts them.  The first time, tracking starts, and the
 * untracked ports still held by exactly one socket (the one we bound, at
 * its descriptor) are tracked from now on.  Returns 0 or errno (the dump
 * failed: EMFILE for its netlink socket, ENOMEM...). */
static int reclaim_dump(portres_block *b, unsigned *freed)
{
    unsigned *counts = calloc(b->count, sizeof *counts), i, n = 0;
    int adopt, err;
    struct timespec t0, t1;
    long long spent;
    if (!counts)
        return ENOMEM;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((err = diag_count(b, AF_INET, STATES_ON_PORT, counts))
            || (have_ipv6 && (err = diag_count(b, AF_INET6, STATES_ON_PORT, counts)))) {
        free(counts);
        return err;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    spent = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    adopt = b->epfd >= 0
        || (spent > (long long)b->count * TRACK_COST_NS && start_tracking(b) == 0);
    for (i = 0; i < b->count; i++) {
        unsigned ours = (b->fds[i] >= 0) + (b->fds4 && b->fds4[i] >= 0);
        if ((b->state[i] & (PORT_USED | PORT_TRACKED)) != PORT_USED)
            continue;
        if (counts[i] <= ours) {
            b->state[i] &= (unsigned char)~(PORT_USED | PORT_CLOSING);
            n++;
        } else if (adopt && !(b->state[i] & PORT_CLOSING) && counts[i] == ours + 1 && b->handed
                   && holds_port(b, b->handed[i], i)) {
            track(b, i, b->handed[i]);
        }
    }
    free(counts);
    *freed += n;
    return 0;
}

/* Our placeholders of FAMILY that take port index I's traffic (TCP ones
 * never listen). */
static unsigned placeholders_taking_traffic(const portres_block *b, unsigned i, int family)
{
    if (b->protocol != PORTRES_UDP)
        return 0;
    return (b->family == family && b->fds[i] >= 0)
        + (family == AF_INET && b->fds4 && b->fds4[i] >= 0);
}

/* CLOSING ports whose socket is off the port (no socket of its family but
 * our placeholders takes its traffic) return to the block; *FREED counts
 * them.  Only the families of those sockets are dumped.  Returns 0 or
 * errno (a dump failed). */
static int reclaim_closing(portres_block *b, unsigned *freed)
{
    static const int families[2] = { AF_INET, AF_INET6 };
    unsigned *counts = malloc(b->count * sizeof *counts), i, f;
    int err = 0;
    if (!counts)
        return ENOMEM;
    for (f = 0; f < 2 && !err; f++) {
        unsigned char v6 = f ? PORT_V6 : 0, any = 0;
        for (i = 0; i < b->count; i++)
            any |= (b->state[i] & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6);
        if (!any)
            continue;
        memset(counts, 0, b->count * sizeof *counts);
        if ((err = diag_count(b, families[f], STATES_TAKING_TRAFFIC(b->protocol), counts)))
            break;
        for (i = 0; i < b->count; i++) {
            if ((b->state[i] & (PORT_CLOSING | PORT_V6)) == (PORT_CLOSING | v6)
                    && counts[i] <= placeholders_taking_traffic(b, i, families[f])) {
                b->state[i] &= (unsigned char)~(PORT_USED | PORT_CLOSING);
                (*freed)++;
            }
        }
    }
    free(counts);
    return err;
}

/* Return to the pool the handed-out ports whose socket is gone; *FREED
 * counts them.  Block locked.  Returns 0, or errno when the ports could not
 * be checked (then nothing is freed that is not known to be free). */
static int reclaim(portres_block *b, unsigned *freed)
{
    unsigned i, untracked = 0, closing = 0;
    int err = 0;
    *freed = 0;
    if (b->infofd >= 0 && reclaim_tracked(b))
        stop_tracking(b);
    for (i = 0; i < b->count; i++) {
        unsigned char st = b->state[i];
        untracked += (st & (PORT_USED | PORT_TRACKED | PORT_CLOSING)) == PORT_USED;
        closing += (st & PORT_CLOSING) != 0;
    }
    if (closing)
        err = reclaim_closing(b, freed);
    if (untracked && !*freed)
        return reclaim_dump(b, freed);
    return err;
}

/* UDP: arrange port I's placeholders so that the caller's socket (FAMILY,
 * V6ONLY, bound on a wildcard address or not) gets every datagram meant for
 * it.  Called before the caller's bind, block locked.
 *
 *   caller                      placeholders    why
 *   AF_INET6 [::] dual-stack    one dual-stack  same reuseport group: steered
 *   AF_INET6 [::] V6ONLY        AF_INET + V6ONLY pair: the dual-stack one
 *                               would tie with the caller on IPv6 lookups
 *   anything else               either          the caller's socket scores
 *                               higher (AF_INET, or a specific address)
 *
 * A pair is made with SO_REUSEPORT before bind so each forms a group at
 * once and is steered now; the layout is switched by binding the new
 * placeholders before closing the old, so the port is never unheld. */
static int layout_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard)
{
    unsigned port = b->start + i;
    int want_pair, fd4, fd6, err;

    if (b->family != AF_INET6 || family != AF_INET6 || !wildcard)
        return 0;
    want_pair = v6only;
    if (want_pair == !!(b->state[i] & PORT_PAIR))
        return 0;
    shared_prog_check(0, 1);
    shared_prog_check(1, 1);
    if (want_pair) {
        if (!b->fds4) {
            unsigned k;
            b->fds4 = malloc(b->count * sizeof *b->fds4);
            if (!b->fds4)
                return ENOMEM;
            for (k = 0; k < b->count; k++)
                b->fds4[k] = -1;
        }
        fd4 = new_placeholder(AF_INET, 0, b->protocol, port, 1, 2);
        if (fd4 < 0)
            return -fd4;
        fd6 = new_placeholder(AF_INET6, 1, b->protocol, port, 1, 1);
        if (fd6 < 0) {
            close(fd4);
            return -fd6;
        }
        if ((err = attach_ret(fd4, SO_ATTACH_REUSEPORT_CBPF, 1))
                || (err = attach_ret(fd6, SO_ATTACH_REUSEPORT_CBPF, 1))) {
            close(fd4);
            close(fd6);
            return err;
        }
        close_fd(&b->fds[i]);
        b->fds[i] = fd6;
        b->fds4[i] = fd4;
        b->state[i] |= PORT_PAIR | PORT_STEERED | PORT_STEERED4;
    } else {
        fd6 = new_placeholder(AF_INET6, 0, b->protocol, port, 1, 1);
        if (fd6 < 0)
            return -fd6;
        if ((err = attach_ret(fd6, SO_ATTACH_REUSEPORT_CBPF, 1))) {
            close(fd6);
            return err;
        }
        close_fd(&b->fds[i]);
        close_fd(&b->fds4[i]);
        b->fds[i] = fd6;
        b->state[i] = (unsigned char)((b->state[i] & ~(PORT_PAIR | PORT_STEERED4)) | PORT_STEERED);
    }
    return 0;
}

/* After a UDP caller's bind: if it joined the main placeholder's group and
 * that group is not steered yet, steer it (a group exists only now, for a
 * placeholder bound before SO_REUSEPORT). */
static int steer_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard)
{
    int ph_v6only = b->family == AF_INET6 && (b->state[i] & PORT_PAIR);
    int err;
    if (!wildcard || (b->state[i] & PORT_STEERED) || family != b->family
            || (family == AF_INET6 && v6only != ph_v6only))
        return 0;
    shared_prog_check(1, 1);
    err = attach_ret(b->fds[i], SO_ATTACH_REUSEPORT_CBPF, 1);
    if (!err)
        b->state[i] |= PORT_STEERED;
    return err;
}

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

/* Bind FD to port index I of B, block locked. */
static int bind_index(portres_block *b, int fd, struct sockaddr *sa, socklen_t len,
                      unsigned i, int v6only, int wildcard)
{
    int err;
    if (b->protocol == PORTRES_UDP && (err = layout_udp(b, i, sa->sa_family, v6only, wildcard)))
        return err;
    set_port(sa, b->start + i);
    if (bind(fd, sa, len))
        return errno;
    handed_out(b, i, fd, sa->sa_family);
    if (b->protocol == PORTRES_UDP && (err = steer_udp(b, i, sa->sa_family, v6only, wildcard)))
        return err;   /* rare (ENOMEM); the socket stays bound, see caller */
    return 0;
}

/* Bind FD in B: a free port, or the port of ADDR when it is not 0.  Called
 * with B locked; the caller's SO_REUSEPORT is already set.  FRESH: FD is a
 * socket the binding just created (its IPV6_V6ONLY is the default). */
static int bind_in_block_locked(portres_block *b, int fd, struct sockaddr *sa,
                                socklen_t addrlen, unsigned *port_out, int fresh)
{
    unsigned want = get_port(sa), n, i, pass, freed = 0;
    int err, v6only, wildcard;

    if (b->closed)
        return EBADF;
    if (want && (want < b->start || want - b->start >= b->count))
        return EADDRNOTAVAIL;
    /* Only a UDP layout depends on it (TCP placeholders never take a
     * connection, whatever the caller's socket is). */
    v6only = b->protocol != PORTRES_UDP || sa->sa_family != AF_INET6 ? 0
        : fresh ? bindv6only_default : socket_v6only(fd, sa->sa_family);
    wildcard = is_wildcard(sa);
    if (want) {
        i = want - b->start;
        if ((b->state[i] & PORT_USED) && (err = reclaim(b, &freed)) && (b->state[i] & PORT_USED))
            return err;   /* could not tell: say why, not "in use" */
        err = (b->state[i] & PORT_USED) ? EADDRINUSE
            : bind_index(b, fd, sa, addrlen, i, v6only, wildcard);
    } else {
        err = EADDRINUSE;
        for (pass = 0; pass < 2 && err == EADDRINUSE; pass++) {
            if (pass == 1) {
                int rerr = reclaim(b, &freed);
                if (!freed) {
                    if (rerr)
                        err = rerr;   /* could not tell: say why, not "block full" */
                    break;
                }
            }
            for (n = 0; n < b->count; n++) {
                i = (b->cursor + n) % b->count;
                if (b->state[i] & PORT_USED)
                    continue;
                err = bind_index(b, fd, sa, addrlen, i, v6only, wildcard);
                if (err == EADDRINUSE) {
                    /* a socket of our uid shares the port by SO_REUSEPORT
                     * outside portres: leave the port to it */
                    b->state[i] |= PORT_USED;
                    continue;
                }
                if (!err)
                    b->cursor = (i + 1) % b->count;
                break;
            }
        }
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
static int bind_in_block(portres_block *b, int fd, const struct sockaddr *addr,
                         socklen_t addrlen, unsigned *port_out, int registry_held, int fresh)
{
    struct sockaddr_storage ss;
    int err, one = 1, old_reuseport = 0;
    socklen_t optlen = sizeof old_reuseport;

    if (addrlen > (socklen_t)sizeof ss || addrlen < (socklen_t)sizeof(struct sockaddr_in)) {
        if (registry_held)
            pthread_mutex_unlock(&registry_lock);
        return EINVAL;
    }
    memcpy(&ss, addr, addrlen);
    if (!fresh)
        getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &old_reuseport, &optlen);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        err = errno;
        if (registry_held)
            pthread_mutex_unlock(&registry_lock);
        return err;
    }
    pthread_mutex_lock(&b->lock);
    if (registry_held)
        pthread_mutex_unlock(&registry_lock);
    err = bind_in_block_locked(b, fd, (struct sockaddr *)&ss, addrlen, port_out, fresh);
    pthread_mutex_unlock(&b->lock);
    if (err && !fresh)   /* leave the caller's socket as it was */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &old_reuseport, sizeof old_reuseport);
    return err;
}

/* The checks every bind from a block starts with. */
static int check_bindable(portres_block *b, int fd, const struct sockaddr *addr)
{
    int family, type;
    unsigned bound;
    int err = portres_socket_info(fd, &family, &type, &bound);
    if (err)
        return err;
    if (bound)
        return EISCONN;
    if (type != sock_type_for(b->protocol))
        return EPROTOTYPE;
    if (family != addr->sa_family)
        return EAFNOSUPPORT;
    return 0;
}

int portres_block_bind(portres_block *b, portres_socket s, const struct sockaddr *addr,
                       int addrlen, unsigned *port)
{
    int err = check_bindable(b, s, addr);
    return err ? err : bind_in_block(b, s, addr, (socklen_t)addrlen, port, 0, 0);
}

int portres_block_bind_new(portres_block *b, portres_socket s, const struct sockaddr *addr,
                           int addrlen, unsigned *port)
{
    return bind_in_block(b, s, addr, (socklen_t)addrlen, port, 0, 1);
}

int portres_block_socket(portres_block *b, int family, const struct sockaddr *addr,
                         int addrlen, portres_socket *out, unsigned *port)
{
    int fd, err;
    if (family != addr->sa_family)
        return EAFNOSUPPORT;
    if (portres_block_closed(b))
        return EBADF;
    fd = new_socket(family, sock_type_for(b->protocol), 1);
    if (fd < 0)
        return errno;
    err = bind_in_block(b, fd, addr, (socklen_t)addrlen, port, 0, 1);
    if (err) {
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

/* ------------------------------------------------- the raw calls */

static int socket_identity(int fd, dev_t *dev, ino_t *ino)
{
    struct stat st;
    if (fstat(fd, &st))
        return errno;
    if (!S_ISSOCK(st.st_mode))
        return ENOTSOCK;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

/* Record (or replace) the association of the socket (DEV, INO);
 * registry_lock held. */
static size_t prune_mark = 64;

static int cmp_ino(const void *a, const void *b)
{
    ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
    return x < y ? -1 : x > y;
}

/* Drop the associations of sockets that were closed without a bind: no
 * descriptor of this process refers to their inode any more.  Run when the
 * table has doubled since the last pass, so it costs O(1) amortised.
 * registry_lock held. */
static void prune_associations(void)
{
    DIR *d = opendir("/proc/self/fd");
    ino_t *live = NULL;
    size_t n_live = 0, cap_live = 0, i = 0;
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d))) {
        char link[64];
        unsigned long long ino;
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (sscanf(link, "socket:[%llu]", &ino) != 1)
            continue;
        if (n_live == cap_live) {
            size_t cap = cap_live ? cap_live * 2 : 256;
            ino_t *p = realloc(live, cap * sizeof *p);
            if (!p)
                goto out;   /* keep everything rather than drop a live one */
            live = p;
            cap_live = cap;
        }
        live[n_live++] = (ino_t)ino;
    }
    qsort(live, n_live, sizeof *live, cmp_ino);
    while (i < n_associations) {
        if (!n_live || !bsearch(&associations[i].ino, live, n_live, sizeof *live, cmp_ino))
            associations[i] = associations[--n_associations];
        else
            i++;
    }
out:
    closedir(d);
    free(live);
}

static int record_association(dev_t dev, ino_t ino, uint64_t token, unsigned range_start,
                              unsigned range_count)
{
    size_t i = find_association(dev, ino);
    if (i == n_associations && n_associations >= prune_mark) {
        prune_associations();
        prune_mark = n_associations * 2 > 64 ? n_associations * 2 : 64;
        i = find_association(dev, ino);
    }
    if (i == n_associations) {
        if (n_associations == cap_associations) {
            size_t cap = cap_associations ? cap_associations * 2 : 16;
            struct association *a = realloc(associations, cap * sizeof *a);
            if (!a)
                return ENOMEM;
            associations = a;
            cap_associations = cap;
        }
        n_associations++;
    }
    associations[i].dev = dev;
    associations[i].ino = ino;
    associations[i].token = token;
    associations[i].range_start = range_start;
    associations[i].range_count = range_count;
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
    if ((family != AF_INET && family != AF_INET6)
            || (*type != SOCK_STREAM && *type != SOCK_DGRAM))
        return EOPNOTSUPP;
    if (bound)
        return EISCONN;
    return socket_identity(fd, dev, ino);
}

/* Persistent blocks whose tokens the package has told us about. */
struct persistent_token {
    uint64_t token;
    int protocol;
    unsigned start, count;
};
static struct persistent_token *persistent_tokens;
static size_t n_persistent, cap_persistent;

int portres_register_persistent(uint64_t token, int protocol, unsigned start, unsigned count)
{
    size_t i;
    int err = 0;
    if (!token || start < 1 || count < 1 || start + count - 1 > 65535
            || (protocol != PORTRES_TCP && protocol != PORTRES_UDP))
        return EINVAL;
    pthread_mutex_lock(&registry_lock);
    for (i = 0; i < n_persistent && persistent_tokens[i].token != token; i++)
        ;
    if (i == n_persistent) {
        if (n_persistent == cap_persistent) {
            size_t cap = cap_persistent ? cap_persistent * 2 : 8;
            struct persistent_token *p = realloc(persistent_tokens, cap * sizeof *p);
            if (!p) {
                err = ENOMEM;
                goto out;
            }
            persistent_tokens = p;
            cap_persistent = cap;
        }
        n_persistent++;
    }
    persistent_tokens[i] = (struct persistent_token){ token, protocol, start, count };
out:
    pthread_mutex_unlock(&registry_lock);
    return err;
}

void portres_unregister_persistent(uint64_t token)
{
    size_t i;
    pthread_mutex_lock(&registry_lock);
    for (i = 0; i < n_persistent; i++) {
        if (persistent_tokens[i].token == token) {
            persistent_tokens[i] = persistent_tokens[--n_persistent];
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

int portres_associate(portres_socket s, uint64_t token)
{
    dev_t dev = 0;
    ino_t ino = 0;
    int type = 0;
    size_t i;
    portres_block *b;
    int err = check_associable(s, &type, &dev, &ino);
    if (err)
        return err;
    pthread_mutex_lock(&registry_lock);
    for (b = registry; b && b->token != token; b = b->next)
        ;
    if (b) {
        err = type != sock_type_for(b->protocol) ? EPROTOTYPE
            : record_association(dev, ino, token, 0, 0);
    } else {
        for (i = 0; i < n_persistent && persistent_tokens[i].token != token; i++)
            ;
        if (i == n_persistent)
            err = ENOENT;
        else if (type != sock_type_for(persistent_tokens[i].protocol))
            err = EPROTOTYPE;
        else
            err = record_association(dev, ino, token, persistent_tokens[i].start,
                                     persistent_tokens[i].count);
    }
    pthread_mutex_unlock(&registry_lock);
    return err;
}

/* Bind to the first free port of a persistent block.  Such ports are only
 * kept out of the kernel's automatic choice (ip_local_reserved_ports), so a
 * plain bind is the whole mechanism. */
static int bind_in_range(int fd, const struct sockaddr *addr, socklen_t addrlen,
                         unsigned start, unsigned count, unsigned *port_out)
{
    struct sockaddr_storage ss;
    unsigned want, i;
    if (addrlen > (socklen_t)sizeof ss || addrlen < (socklen_t)sizeof(struct sockaddr_in))
        return EINVAL;
    memcpy(&ss, addr, addrlen);
    want = get_port(addr);
    if (want && (want < start || want - start >= count))
        return EADDRNOTAVAIL;
    for (i = want ? want - start : 0; i < count; i++) {
        set_port((struct sockaddr *)&ss, start + i);
        if (bind(fd, (struct sockaddr *)&ss, addrlen) == 0) {
            *port_out = start + i;
            return 0;
        }
        if (errno != EADDRINUSE || want)
            return errno;
    }
    return EADDRINUSE;
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
    for (b = registry; b && b->token != token; b = b->next)
        ;
    if (!b) {
        pthread_mutex_unlock(&registry_lock);
        return ENOENT;
    }
    close_block_registry_held(b);
    return 0;
}

int portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen, unsigned *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    dev_t dev = 0;
    ino_t ino = 0;
    size_t i;
    portres_block *b = NULL;
    int err = socket_identity(s, &dev, &ino);
    if (err)
        return err;

    pthread_mutex_lock(&registry_lock);
    i = find_association(dev, ino);
    if (i < n_associations && associations[i].range_count) {
        unsigned start = associations[i].range_start, count = associations[i].range_count;
        pthread_mutex_unlock(&registry_lock);
        err = bind_in_range(s, addr, (socklen_t)addrlen, start, count, port);
        if (!err) {
            pthread_mutex_lock(&registry_lock);
            i = find_association(dev, ino);
            if (i < n_associations)
                associations[i] = associations[--n_associations];
            pthread_mutex_unlock(&registry_lock);
        }
        return err;
    }
    if (i < n_associations)
        for (b = registry; b && b->token != associations[i].token; b = b->next)
            ;
    if (b) {
        if ((err = check_bindable(b, s, addr))) {
            pthread_mutex_unlock(&registry_lock);
            return err;
        }
        err = bind_in_block(b, s, addr, (socklen_t)addrlen, port, 1, 0);
        if (!err) {   /* the association is spent once the socket is bound */
            pthread_mutex_lock(&registry_lock);
            i = find_association(dev, ino);
            if (i < n_associations)
                associations[i] = associations[--n_associations];
            pthread_mutex_unlock(&registry_lock);
        }
        return err;
    }
    pthread_mutex_unlock(&registry_lock);
    if (bind(s, addr, (socklen_t)addrlen))
        return errno;
    if (getsockname(s, (struct sockaddr *)&ss, &len))
        return errno;
    *port = get_port((struct sockaddr *)&ss);
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
        return errno;
    } else {   /* a family without getsockname */
        if (getsockopt(s, SOL_SOCKET, SO_DOMAIN, &v, &vlen))
            return errno;
        *family = v;
        vlen = sizeof v;
    }
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &vlen))
        return errno;
    *type = v;
    *bound_port = *family == AF_INET || *family == AF_INET6
        ? get_port((struct sockaddr *)&ss) : 0;
    return 0;
}

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
            c->err = ENOMEM;
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
    struct list_ctx c = { NULL, 0, 0, AF_INET, 0 };
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

/* ------------------------------------------------- overlapped operations
 *
 * Every operation completes at once on Linux; the object keeps the Windows
 * shape (an event signalled at completion) so that event-loop integration
 * is the same code on both platforms.  The event is an eventfd that is
 * written once and never read: it stays readable, like a manual-reset
 * event, for every waiter.
 */

struct portres_overlapped {
    int efd;
    int op;
    int done;
    int error;
    portres_block *block;    /* ACQUIRE result until taken */
};

static int ov_new(int op, portres_overlapped **out)
{
    portres_overlapped *ov = calloc(1, sizeof *ov);
    if (!ov)
        return ENOMEM;
    ov->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ov->efd < 0) {
        int err = errno;
        free(ov);
        return err;
    }
    ov->op = op;
    *out = ov;
    return 0;
}

static void ov_complete(portres_overlapped *ov, int error)
{
    uint64_t one = 1;
    ov->error = error;
    __atomic_store_n(&ov->done, 1, __ATOMIC_RELEASE);
    /* Cannot fail: the counter is far from overflowing. */
    if (write(ov->efd, &one, sizeof one) != (ssize_t)sizeof one)
        ov->error = ov->error ? ov->error : EIO;
}

int portres_ov_start(int op, portres_socket s, uint64_t token, int protocol,
                     unsigned start, unsigned count, portres_overlapped **out)
{
    portres_overlapped *ov;
    portres_block *block = NULL;
    unsigned conflict = 0;
    int err;

    *out = NULL;
    switch (op) {
    case PORTRES_OP_ACQUIRE:
        err = portres_block_acquire(protocol, start, count, &block, &conflict);
        break;
    case PORTRES_OP_ASSOCIATE:
        err = portres_associate(s, token);
        break;
    case PORTRES_OP_RELEASE:
        err = portres_release(s, token);
        break;
    default:
        return EINVAL;
    }
    if (err)   /* an immediate failure, as WSAIoctl's non-pending error */
        return err;
    if ((err = ov_new(op, &ov))) {
        portres_block_free(block);
        return err;
    }
    ov->block = block;
    ov_complete(ov, 0);
    *out = ov;
    return 0;
}

int portres_ov_start_pending(portres_overlapped **out)
{
    *out = NULL;
    return ov_new(-1, out);
}

intptr_t portres_ov_event(const portres_overlapped *ov)
{
    return ov->efd;
}

int portres_ov_wait_event(const portres_overlapped *ov, long timeout_ms)
{
    struct pollfd p = { ov->efd, POLLIN, 0 };
    int n = poll(&p, 1, timeout_ms < 0 ? -1 : (timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms));
    if (n > 0)
        return PORTRES_WAIT_SIGNALLED;
    if (n == 0)
        return PORTRES_WAIT_TIMEOUT;
    return errno == EINTR ? PORTRES_WAIT_INTERRUPTED : errno;
}

int portres_ov_reap(portres_overlapped *ov)
{
    return __atomic_load_n(&ov->done, __ATOMIC_ACQUIRE);
}

int portres_ov_error(const portres_overlapped *ov)
{
    return ov->error;
}

portres_block *portres_ov_take_block(portres_overlapped *ov)
{
    portres_block *b = ov->block;
    ov->block = NULL;
    return b;
}

int portres_ov_cancel(portres_overlapped *ov)
{
    if (!portres_ov_reap(ov))
        ov_complete(ov, ECANCELED);
    return 0;
}

int portres_ov_free(portres_overlapped *ov, long grace_ms)
{
    (void)grace_ms;
    if (!ov)
        return 0;
    portres_ov_cancel(ov);
    close(ov->efd);
    portres_block_free(ov->block);
    free(ov);
    return 0;
}

int portres_ov_register_wait(portres_overlapped *ov, void (*cb)(void *), void *ctx,
                             void **wait_handle)
{
    (void)ov, (void)cb, (void)ctx;
    *wait_handle = NULL;
    return EOPNOTSUPP;
}

int portres_ov_unregister_wait(void *wait_handle)
{
    (void)wait_handle;
    return EOPNOTSUPP;
}

#endif /* __linux__ */
