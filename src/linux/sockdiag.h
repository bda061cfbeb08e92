/*
 * linux/sockdiag.h - NETLINK_SOCK_DIAG dumps of the kernel's inet sockets
 * (sockdiag.c).  Self-contained, so that bench/_benchhelp.c compiles the
 * backend's own dump code: it needs only portres.h's protocol numbers.
 */
#ifndef PORTRES_LINUX_SOCKDIAG_H
#define PORTRES_LINUX_SOCKDIAG_H

#include <stdint.h>
#include <linux/inet_diag.h>

#pragma GCC visibility push(hidden)

typedef void (*diag_cb)(const struct inet_diag_msg *m, void *ctx);

/* Dump the kernel's FAMILY/PROTOCOL (PORTRES_TCP/PORTRES_UDP) sockets whose
 * local port is in [LO, HI], in the states of the STATES mask (bit n: TCP
 * state n; bound but inactive TCP sockets are state 13 since Linux 6.5),
 * through NETLINK_SOCK_DIAG socket *FDP (opened if it is -1, kept for the
 * next dump, closed and set to -1 after an error, which may leave part of a
 * reply unread); call CB for each.  Returns 0 or errno, the failing call
 * recorded (portres_fail). */
int diag_dump_on(int *fdp, int protocol, int family, unsigned lo, unsigned hi, uint32_t states,
                 diag_cb cb, void *ctx);

/* diag_dump_on() with a netlink socket of its own. */
int diag_dump(int protocol, int family, unsigned lo, unsigned hi, uint32_t states, diag_cb cb,
              void *ctx);

/* A NETLINK_SOCK_DIAG socket that receives one message (an inet_diag_msg:
 * local port, cookie) per PROTOCOL socket of this network namespace that
 * the kernel frees, in both families (AF_INET6 too when WITH_IPV6), kept to
 * those whose local port is in [LO, HI] by a socket filter.  No privilege
 * needed.  Returns the descriptor or -errno (the call recorded). */
int diag_destroy_listener(int protocol, int with_ipv6, unsigned lo, unsigned hi);

/* How long a reclaim that found nothing else waits for a CLOSING port's
 * destroy message before it asks a dump (reclaim.c; here so that bench/
 * waits as long).  The message normally comes within microseconds; a few
 * milliseconds on a loaded machine. */
#define CLOSING_WAIT_MS 5

/* Call CB for each message queued on FD (a destroy listener) without
 * waiting.  Returns 0 once the queue is empty, or errno: ENOBUFS when the
 * queue overran and messages were lost. */
int diag_destroyed(int fd, diag_cb cb, void *ctx);

/* Wait, at most CLOSING_WAIT_MS, for destroy messages on FD (a destroy
 * listener) until *DONE is not 0: TAKE(CTX) takes in what is queued (and
 * sets *DONE when that gave a port back), after each of two
 * sched_yield(), then after each poll().  Returns 1 (done after a
 * sched_yield), 2 (after a poll) or 0 (timed out, or poll failed). */
int diag_wait_destroyed(int fd, void (*take)(void *ctx), void *ctx, const unsigned *done);

#pragma GCC visibility pop

#endif /* PORTRES_LINUX_SOCKDIAG_H */
