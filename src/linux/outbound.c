/*
 * linux/outbound.c - keeping the kernel's own port choice of an associated
 * socket inside its block.
 *
 * An association is portres's record; a plain connect(), sendto() or
 * bind(port 0) does not see it and lets the kernel pick an ephemeral port.
 * IP_LOCAL_PORT_RANGE (Linux 6.3) narrows that choice, for this socket
 * only, to the block.  The block's ports are all held by their
 * placeholders, and the kernel's automatic choice never shares a port by
 * SO_REUSEPORT, so such a call then fails (EADDRNOTAVAIL from connect(),
 * EADDRINUSE from bind(), EAGAIN from sendto()) instead of leaving the
 * block: loud, never a port outside.  portres.bind() / portres.connect()
 * bind explicitly and are not affected.
 */
#ifdef __linux__

#include "linux.h"

#include <netinet/in.h>

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51 /* include/uapi/linux/in.h, Linux 6.3 */
#endif

/* Whether the kernel has IP_LOCAL_PORT_RANGE: -1 not known yet, 0, 1. */
static int have_range_opt = -1;

int confine_autobind(int fd, unsigned start, unsigned count)
{
    /* Low port in the low 16 bits, high port in the high 16 (both
     * inclusive); the option is IPPROTO_IP's for AF_INET6 sockets too. */
    uint32_t range = (uint32_t)start | ((uint32_t)(start + count - 1) << 16);
    if (__atomic_load_n(&have_range_opt, __ATOMIC_RELAXED) == 0)
        return 0;
    if (setsockopt(fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &range, sizeof range) == 0) {
        __atomic_store_n(&have_range_opt, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (errno == ENOPROTOOPT) { /* before 6.3: nothing narrows the choice (platforms.md) */
        __atomic_store_n(&have_range_opt, 0, __ATOMIC_RELAXED);
        return 0;
    }
    return lx_fail("setsockopt(IP_LOCAL_PORT_RANGE)");
}

#endif /* __linux__ */
