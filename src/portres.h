/*
 * portres.h - the interface between the CPython binding (src/_*.c) and the
 * per-platform backends (src/windows/, src/linux/).
 *
 * Everything declared here is plain C: no Python object is touched, so the
 * binding calls these functions with the GIL released, and the Windows test
 * program (tests/windows/) links the Windows backend without Python at all.
 *
 * Errors (one contract for every function below that can fail): it returns
 * 0 on success or an OS error code -- a Winsock/Win32 error
 * (WSAGetLastError()/GetLastError()) on Windows, an errno on Linux -- and on
 * failure records, for the calling thread, the name of the real call that
 * failed on this platform: "bind", "setsockopt(SO_REUSEPORT)",
 * "sendto(NETLINK_SOCK_DIAG)", "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)",
 * "RegOpenKeyExW"...  portres_error_call() reads it back (in the same
 * thread, right after the failure; the binding raises OSError with it as
 * `filename`).  Where the backend refuses by a rule of its own, before or
 * instead of any system call (a closed block, a port outside the block, a
 * port already handed out, a socket of the wrong type, an unknown token),
 * it records portres_refuse(code) instead: no call is named, and the
 * binding names the package operation that was refused ("portres.bind",
 * "Reservation.bind"...; portres/_errors.py then says portres refused it).
 * Like errno, a success leaves the record as it was.
 *
 * Arguments are validated by the caller (the binding, src/_util.c) before
 * any call; the backends do not repeat the block rules (the Windows
 * persistent and table functions still refuse bad arguments with
 * ERROR_INVALID_PARAMETER, as the functions they wrap do).  All ports
 * cross this interface in host byte order; the backends convert.
 */
#ifndef PORTRES_H
#define PORTRES_H

#include <stdint.h>
#include <stddef.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef SOCKET portres_socket;
#else
#include <sys/socket.h>
typedef int portres_socket;
#endif

enum portres_protocol { PORTRES_TCP = 0, PORTRES_UDP = 1 };

/* ------------------------------------------------------------ errors
 * (src/error.c; see the top of this file.) */

/* Record CALL (a static string) as the call that failed in this thread;
 * returns CODE, so a backend writes `return portres_fail(err, "bind");`. */
int portres_fail(int code, const char *call);
/* A refusal by a rule of portres's (see the top of this file): records
 * portres_refused as the call; returns CODE. */
int portres_refuse(int code);
extern const char portres_refused[];
/* The call recorded by the last failure in this thread (NULL if none). */
const char *portres_error_call(void);
/* Forget the record: the binding clears it before a call. */
void portres_error_clear(void);

/* A runtime reservation held by this process.  On Windows: the acquiring
 * socket plus the token SIO_ACQUIRE_PORT_RESERVATION returned.  On Linux:
 * one placeholder socket per port. */
typedef struct portres_block portres_block;

typedef struct {
    unsigned start; /* first port, host order */
    unsigned count; /* number of ports */
    uint64_t token; /* never 0 for a live reservation */
    int protocol;   /* enum portres_protocol */
} portres_block_info;

/* Reserve COUNT ports starting at START (0: the system picks the start).
 * On success *out owns the reservation until portres_block_free().  On
 * failure *conflict_port names the port that could not be taken when the
 * backend knows it (Linux), else 0. */
int portres_block_acquire(int protocol, unsigned start, unsigned count, portres_block **out,
                          unsigned *conflict_port);
void portres_block_get_info(const portres_block *b, portres_block_info *info);
/* What portres_block_get_info returns: both backends' struct portres_block
 * keep these four members under the same names, so they share this. */
#define PORTRES_BLOCK_INFO_OF(b) \
    ((portres_block_info){(b)->start, (b)->count, (b)->token, (b)->protocol})

/* Bind S (unbound, matching the block's protocol) to a free port of the
 * block on ADDR, whose port must be 0.  Windows: SIO_ASSOCIATE_PORT_RESERVATION
 * then bind().  *port receives the port bound (host order). */
int portres_block_bind(portres_block *b, portres_socket s, const struct sockaddr *addr, int addrlen,
                       unsigned *port);

/* Create a socket of FAMILY for the block's protocol and bind it in the block
 * on ADDR (port 0).  The socket is not inheritable. */
int portres_block_socket(portres_block *b, int family, const struct sockaddr *addr, int addrlen,
                         portres_socket *out, unsigned *port);

/* Release the reservation (SIO_RELEASE_PORT_RESERVATION, then close the
 * acquiring socket; on Linux close the placeholders).  Idempotent; B stays
 * allocated (later calls on it fail) so that a thread still using it never
 * touches freed memory.  Returns the first error met. */
int portres_block_close(portres_block *b);
int portres_block_closed(const portres_block *b);

/* Close if needed, then free.  Only when no other thread can use B. */
void portres_block_free(portres_block *b);

/* The raw calls, one for one with the IOCTLs. */
int portres_associate(portres_socket s, uint64_t token);
int portres_release(portres_socket s, uint64_t token);

#ifdef __linux__
/* Linux: associate S with the persistent block [START, START+COUNT) of
 * PROTOCOL: its next portres_bind takes the first free port of the block
 * (or the one it names) once the kernel's ip_local_reserved_ports is found
 * to still hold every port of the block (else ENOENT: the block is gone).
 * The C layer keeps no persistent tokens: the package resolves a token to
 * its block, from the kernel's list and its own bookkeeping, at each
 * associate, and calls this.  EINVAL for a bad block, EPROTOTYPE when S's
 * type is not PROTOCOL's, EISCONN when S is bound, EOPNOTSUPP when it is
 * not TCP/UDP over IP. */
int portres_associate_range(portres_socket s, int protocol, unsigned start, unsigned count);

/* Linux: portres_block_bind for a socket the binding has just created (new,
 * unbound, of the block's protocol and ADDR's family, SO_REUSEPORT off) and
 * closes if this fails: the checks and the restoring of the socket's
 * options on failure are skipped.  An AF_INET6 one is made dual-stack
 * (IPV6_V6ONLY=0), as portres_block_socket() makes its sockets. */
int portres_block_bind_new(portres_block *b, portres_socket s, const struct sockaddr *addr,
                           int addrlen, unsigned *port);

/* Linux, privilege drop: give the placeholders of B to UID (fchown), so that
 * sockets of UID bind from B after the process drops to it; and the uid
 * owning them now (-1 when B is closed).  A bind whose socket belongs to
 * another uid than the placeholders fails with EPERM. */
int portres_block_set_owner(portres_block *b, unsigned uid);
long portres_block_owner(portres_block *b);

/* Linux: net.ipv4.ip_local_reserved_ports (the backend's one parser of
 * it), as sorted runs of consecutive ports; empty where the kernel has no
 * such sysctl.  *OUT is malloc'ed (NULL when empty); the caller frees it. */
typedef struct {
    unsigned first, last; /* inclusive, host order */
} portres_port_run;
int portres_reserved_ports(portres_port_run **out, size_t *n);
#endif

/* bind() that honours an association made by portres_associate (Linux keeps
 * associations itself; on Windows this is plain bind()). */
int portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen, unsigned *port);

/* What the binding checks before an association: the socket's family, type
 * (SOCK_STREAM/SOCK_DGRAM) and, if bound, its local port (0 if unbound). */
int portres_socket_info(portres_socket s, int *family, int *type, unsigned *bound_port);

/* ------------------------------------------------------------ overlapped
 *
 * An IOCTL issued in overlapped mode.  The object owns the OVERLAPPED, its
 * manual-reset event and the input/output buffers for as long as the kernel
 * may use them.  On Windows the hEvent handed to WSAIoctl has its low-order
 * bit set, so a socket bound to an I/O completion port gets no packet; the
 * untagged handle is the one waited on.  On Linux every operation completes
 * at once and the event is an eventfd, signalled at completion (never read:
 * it stays readable, like a manual-reset event).
 *
 * Thread safety: portres_ov_wait_event may run in several threads at once;
 * the other calls are serialised by the caller (the binding's lock).
 */
typedef struct portres_overlapped portres_overlapped;

enum portres_op {
    PORTRES_OP_ACQUIRE,
    PORTRES_OP_ASSOCIATE,
    PORTRES_OP_RELEASE,
    PORTRES_OP_ASSOCIATE_RANGE /* Linux only */
};

/* Start OP.  ACQUIRE uses PROTOCOL/START/COUNT (S is ignored: the acquiring
 * socket is created here); ASSOCIATE and RELEASE use S and TOKEN;
 * ASSOCIATE_RANGE (portres_associate_range) uses S and PROTOCOL/START/COUNT.  Returns
 * an error code for an immediate failure (nothing is left allocated);
 * otherwise 0 with *out set, the operation pending or already done. */
int portres_ov_start(int op, portres_socket s, uint64_t token, int protocol, unsigned start,
                     unsigned count, portres_overlapped **out);

/* The event: a HANDLE (as an integer) on Windows, an eventfd on Linux. */
intptr_t portres_ov_event(const portres_overlapped *ov);

enum { PORTRES_WAIT_SIGNALLED = 0, PORTRES_WAIT_TIMEOUT = -1, PORTRES_WAIT_INTERRUPTED = -2 };

/* Wait up to TIMEOUT_MS (< 0: forever) for the event.  Returns one of the
 * PORTRES_WAIT_* values (INTERRUPTED: a signal arrived, Linux) or a
 * positive error code. */
int portres_ov_wait_event(const portres_overlapped *ov, long timeout_ms);

/* Ask the kernel for the result without waiting (WSAGetOverlappedResult
 * with fWait FALSE).  Returns 1 once the kernel is done (the result is then
 * recorded), 0 while it still owns the buffers.  A provider that completes
 * without signalling the event is seen here. */
int portres_ov_reap(portres_overlapped *ov);

/* Once reaped: 0 or the operation's error code. */
int portres_ov_error(const portres_overlapped *ov);

/* Once an ACQUIRE reaped without error: the reservation (ownership passes
 * to the caller; NULL on a second call). */
portres_block *portres_ov_take_block(portres_overlapped *ov);

/* CancelIoEx on a pending operation.  0 when a cancel was requested or the
 * operation had already completed. */
int portres_ov_cancel(portres_overlapped *ov);

/* Free OV.  A pending operation is cancelled and reaped first, waiting up
 * to GRACE_MS for the kernel.  Returns 0 when freed, 1 when the kernel
 * still owned the OVERLAPPED and it was deliberately leaked. */
int portres_ov_free(portres_overlapped *ov, long grace_ms);

/* Testing the wait machinery, where no real operation stays pending (every
 * one completes at once on Linux; Wine never signals): an operation that
 * stays pending until cancelled, then completes with CANCEL_ERROR (0: a
 * success, as when an operation outruns CancelIoEx; < 0: the platform's
 * abort, ECANCELED / ERROR_OPERATION_ABORTED).  No IOCTL is issued.
 *
 * There is no thread-pool wait: the event-loop side watches the event
 * itself (the eventfd, or the HANDLE through asyncio's proactor), so that
 * no Python code ever runs on a thread Python did not create. */
int portres_ov_start_pending(int cancel_error, portres_overlapped **out);

/* ------------------------------------------------------------ port owners
 *
 * portres_port_sockets: the sockets of PROTOCOL whose local port is in
 * [LO, HI], IPv4 and IPv6, every state; *OUT (free it with
 * portres_port_sockets_free) gets *N entries.  The fields that say who
 * holds the socket are each platform's own:
 *
 *   Linux: NETLINK_SOCK_DIAG, bound-but-inactive TCP sockets included;
 *   STATE is the kernel's TCP state number (include/net/tcp_states.h; UDP
 *   sockets report 7, TCP_CLOSE, when unconnected), with the owner's UID
 *   and the socket's INODE.
 *
 *   Windows: GetExtendedTcpTable (TCP_TABLE_OWNER_PID_ALL: listeners and
 *   connections) or GetExtendedUdpTable (UDP_TABLE_OWNER_PID), with the
 *   PID that bound it (0 when the table does not know it, "MIB_UDPROW_
 *   OWNER_PID structure (udpmib.h)").  STATE uses Linux's TCP state
 *   numbers too, so that the Python layer reads both platforms alike; the
 *   mapping from MIB_TCP_STATE is written once, in
 *   portres_tcp_state_from_mib (windows/owners.c):
 *
 *   MIB_TCP_STATE_ESTAB 5 -> 1 ESTABLISHED  MIB_TCP_STATE_SYN_SENT 3 -> 2
 *   MIB_TCP_STATE_SYN_RCVD 4 -> 3           MIB_TCP_STATE_FIN_WAIT1 6 -> 4
 *   MIB_TCP_STATE_FIN_WAIT2 7 -> 5          MIB_TCP_STATE_TIME_WAIT 11 -> 6
 *   MIB_TCP_STATE_CLOSED 1 -> 7 CLOSE       MIB_TCP_STATE_CLOSE_WAIT 8 -> 8
 *   MIB_TCP_STATE_LAST_ACK 10 -> 9          MIB_TCP_STATE_LISTEN 2 -> 10
 *   MIB_TCP_STATE_CLOSING 9 -> 11           MIB_TCP_STATE_DELETE_TCB 12 -> 7
 *   any other MIB value V -> PORTRES_MIB_STATE_OTHER + V (kept, not lost;
 *   the module exports the offset as MIB_STATE_OTHER)
 *
 *   UDP rows have no state: 7 (TCP_CLOSE), i.e. "bound".
 */
typedef struct {
    int family;    /* AF_INET or AF_INET6 */
    int state;     /* Linux TCP state number, see above */
    unsigned port; /* host order */
    /* The addresses, network order: 4 bytes for AF_INET, 16 for AF_INET6
     * (zero when unconnected or not known); the remote port, host order. */
    unsigned char local[16], remote[16];
    unsigned remote_port;
#ifdef _WIN32
    unsigned long pid; /* dwOwningPid */
#else
    unsigned uid;
    unsigned long inode;
#endif
} portres_port_socket;

int portres_port_sockets(int protocol, unsigned lo, unsigned hi, portres_port_socket **out,
                         size_t *n);
void portres_port_sockets_free(portres_port_socket *sockets);

#ifdef _WIN32
#define PORTRES_MIB_STATE_OTHER 1000

/* The mapping above, for one MIB_TCP_STATE value. */
int portres_tcp_state_from_mib(unsigned long mib_state);
#endif

/* ------------------------------------------------------------ persistent
 *
 * Windows only: persistent, system-wide reservations (iphlpapi), one call
 * each.  The Linux backend keeps them in Python (portres/_persistent_linux).
 * PROTOCOL is PORTRES_TCP or PORTRES_UDP and picks the Tcp or Udp function;
 * START (1..65535) and COUNT (1..65535, block not past 65535) are host
 * order.  Each returns 0 or the Win32 error the function returned
 * (ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, ERROR_NOT_FOUND, ...);
 * bad arguments give ERROR_INVALID_PARAMETER without any call. */
#ifdef _WIN32
typedef struct {
    unsigned start; /* first port, host order */
    unsigned count; /* number of ports */
} portres_port_block;

/* CreatePersistent{Tcp,Udp}PortReservation: *token receives the token. */
int portres_persistent_create(int protocol, unsigned start, unsigned count, uint64_t *token);
/* LookupPersistent{Tcp,Udp}PortReservation: the block must match exactly. */
int portres_persistent_lookup(int protocol, unsigned start, unsigned count, uint64_t *token);
/* DeletePersistent{Tcp,Udp}PortReservation. */
int portres_persistent_delete(int protocol, unsigned start, unsigned count);

/* The persistent reservations of PROTOCOL, sorted by start: *blocks (free
 * it with portres_persistent_list_free) gets *n entries.  Windows has no
 * documented enumeration; see windows/persistent.c for what this reads and
 * how each entry is confirmed.  On failure *blocks is NULL. */
int portres_persistent_list(int protocol, portres_port_block **blocks, size_t *n);
void portres_persistent_list_free(portres_port_block *blocks);

/* The full path of process PID's executable, in UTF-8 (OpenProcess with
 * PROCESS_QUERY_LIMITED_INFORMATION, then QueryFullProcessImageNameW).
 * *UTF8 is allocated (free it with portres_process_name_free) and holds
 * *LEN bytes plus a terminating NUL.  Returns 0 or the Win32 error
 * (ERROR_ACCESS_DENIED for another user's or a protected process,
 * ERROR_INVALID_PARAMETER for a PID that does not exist, ...). */
/* The running system's version (RtlGetVersion): not the one a manifest
 * makes GetVersionExW report.  Returns 0 or the error. */
int portres_windows_build(unsigned long *major, unsigned long *minor, unsigned long *build);

/* A Python integer's value as a SOCKET: ERROR_ARITHMETIC_OVERFLOW when it
 * does not fit (32-bit SOCKET on x86), WSAENOTSOCK for INVALID_SOCKET.
 * Records no error (nothing was called). */
int portres_socket_from_u64(unsigned long long v, portres_socket *out);

int portres_process_name(unsigned long pid, char **utf8, size_t *len);
void portres_process_name_free(char *utf8);
#endif

/* One-time process setup (WSAStartup on Windows; on Linux the fork
 * handlers and the host's IPv6 support).  Idempotent. */
int portres_backend_init(void);

#endif /* PORTRES_H */
