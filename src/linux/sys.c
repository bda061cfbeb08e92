/*
 * linux/sys.c - system-call helpers the backend's files share: /proc files,
 * socket options, sockaddrs, socket() at the descriptor limit, closing
 * descriptors.
 */
#ifdef __linux__

#include "linux.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/syscall.h>

/* Up to N integers from a /proc file; returns how many (0 on error). */
int read_proc_ints(const char *path, int *vals, int n)
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

int set_int(int fd, int level, int name, int value)
{
    const char *call = level == SOL_SOCKET && name == SO_REUSEPORT    ? "setsockopt(SO_REUSEPORT)"
                       : level == IPPROTO_IPV6 && name == IPV6_V6ONLY ? "setsockopt(IPV6_V6ONLY)"
                                                                      : "setsockopt";
    return setsockopt(fd, level, name, &value, sizeof value) ? lx_fail(call) : 0;
}

void sockaddr_for_port(int family, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
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

void set_port(struct sockaddr *sa, unsigned port)
{
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

unsigned get_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

int is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

int sock_type_for(int protocol)
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
int new_socket(int family, int type, unsigned still_needed)
{
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0 && errno == EMFILE) {
        if (raise_nofile(still_needed))
            fd = socket(family, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            errno = EMFILE;
    }
    if (fd < 0)
        lx_fail("socket");
    return fd;
}

/* Read a whole /proc file into *OUT (NUL-terminated, malloc'ed).  Returns 0
 * or errno; at the descriptor limit it raises the soft limit like
 * new_socket(), so a sysctl is never silently taken as empty. */
int read_proc_file(const char *path, char **out)
{
    size_t cap = 4096;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EMFILE && raise_nofile(1))
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lx_fail("open");
    /* A sysctl answers only the read at offset 0 (a second read returns
     * EOF): read it whole in one pread, with a buffer large enough. */
    for (;; cap *= 2) {
        ssize_t n;
        char *nbuf = realloc(buf, cap);
        if (!nbuf) {
            free(buf);
            close(fd);
            return portres_fail(ENOMEM, "realloc");
        }
        buf = nbuf;
        n = pread(fd, buf, cap - 1, 0);
        if (n < 0 && errno == EINTR) {
            cap /= 2;
            continue;
        }
        if (n < 0) {
            int err = lx_fail("pread");
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

void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

#if !defined(SYS_close_range)                                                                \
    && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__arm__) \
        || defined(__riscv) || defined(__powerpc__) || defined(__s390__))
#define SYS_close_range 436 /* the same number on these (Linux 5.9+) */
#endif

/* Close the descriptors of FDS[0..N) (-1 entries skipped) and set them to
 * -1.  A run of consecutive descriptors (the usual layout: socket() returns
 * the lowest free one) goes in one close_range(2): the same kernel work as
 * a close() each, without a system call per descriptor.  Every descriptor
 * of such a run is one of ours, so nothing else is closed. */
void close_fds(int *fds, unsigned n)
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

#endif /* __linux__ */
