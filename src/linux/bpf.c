/*
 * linux/bpf.c - UDP steering: the shared "return K" programs (a drop filter
 * for placeholders, a reuseport selector that steers a group to the
 * caller's socket) and the placeholder layouts that need them.
 */
#ifdef __linux__

#include "linux.h"

#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/syscall.h>

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
 * Each is loaded once per process, at its first UDP block, and kept (two
 * descriptors): loading one costs more than a whole acquire(1).  A forked
 * child closes its copies (bpf_atfork_child) and loads its own. */
static pthread_mutex_t prog_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int fd;
    uint32_t id;
    int failed;
    int tagged; /* its open file carries PROG_TAG (see shared_prog_check) */
} ret_prog[2] = {{-1, 0, 0, 0}, {-1, 0, 0, 0}};

/* The signal number (F_SETSIG) put on the open file of program "return K"
 * at load, one per K.  No signal is ever sent for it (a BPF program's file
 * has no FASYNC); it tags the file, which a descriptor closed and reused
 * for another file does not carry (a new file reads 0), nor the other
 * program's descriptor moved there (dup2). */
#define PROG_TAG(k) (61 + (int)(k))
static unsigned udp_blocks; /* UDP blocks held (or being acquired), under prog_lock */

void bpf_atfork_prepare(void)
{
    pthread_mutex_lock(&prog_lock);
}

void bpf_atfork_parent(void)
{
    pthread_mutex_unlock(&prog_lock);
}

void bpf_atfork_child(void)
{
    unsigned k;
    for (k = 0; k < 2; k++) { /* the shared UDP filters: no UDP block is left */
        if (ret_prog[k].fd >= 0)
            close(ret_prog[k].fd);
        ret_prog[k].fd = -1;
    }
    udp_blocks = 0;
    pthread_mutex_unlock(&prog_lock);
}

void udp_block_ref(void)
{
    pthread_mutex_lock(&prog_lock);
    udp_blocks++;
    pthread_mutex_unlock(&prog_lock);
}

void udp_block_unref(void)
{
    pthread_mutex_lock(&prog_lock);
    if (udp_blocks)
        udp_blocks--;
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
void shared_prog_check(unsigned k, int check)
{
#ifdef SYS_bpf
    pthread_mutex_lock(&prog_lock);
    /* F_GETSIG (0.2 us) where the tag is on, else the program's id
     * (BPF_OBJ_GET_INFO_BY_FD, 0.9 us): once per acquire or bind. */
    if (ret_prog[k].fd >= 0 && check
        && (ret_prog[k].tagged ? fcntl(ret_prog[k].fd, F_GETSIG) != PROG_TAG(k)
                               : prog_id(ret_prog[k].fd) != ret_prog[k].id))
        __atomic_store_n(&ret_prog[k].fd, -1, __ATOMIC_RELAXED); /* not ours: not closed */
    if (ret_prog[k].fd < 0 && !ret_prog[k].failed) {
        struct bpf_insn insns[2];
        union bpf_attr attr;
        int fd;
        memset(insns, 0, sizeof insns);
        insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = K */
        insns[0].dst_reg = BPF_REG_0;
        insns[0].imm = (int32_t)k;
        insns[1].code = BPF_JMP | BPF_EXIT; /* return r0 */
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = (uint64_t)(uintptr_t)insns;
        attr.insn_cnt = 2;
        attr.license = (uint64_t)(uintptr_t) "MIT";
        fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr); /* O_CLOEXEC */
        if (fd < 0) {
            ret_prog[k].failed = 1; /* EPERM: unprivileged */
        } else if (!(ret_prog[k].id = prog_id(fd))) {
            close(fd);
            ret_prog[k].failed = 1;
        } else {
            ret_prog[k].tagged = fcntl(fd, F_SETSIG, PROG_TAG(k)) == 0;
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
int attach_ret(int fd, int optname, unsigned k)
{
    struct sock_filter insn = BPF_STMT(BPF_RET | BPF_K, k);
    struct sock_fprog prog = {1, &insn};
    int shared = __atomic_load_n(&ret_prog[k].fd, __ATOMIC_RELAXED);
    if (shared >= 0
        && setsockopt(fd, SOL_SOCKET,
                      optname == SO_ATTACH_FILTER ? SO_ATTACH_BPF : SO_ATTACH_REUSEPORT_EBPF,
                      &shared, sizeof shared)
               == 0)
        return 0;
    return setsockopt(fd, SOL_SOCKET, optname, &prog, sizeof prog)
               ? lx_fail(optname == SO_ATTACH_FILTER ? "setsockopt(SO_ATTACH_FILTER)"
                                                     : "setsockopt(SO_ATTACH_REUSEPORT_CBPF)")
               : 0;
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
 * placeholders before closing the old, so the port is never unheld.
 *
 * Not while the port's IPv4 side is handed out (a V6ONLY caller beside an
 * AF_INET socket): a new AF_INET placeholder would join that socket's
 * group behind it ("return 1" would then pick the placeholder) or, on
 * another address or device, go ahead of it in the port's hash chain (an
 * AF_INET socket is added at the head) and take its datagrams.  The port
 * keeps its dual-stack placeholder then, and bind_index() puts it behind
 * the V6ONLY caller instead (placeholder_behind()).  A pair is only made
 * on a port whose IPv4 side is free, so its AF_INET placeholder is always
 * first in its group and in the chain, and an AF_INET caller joining it
 * later is index 1, as steered. */
int layout_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard)
{
    unsigned port = b->start + i;
    int want_pair, fd4, fd6, err;

    if (b->family != AF_INET6 || family != AF_INET6 || !wildcard)
        return 0;
    want_pair = v6only;
    if (want_pair == !!(b->state[i] & PORT_PAIR))
        return 0;
    if (want_pair && (port_sides(b, i) & SIDE4))
        return 0; /* see above: the dual-stack placeholder goes behind */
    shared_prog_check(0, 1);
    shared_prog_check(1, 1);
    if (want_pair) {
        if (!b->fds4) {
            unsigned k;
            b->fds4 = malloc(b->count * sizeof *b->fds4);
            if (!b->fds4)
                return portres_fail(ENOMEM, "malloc");
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
int steer_udp(portres_block *b, unsigned i, int family, int v6only, int wildcard)
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

#endif /* __linux__ */
