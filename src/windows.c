/*
 * windows.c - the Windows backend of portres.h.
 *
 * This is the one place where the port-reservation IOCTLs are issued:
 * WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION / SIO_ASSOCIATE_PORT_RESERVATION /
 * SIO_RELEASE_PORT_RESERVATION).  Plain C, no Python: the binding calls these
 * functions with the GIL released, and tests/windows/test_windows.c includes
 * this file to run it under Wine with a recording WSAIoctl.
 *
 * Every function returns 0 or a Winsock/Win32 error code
 * (WSAGetLastError()/GetLastError()); errno is never used here.
 *
 * References (Microsoft Learn page titles):
 *   [ACQ] "SIO_ACQUIRE_PORT_RESERVATION control code"
 *   [ASC] "SIO_ASSOCIATE_PORT_RESERVATION Control Code"
 *   [REL] "SIO_RELEASE_PORT_RESERVATION Control Code"
 *   [RNG] "INET_PORT_RANGE structure (mstcpip.h)"
 *   [TOK] "INET_PORT_RESERVATION_TOKEN structure (mstcpip.h)"
 *   [INS] "INET_PORT_RESERVATION_INSTANCE structure (mstcpip.h)"
 *   [GSN] "getsockname function (winsock.h)"
 *   [WSS] "WSASocketW function (winsock2.h)"
 *   [CPT] "CreatePersistentTcpPortReservation function (iphlpapi.h)"
 *   [CPU] "CreatePersistentUdpPortReservation function (iphlpapi.h)"
 *   [LPT] "LookupPersistentTcpPortReservation function (iphlpapi.h)"
 *   [LPU] "LookupPersistentUdpPortReservation function (iphlpapi.h)"
 *   [DPT] "DeletePersistentTcpPortReservation function (iphlpapi.h)"
 *   [DPU] "DeletePersistentUdpPortReservation function (iphlpapi.h)"
 *   [ROK] "RegOpenKeyExW function (winreg.h)"
 *   [REV] "RegEnumValueW function (winreg.h)" (the RegEnumValueA page)
 *   [GTT] "GetExtendedTcpTable function (iphlpapi.h)"
 *   [GUT] "GetExtendedUdpTable function (iphlpapi.h)"
 *   [T4R] "MIB_TCPROW_OWNER_PID structure (tcpmib.h)"
 *   [T6R] "MIB_TCP6ROW_OWNER_PID structure (tcpmib.h)"
 *   [U4R] "MIB_UDPROW_OWNER_PID structure (udpmib.h)"
 *   [U6R] "MIB_UDP6ROW_OWNER_PID structure (udpmib.h)"
 *   [T4T] "MIB_TCPTABLE_OWNER_PID structure (tcpmib.h)" (and the TCP6,
 *         UDP and UDP6 table pages: "may contain padding for alignment")
 *   [STA] "MIB_TCP_STATE" (MS-RRASM 2.2.1.1.11; the values of tcpmib.h)
 *   [OPR] "OpenProcess function (processthreadsapi.h)"
 *   [QPI] "QueryFullProcessImageNameW function (winbase.h)"
 *   [W2M] "WideCharToMultiByte function (stringapiset.h)"
 */
#ifdef _WIN32

#include "portres.h"        /* winsock2.h + ws2tcpip.h come first */
#include <windows.h>
#include <mstcpip.h>
#include <iphlpapi.h>       /* the persistent functions; link iphlpapi */
#ifdef _MSC_VER
/* RegOpenKeyExW/RegEnumValueW (listing) live in advapi32, which a plain
 * link.exe command line does not add by itself. */
#  pragma comment(lib, "advapi32.lib")
#endif
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Definitions of mstcpip.h, supplied only where the SDK in use lacks them.
 * Codes: _WSAIOW(IOC_VENDOR, 100/101/102) in mstcpip.h of both the Windows
 * SDK and mingw-w64; the structures are those of [RNG], [TOK], [INS].
 */
#ifndef IOC_VENDOR
#  define IOC_VENDOR 0x18000000
#endif
#ifndef _WSAIOW
#  define _WSAIOW(x, y) (IOC_IN | (x) | (y))
#endif
#ifndef SIO_ACQUIRE_PORT_RESERVATION
/* The header predates the feature: the structures are missing as well. */
#  define SIO_ACQUIRE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 100)
typedef struct _INET_PORT_RANGE {
    USHORT StartPort;       /* network byte order [ACQ] sample: htons() */
    USHORT NumberOfPorts;   /* host byte order */
} INET_PORT_RANGE, *PINET_PORT_RANGE;
typedef struct {
    ULONG64 Token;
} INET_PORT_RESERVATION_TOKEN, *PINET_PORT_RESERVATION_TOKEN;
typedef struct {
    INET_PORT_RANGE Reservation;
    INET_PORT_RESERVATION_TOKEN Token;
} INET_PORT_RESERVATION_INSTANCE, *PINET_PORT_RESERVATION_INSTANCE;
#endif
#ifndef SIO_RELEASE_PORT_RESERVATION
#  define SIO_RELEASE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 101)
#endif
#ifndef SIO_ASSOCIATE_PORT_RESERVATION
#  define SIO_ASSOCIATE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 102)
#endif
#ifndef INVALID_PORT_RESERVATION_TOKEN
#  define INVALID_PORT_RESERVATION_TOKEN ((ULONG64)0)
#endif
#ifndef WSA_FLAG_NO_HANDLE_INHERIT
#  define WSA_FLAG_NO_HANDLE_INHERIT 0x80   /* winsock2.h; [WSS] */
#endif
#ifndef SO_PROTOCOL_INFOW
#  define SO_PROTOCOL_INFOW 0x2005          /* winsock2.h */
#endif

/*
 * The output of SIO_ACQUIRE_PORT_RESERVATION, read through our own
 * layout-identical struct.  [INS] documents the members Reservation and
 * Token, but mstcpip.h (Windows SDK and mingw-w64 alike) names them only
 * under __cplusplus; in C it embeds both structs as anonymous members
 * (.StartPort, .Token), a Microsoft extension.  Our struct spells the same
 * layout in standard C; the asserts below pin it to the header's.
 */
typedef struct {
    INET_PORT_RANGE Reservation;
    INET_PORT_RESERVATION_TOKEN Token;
} portres_reservation_instance;

/* C89-compatible static assertion (MSVC's C mode lacks _Static_assert
 * before /std:c11). */
#define PORTRES_STATIC_ASSERT(name, cond) \
    typedef char portres_static_assert_##name[(cond) ? 1 : -1]

PORTRES_STATIC_ASSERT(range_size, sizeof(INET_PORT_RANGE) == 4);
PORTRES_STATIC_ASSERT(range_start, offsetof(INET_PORT_RANGE, StartPort) == 0);
PORTRES_STATIC_ASSERT(range_count,
                      offsetof(INET_PORT_RANGE, NumberOfPorts) == 2);
PORTRES_STATIC_ASSERT(token_size, sizeof(INET_PORT_RESERVATION_TOKEN) == 8);
PORTRES_STATIC_ASSERT(instance_size,
                      sizeof(INET_PORT_RESERVATION_INSTANCE) == 16);
/* "Token": the ULONG64 in C (anonymous member), the struct in C++;
 * offset 8 either way. */
PORTRES_STATIC_ASSERT(instance_token,
                      offsetof(INET_PORT_RESERVATION_INSTANCE, Token) == 8);
PORTRES_STATIC_ASSERT(our_instance_size,
                      sizeof(portres_reservation_instance) == 16);
PORTRES_STATIC_ASSERT(our_instance_token,
                      offsetof(portres_reservation_instance, Token) == 8);
PORTRES_STATIC_ASSERT(code_acquire,
                      (DWORD)SIO_ACQUIRE_PORT_RESERVATION == 0x98000064UL);
PORTRES_STATIC_ASSERT(code_release,
                      (DWORD)SIO_RELEASE_PORT_RESERVATION == 0x98000065UL);
PORTRES_STATIC_ASSERT(code_associate,
                      (DWORD)SIO_ASSOCIATE_PORT_RESERVATION == 0x98000066UL);

/* Overlapped sockets, so that the IOCTLs can also be issued in overlapped
 * mode; synchronous calls (lpOverlapped NULL) still work on them [ACQ]
 * Remarks.  Not inheritable, so a child process cannot keep a reservation
 * alive (the flag exists from Windows 7 SP1 / KB2398202 on, [WSS]). */
#define PORTRES_WSA_FLAGS (WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT)

struct portres_block {
    SOCKET sock;        /* the acquiring socket: the reservation lives as
                           long as this socket [ACQ] Remarks */
    uint64_t token;
    unsigned start;     /* host order */
    unsigned count;
    int protocol;       /* enum portres_protocol */
    /* Shared by binds, exclusive for close: a bind in flight finishes
     * before the reservation ends, and none starts after it. */
    SRWLOCK lock;
    volatile LONG closed;
};

/* Error for any use of a closed block (the errno analogue is EBADF). */
#define PORTRES_ERROR_CLOSED WSAEBADF

static int
protocol_type(int protocol, int *type, int *ipproto)
{
    switch (protocol) {
    case PORTRES_TCP:
        *type = SOCK_STREAM;
        *ipproto = IPPROTO_TCP;
        return 0;
    case PORTRES_UDP:
        *type = SOCK_DGRAM;
        *ipproto = IPPROTO_UDP;
        return 0;
    default:
        return WSAEINVAL;
    }
}

/* Port of a sockaddr returned by getsockname(), in host order. */
static unsigned
sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* ------------------------------------------------------------------------
 * One-time setup.
 */
static INIT_ONCE portres_init_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK
portres_init_callback(PINIT_ONCE once, PVOID param, PVOID *context)
{
    int *result = (int *)param;
    WSADATA wsa;
    int err;

    (void)once;
    (void)context;
    err = WSAStartup(MAKEWORD(2, 2), &wsa);
    if (err == 0 && (LOBYTE(wsa.wVersion) != 2 || HIBYTE(wsa.wVersion) != 2)) {
        /* "WSAStartup function (winsock2.h)": wVersion may be lower than asked;
         * if it is not acceptable, call WSACleanup. */
        WSACleanup();
        err = WSAVERNOTSUPPORTED;
    }
    *result = err;
    /* FALSE on failure, so that a later call tries again. */
    return err == 0;
}

int
portres_backend_init(void)
{
    int result = 0;

    if (!InitOnceExecuteOnce(&portres_init_once, portres_init_callback,
                             &result, NULL)) {
        /* The callback failed and stored its error; fall back on
         * GetLastError() should InitOnceExecuteOnce fail by itself. */
        return result ? result : (int)GetLastError();
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The raw IOCTLs, synchronous (lpOverlapped and lpCompletionRoutine NULL).
 * They block even on a non-blocking socket [ACQ]/[ASC]/[REL] Remarks.
 */
int
portres_associate(portres_socket s, uint64_t token)
{
    INET_PORT_RESERVATION_TOKEN in;
    DWORD returned = 0;

    in.Token = token;
    /* In: INET_PORT_RESERVATION_TOKEN; out: NULL, 0 [ASC]. */
    if (WSAIoctl(s, SIO_ASSOCIATE_PORT_RESERVATION, &in, (DWORD)sizeof(in),
                 NULL, 0, &returned, NULL, NULL) == SOCKET_ERROR)
        return WSAGetLastError();
    return 0;
}

int
portres_release(portres_socket s, uint64_t token)
{
    INET_PORT_RESERVATION_TOKEN in;
    DWORD returned = 0;

    in.Token = token;
    /* In: INET_PORT_RESERVATION_TOKEN; out: NULL, 0 [REL]. */
    if (WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &in, (DWORD)sizeof(in),
                 NULL, 0, &returned, NULL, NULL) == SOCKET_ERROR)
        return WSAGetLastError();
    return 0;
}

int
portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen,
             unsigned *port)
{
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);

    if (bind(s, addr, addrlen) == SOCKET_ERROR)
        return WSAGetLastError();
    if (port != NULL) {
        memset(&ss, 0, sizeof(ss));
        if (getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR)
            return WSAGetLastError();
        *port = sockaddr_port(&ss);
    }
    return 0;
}

int
portres_socket_info(portres_socket s, int *family, int *type,
                    unsigned *bound_port)
{
    WSAPROTOCOL_INFOW info;
    struct sockaddr_storage ss;
    int sock_type = 0;
    int len;

    len = (int)sizeof(info);
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len)
            == SOCKET_ERROR)
        return WSAGetLastError();
    len = (int)sizeof(sock_type);
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&sock_type, &len)
            == SOCKET_ERROR)
        return WSAGetLastError();

    len = (int)sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR) {
        int err = WSAGetLastError();
        /* WSAEINVAL: "not been bound to an address with bind" [GSN]. */
        if (err != WSAEINVAL)
            return err;
        if (bound_port != NULL)
            *bound_port = 0;
    } else if (bound_port != NULL) {
        *bound_port = sockaddr_port(&ss);
    }
    if (family != NULL)
        *family = info.iAddressFamily;
    if (type != NULL)
        *type = sock_type;
    return 0;
}

/* ------------------------------------------------------------------------
 * Runtime reservations.
 */
/* Fill B, allocated by the caller, from a successful acquisition on S. */
static void
block_init(portres_block *b, SOCKET s, const portres_reservation_instance *inst,
           int protocol)
{
    b->sock = s;
    b->token = inst->Token.Token;
    /* The output range is in the same byte order as the input: the [ACQ]
     * sample prints htons(portRes.Reservation.StartPort). */
    b->start = ntohs(inst->Reservation.StartPort);
    b->count = inst->Reservation.NumberOfPorts;
    b->protocol = protocol;
    InitializeSRWLock(&b->lock);
    b->closed = 0;
}

/* Arguments of an acquisition: the caller validates; this only guards the
 * USHORT fields.  Also maps the protocol to a socket type. */
static int
acquire_args(int protocol, unsigned start, unsigned count, int *type,
             int *ipproto)
{
    if (start > 65535u || count == 0 || count > 65535u
            || (start != 0 && start + count - 1 > 65535u))
        return WSAEINVAL;
    return protocol_type(protocol, type, ipproto);
}

int
portres_block_acquire(int protocol, unsigned start, unsigned count,
                      portres_block **out, unsigned *conflict_port)
{
    portres_block *b;
    INET_PORT_RANGE range;
    portres_reservation_instance inst;
    DWORD returned = 0;
    int type, ipproto, err;
    SOCKET s;

    /* Windows does not say which port was in the way. */
    if (conflict_port != NULL)
        *conflict_port = 0;
    if (out == NULL)
        return WSAEFAULT;
    *out = NULL;
    err = acquire_args(protocol, start, count, &type, &ipproto);
    if (err)
        return err;
    err = portres_backend_init();
    if (err)
        return err;

    /* Allocate before any system call: nothing to undo if this fails. */
    b = (portres_block *)calloc(1, sizeof(*b));
    if (b == NULL)
        return ERROR_NOT_ENOUGH_MEMORY;

    s = WSASocketW(AF_INET, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
    if (s == INVALID_SOCKET) {
        err = WSAGetLastError();
        free(b);
        return err;
    }

    /* StartPort in network byte order, NumberOfPorts in host order: the
     * [ACQ] sample fills them with htons(start) and the plain count. */
    range.StartPort = htons((u_short)start);
    range.NumberOfPorts = (USHORT)count;
    memset(&inst, 0, sizeof(inst));
    if (WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &range, (DWORD)sizeof(range),
                 &inst, (DWORD)sizeof(inst), &returned, NULL, NULL)
            == SOCKET_ERROR) {
        err = WSAGetLastError();    /* before closesocket() overwrites it */
        closesocket(s);
        free(b);
        return err;
    }
    if (inst.Token.Token == INVALID_PORT_RESERVATION_TOKEN) {
        /* Success without a token would be a provider bug; closing the
         * socket ends whatever it reserved [ACQ] Remarks. */
        closesocket(s);
        free(b);
        return ERROR_INVALID_DATA;
    }

    block_init(b, s, &inst, protocol);
    *out = b;
    return 0;
}

void
portres_block_get_info(const portres_block *b, portres_block_info *info)
{
    info->start = b->start;
    info->count = b->count;
    info->token = b->token;
    info->protocol = b->protocol;
}

int
portres_block_closed(const portres_block *b)
{
    /* An interlocked no-op: a full-barrier read of the flag.  B is never
     * really const (it comes from calloc). */
    return InterlockedCompareExchange(&((portres_block *)b)->closed, 0, 0)
        != 0;
}

/* Associate + bind, with the block's lock held shared. */
static int
block_bind_locked(portres_block *b, SOCKET s, const struct sockaddr *addr,
                  int addrlen, unsigned *port)
{
    int err;

    if (b->closed)
        return PORTRES_ERROR_CLOSED;
    /* The association must precede bind(); bind() then takes a port of
     * the block, or fails when none is left [ASC]. */
    err = portres_associate(s, b->token);
    if (err)
        return err;
    return portres_bind(s, addr, addrlen, port);
}

int
portres_block_bind(portres_block *b, portres_socket s,
                   const struct sockaddr *addr, int addrlen, unsigned *port)
{
    int err;

    AcquireSRWLockShared(&b->lock);
    err = block_bind_locked(b, s, addr, addrlen, port);
    ReleaseSRWLockShared(&b->lock);
    return err;
}

int
portres_block_socket(portres_block *b, int family,
                     const struct sockaddr *addr, int addrlen,
                     portres_socket *out, unsigned *port)
{
    int type, ipproto, err;
    SOCKET s;

    if (out == NULL)
        return WSAEFAULT;
    *out = INVALID_SOCKET;
    if (addr == NULL || addr->sa_family != family)
        return WSAEAFNOSUPPORT;
    if (portres_block_closed(b))
        return PORTRES_ERROR_CLOSED;
    err = protocol_type(b->protocol, &type, &ipproto);
    if (err)
        return err;
    s = WSASocketW(family, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
    if (s == INVALID_SOCKET)
        return WSAGetLastError();
    err = portres_block_bind(b, s, addr, addrlen, port);
    if (err) {
        closesocket(s);
        return err;
    }
    *out = s;
    return 0;
}

int
portres_block_close(portres_block *b)
{
    int err = 0;

    if (b == NULL)
        return 0;
    AcquireSRWLockExclusive(&b->lock);
    if (!b->closed) {
        /* Release explicitly, from the acquiring socket and process
         * [REL]; closing the socket ends the reservation too [ACQ]
         * Remarks, so close even when the release fails. */
        err = portres_release(b->sock, b->token);
        if (closesocket(b->sock) == SOCKET_ERROR && err == 0)
            err = WSAGetLastError();
        b->sock = INVALID_SOCKET;
        InterlockedExchange(&b->closed, 1);
    }
    ReleaseSRWLockExclusive(&b->lock);
    return err;
}

void
portres_block_free(portres_block *b)
{
    if (b == NULL)
        return;
    portres_block_close(b);
    /* An SRWLOCK needs no destruction. */
    free(b);
}

/* ------------------------------------------------------------------------
 * Overlapped IOCTLs.
 *
 * The object owns everything the kernel may touch while the operation is
 * pending: the WSAOVERLAPPED, its event, the input and output buffers, and
 * for ACQUIRE the acquiring socket and the block it will become.  None of it
 * is freed until the kernel is done (or it is leaked on purpose).
 */
struct portres_overlapped {
    WSAOVERLAPPED ov;
    HANDLE event;           /* manual-reset; ov.hEvent is this | 1 */
    SOCKET s;               /* the socket the IOCTL was issued on */
    int op;                 /* enum portres_op */
    int protocol;
    volatile LONG done;     /* the result below is recorded */
    int error;
    DWORD returned;
    union {
        INET_PORT_RANGE range;
        INET_PORT_RESERVATION_TOKEN token;
    } in;
    portres_reservation_instance out;
    portres_block *block;   /* ACQUIRE: allocated up front; the result
                               once done without error, until taken */
};

/* Record the result of a finished operation and signal the event. */
static void
ov_finish(portres_overlapped *ov, int err)
{
    if (ov->op == PORTRES_OP_ACQUIRE) {
        if (err == 0 && ov->out.Token.Token == INVALID_PORT_RESERVATION_TOKEN)
            err = ERROR_INVALID_DATA;
        if (err == 0) {
            block_init(ov->block, ov->s, &ov->out, ov->protocol);
        } else {
            closesocket(ov->s);
            free(ov->block);
            ov->block = NULL;
        }
    }
    ov->error = err;
    InterlockedExchange(&ov->done, 1);
    /* The kernel signals the event too, but Wine 8 completes these IOCTLs
     * (status in ov.Internal) without signalling it: set it here so that
     * every waiter wakes.  Harmless twice on a manual-reset event. */
    SetEvent(ov->event);
}

/* Free an object the kernel is done with (or never saw). */
static void
ov_destroy(portres_overlapped *ov)
{
    if (ov->block != NULL) {
        if (ov->done && ov->error == 0)
            portres_block_free(ov->block);  /* release + close */
        else
            free(ov->block);                /* never filled */
    }
    if (ov->event != NULL)
        CloseHandle(ov->event);
    free(ov);
}

int
portres_ov_reap(portres_overlapped *ov)
{
    DWORD bytes = 0, flags = 0;
    ULONG_PTR status;
    int err;

    if (ov->done)
        return 1;
    if (WSAGetOverlappedResult(ov->s, &ov->ov, &bytes, FALSE, &flags)) {
        ov_finish(ov, 0);
        return 1;
    }
    err = WSAGetLastError();
    if (err == WSA_IO_INCOMPLETE)
        return 0;
    if (err == WSAENOTSOCK) {
        /* The caller closed the socket: Winsock can no longer say, so read
         * the status word the kernel writes at completion (the
         * HasOverlappedIoCompleted macro, winbase.h; "OVERLAPPED structure
         * (minwinbase.h)": STATUS_PENDING until done). */
        status = *(volatile ULONG_PTR *)&ov->ov.Internal;
        if ((DWORD)status == (DWORD)STATUS_PENDING)
            return 0;
    }
    ov_finish(ov, err);
    return 1;
}

int
portres_ov_start(int op, portres_socket s, uint64_t token, int protocol,
                 unsigned start, unsigned count, portres_overlapped **out)
{
    portres_overlapped *ov;
    DWORD code, cb_in, cb_out;
    void *in, *outbuf;
    int type = 0, ipproto = 0, err;

    if (out == NULL)
        return WSAEFAULT;
    *out = NULL;
    switch (op) {
    case PORTRES_OP_ACQUIRE:
        err = acquire_args(protocol, start, count, &type, &ipproto);
        if (err == 0)
            err = portres_backend_init();
        if (err)
            return err;
        break;
    case PORTRES_OP_ASSOCIATE:
    case PORTRES_OP_RELEASE:
        break;
    default:
        return WSAEINVAL;
    }

    /* Everything is allocated before the IOCTL, which must find its
     * buffers in place. */
    ov = (portres_overlapped *)calloc(1, sizeof(*ov));
    if (ov == NULL)
        return ERROR_NOT_ENOUGH_MEMORY;
    ov->op = op;
    ov->protocol = protocol;
    ov->s = INVALID_SOCKET;
    if (op == PORTRES_OP_ACQUIRE) {
        ov->block = (portres_block *)calloc(1, sizeof(*ov->block));
        if (ov->block == NULL) {
            ov_destroy(ov);
            return ERROR_NOT_ENOUGH_MEMORY;
        }
    }
    /* Manual-reset: it stays signalled for every waiter ("OVERLAPPED
     * structure (minwinbase.h)" advises manual-reset events). */
    ov->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov->event == NULL) {
        err = (int)GetLastError();
        ov_destroy(ov);
        return err;
    }
    /* Low-order bit set: no completion packet is queued should the socket
     * be bound to an I/O completion port, e.g. by asyncio's proactor
     * ("GetQueuedCompletionStatus function (ioapiset.h)"). */
    ov->ov.hEvent = (HANDLE)((ULONG_PTR)ov->event | 1);

    if (op == PORTRES_OP_ACQUIRE) {
        ov->s = WSASocketW(AF_INET, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
        if (ov->s == INVALID_SOCKET) {
            err = WSAGetLastError();
            ov_destroy(ov);
            return err;
        }
        ov->in.range.StartPort = htons((u_short)start);   /* as [ACQ] */
        ov->in.range.NumberOfPorts = (USHORT)count;
        code = SIO_ACQUIRE_PORT_RESERVATION;
        in = &ov->in.range;
        cb_in = (DWORD)sizeof(ov->in.range);
        outbuf = &ov->out;
        cb_out = (DWORD)sizeof(ov->out);
    } else {
        ov->s = s;
        ov->in.token.Token = token;
        code = op == PORTRES_OP_ASSOCIATE ? SIO_ASSOCIATE_PORT_RESERVATION
                                          : SIO_RELEASE_PORT_RESERVATION;
        in = &ov->in.token;
        cb_in = (DWORD)sizeof(ov->in.token);
        outbuf = NULL;                  /* [ASC], [REL]: no output */
        cb_out = 0;
    }

    if (WSAIoctl(ov->s, code, in, cb_in, outbuf, cb_out, &ov->returned,
                 &ov->ov, NULL) == 0) {
        ov_finish(ov, 0);               /* completed at once */
    } else {
        err = WSAGetLastError();
        if (err != WSA_IO_PENDING) {
            /* Not started: the kernel holds nothing of ours. */
            if (op == PORTRES_OP_ACQUIRE)
                closesocket(ov->s);
            ov_destroy(ov);
            return err;
        }
        /* Pending, or already done without signalling (Wine 8): a reap
         * now records the latter and sets the event. */
        portres_ov_reap(ov);
    }
    *out = ov;
    return 0;
}

int
portres_ov_start_pending(portres_overlapped **out)
{
    /* A test hook of the Linux backend; real IOCTLs pend here. */
    if (out != NULL)
        *out = NULL;
    return ERROR_NOT_SUPPORTED;
}

intptr_t
portres_ov_event(const portres_overlapped *ov)
{
    return (intptr_t)ov->event;        /* the untagged handle */
}

int
portres_ov_wait_event(const portres_overlapped *ov, long timeout_ms)
{
    /* long is 32 bits on Windows: any value >= 0 is below INFINITE. */
    DWORD ms = timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms;

    switch (WaitForSingleObject(ov->event, ms)) {
    case WAIT_OBJECT_0:
        return PORTRES_WAIT_SIGNALLED;
    case WAIT_TIMEOUT:
        return PORTRES_WAIT_TIMEOUT;
    default:
        return (int)GetLastError();
    }
}

int
portres_ov_error(const portres_overlapped *ov)
{
    return ov->error;
}

portres_block *
portres_ov_take_block(portres_overlapped *ov)
{
    portres_block *b;

    if (!ov->done || ov->error != 0)
        return NULL;
    b = ov->block;
    ov->block = NULL;
    return b;
}

int
portres_ov_cancel(portres_overlapped *ov)
{
    int err;

    if (portres_ov_reap(ov))
        return 0;
    /* Cancels the IOCTL issued with this OVERLAPPED on that handle
     * ("CancelIoEx function (ioapiset.h)"); it then completes with
     * ERROR_OPERATION_ABORTED, seen by a later reap. */
    if (CancelIoEx((HANDLE)ov->s, (LPOVERLAPPED)&ov->ov))
        return 0;
    err = (int)GetLastError();
    /* ERROR_NOT_FOUND: nothing pending any more (same page). */
    return err == ERROR_NOT_FOUND ? 0 : err;
}

int
portres_ov_free(portres_overlapped *ov, long grace_ms)
{
    ULONGLONG deadline, now;
    DWORD slice;

    if (ov == NULL)
        return 0;
    if (!portres_ov_reap(ov)) {
        portres_ov_cancel(ov);
        deadline = GetTickCount64() + (ULONGLONG)(grace_ms > 0 ? grace_ms : 0);
        while (!portres_ov_reap(ov)) {
            now = GetTickCount64();
            if (now >= deadline)
                return 1;   /* the kernel still owns it: leak, never free */
            /* Short slices: a provider may complete without signalling. */
            slice = (DWORD)(deadline - now < 10 ? deadline - now : 10);
            WaitForSingleObject(ov->event, slice);
        }
    }
    ov_destroy(ov);
    return 0;
}

/* Thread-pool wait: calls CB(CTX) once when the event is signalled. */
struct portres_wait {
    HANDLE wait;
    void (*cb)(void *);
    void *ctx;
};

static VOID CALLBACK
portres_wait_callback(PVOID param, BOOLEAN timed_out)
{
    struct portres_wait *w = (struct portres_wait *)param;

    (void)timed_out;            /* INFINITE: never a timeout */
    w->cb(w->ctx);
}

int
portres_ov_register_wait(portres_overlapped *ov, void (*cb)(void *), void *ctx,
                         void **wait_handle)
{
    struct portres_wait *w;
    int err;

    if (wait_handle == NULL || cb == NULL)
        return ERROR_INVALID_PARAMETER;
    *wait_handle = NULL;
    w = (struct portres_wait *)calloc(1, sizeof(*w));
    if (w == NULL)
        return ERROR_NOT_ENOUGH_MEMORY;
    w->cb = cb;
    w->ctx = ctx;
    /* "RegisterWaitForSingleObject function (winbase.h)": with
     * WT_EXECUTEONLYONCE the callback runs once, on a pool thread. */
    if (!RegisterWaitForSingleObject(&w->wait, ov->event,
                                     portres_wait_callback, w, INFINITE,
                                     WT_EXECUTEONLYONCE)) {
        err = (int)GetLastError();
        free(w);
        return err;
    }
    *wait_handle = w;
    return 0;
}

int
portres_ov_unregister_wait(void *wait_handle)
{
    struct portres_wait *w = (struct portres_wait *)wait_handle;

    if (w == NULL)
        return 0;
    /* INVALID_HANDLE_VALUE: return only once a running callback has
     * returned ("UnregisterWaitEx function" in the Synchronization docs). */
    if (!UnregisterWaitEx(w->wait, INVALID_HANDLE_VALUE))
        return (int)GetLastError();     /* W may still be used: leak it */
    free(w);
    return 0;
}

/* ------------------------------------------------------------------------
 * Persistent reservations (iphlpapi), one call each.
 *
 * All six functions take StartPort "in network byte order" and
 * NumberOfPorts as a plain count: the [CPT] and [DPT] samples pass
 * htons(start) and (USHORT)count.  They return the result itself, NO_ERROR
 * or a Win32 error code ([CPT], [LPT], [DPT] "Return value"), so
 * GetLastError() is never read here.  Create and Delete need an elevated
 * administrator, else ERROR_ACCESS_DENIED ([CPT], [DPT] Remarks); Lookup
 * documents no such error.  Tokens are ULONG64, "may change each time the
 * system is restarted" [CPT] Remarks.
 */
static int
persistent_args(int protocol, unsigned start, unsigned count)
{
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP)
        return ERROR_INVALID_PARAMETER;
    /* What the functions themselves refuse with ERROR_INVALID_PARAMETER
     * ([CPT]: a zero StartPort or NumberOfPorts, or a block past the last
     * port), refused before the call; also guards the USHORT casts. */
    if (start == 0 || start > 65535u || count == 0 || count > 65535u
            || start + count - 1 > 65535u)
        return ERROR_INVALID_PARAMETER;
    return 0;
}

int
portres_persistent_create(int protocol, unsigned start, unsigned count,
                          uint64_t *token)
{
    ULONG64 tok = 0;
    ULONG err;

    if (token == NULL)
        return ERROR_INVALID_PARAMETER;
    *token = 0;
    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return (int)err;
    /* [CPT], [CPU]: StartPort network order, NumberOfPorts host order,
     * Token [out] PULONG64. */
    if (protocol == PORTRES_TCP)
        err = CreatePersistentTcpPortReservation(htons((u_short)start),
                                                 (USHORT)count, &tok);
    else
        err = CreatePersistentUdpPortReservation(htons((u_short)start),
                                                 (USHORT)count, &tok);
    if (err != NO_ERROR)
        return (int)err;
    /* Passed through as is: the reservation exists now, whatever the token
     * looks like ("a unique opaque ULONG64 token" [CPT]). */
    *token = tok;
    return 0;
}

int
portres_persistent_lookup(int protocol, unsigned start, unsigned count,
                          uint64_t *token)
{
    ULONG64 tok = 0;
    ULONG err;

    if (token == NULL)
        return ERROR_INVALID_PARAMETER;
    *token = 0;
    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return (int)err;
    /* [LPT], [LPU]: START and COUNT must match those of the creation;
     * ERROR_NOT_FOUND otherwise. */
    if (protocol == PORTRES_TCP)
        err = LookupPersistentTcpPortReservation(htons((u_short)start),
                                                 (USHORT)count, &tok);
    else
        err = LookupPersistentUdpPortReservation(htons((u_short)start),
                                                 (USHORT)count, &tok);
    if (err != NO_ERROR)
        return (int)err;
    *token = tok;
    return 0;
}

int
portres_persistent_delete(int protocol, unsigned start, unsigned count)
{
    ULONG err;

    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return (int)err;
    /* [DPT], [DPU]: no token; ERROR_NOT_FOUND if no such block. */
    if (protocol == PORTRES_TCP)
        err = DeletePersistentTcpPortReservation(htons((u_short)start),
                                                 (USHORT)count);
    else
        err = DeletePersistentUdpPortReservation(htons((u_short)start),
                                                 (USHORT)count);
    return (int)err;
}

/* ------------------------------------------------------------------------
 * Listing persistent reservations.
 *
 * Windows documents no enumeration: iphlpapi has Create, Delete and Lookup
 * (by exact block) only, and the public tools we found (Docker, WSL and
 * Hyper-V users' scripts, skytable, serverengine, node-portscanner) all
 * parse `netsh int ipv4 show excludedportrange`.  Persistent reservations
 * are "recorded in a persistent store for the TCP module" [CPT] Remarks
 * (the UDP module for UDP [CPU]).  Administrators' notes (BigFix forum
 * and fixlet 27007 on excluded port ranges) locate that store in the
 * registry, one key per protocol, shared by IPv4 and IPv6:
 *
 *   HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{TCP module id}\29
 *   HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{UDP module id}\5
 *
 * (the ids eb004a03-/eb004a02-9b1a-11d4-9123-0050047759bc are
 * NPI_MS_TCP_MODULEID / NPI_MS_UDP_MODULEID, as in Wine's NSI code), with
 * one value per block named by the 8 hex digits of its INET_PORT_RANGE
 * bytes: StartPort in network order, then NumberOfPorts little-endian
 * ("cc570100": start 0xcc57 = 52311, 1 port).
 *
 * That layout is not documented, so it only supplies candidates: each is
 * confirmed with the documented Lookup*PortReservation, and only the blocks
 * it finds are listed.  So: every entry is a block lookup/delete accept
 * (never a false one); runtime reservations (SIO_ACQUIRE_PORT_RESERVATION)
 * are not in the store, and other excluded ranges netsh shows (those of
 * Hyper-V/WinNAT, without its "*" mark) appear only if Lookup confirms
 * them; should a Windows version keep the store elsewhere, the list comes
 * out incomplete (empty), never wrong.  No key: no persistent reservation
 * was ever made, an empty list.  Read-only: the key is opened with
 * KEY_QUERY_VALUE, all RegEnumValueW needs [REV].
 */
static const WCHAR persistent_key_tcp[] =
    L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
    L"{eb004a03-9b1a-11d4-9123-0050047759bc}\\29";
static const WCHAR persistent_key_udp[] =
    L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
    L"{eb004a02-9b1a-11d4-9123-0050047759bc}\\5";

static int
hex_digit(WCHAR c)
{
    if (c >= L'0' && c <= L'9')
        return c - L'0';
    if (c >= L'a' && c <= L'f')
        return c - L'a' + 10;
    if (c >= L'A' && c <= L'F')
        return c - L'A' + 10;
    return -1;
}

/* A value name of the store -> the block; 0 if it is not one. */
static int
persistent_parse_name(const WCHAR *name, DWORD len, unsigned *start,
                      unsigned *count)
{
    unsigned char b[4];
    int i, hi, lo;

    if (len != 8)
        return 0;
    for (i = 0; i < 4; i++) {
        hi = hex_digit(name[2 * i]);
        lo = hex_digit(name[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    *start = (unsigned)b[0] << 8 | b[1];    /* StartPort: network order */
    *count = b[2] | (unsigned)b[3] << 8;    /* NumberOfPorts: little-endian */
    return 1;
}

static int
block_compare(const void *a, const void *b)
{
    const portres_port_block *x = (const portres_port_block *)a;
    const portres_port_block *y = (const portres_port_block *)b;

    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->count != y->count)
        return x->count < y->count ? -1 : 1;
    return 0;
}

int
portres_persistent_list(int protocol, portres_port_block **blocks, size_t *n,
                        const char **call)
{
    portres_port_block *arr = NULL, *bigger;
    size_t len = 0, cap = 0, i, j;
    WCHAR name[16];
    DWORD index, name_len;
    unsigned start, count;
    uint64_t token;
    const char *failed = NULL;
    LONG rc;
    HKEY key;
    int err = 0;

    if (call != NULL)
        *call = NULL;
    if (blocks == NULL || n == NULL)
        return ERROR_INVALID_PARAMETER;
    *blocks = NULL;
    *n = 0;
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP)
        return ERROR_INVALID_PARAMETER;

    /* [ROK]: returns ERROR_SUCCESS or the error code.  KEY_WOW64_64KEY:
     * the native view from a 32-bit process too ("Accessing an Alternate
     * Registry View"; SYSTEM is not redirected anyway). */
    rc = RegOpenKeyExW(HKEY_LOCAL_MACHINE,
                       protocol == PORTRES_TCP ? persistent_key_tcp
                                               : persistent_key_udp,
                       0, KEY_QUERY_VALUE | KEY_WOW64_64KEY, &key);
    if (rc == ERROR_FILE_NOT_FOUND)
        return 0;
    if (rc != ERROR_SUCCESS) {
        if (call != NULL)
            *call = "RegOpenKeyExW";
        return (int)rc;
    }

    for (index = 0;; index++) {
        /* [REV]: in, the buffer size in characters; out, the length
         * without the terminating null.  Values come in no order. */
        name_len = (DWORD)(sizeof(name) / sizeof(name[0]));
        rc = RegEnumValueW(key, index, name, &name_len, NULL, NULL, NULL,
                           NULL);
        if (rc == ERROR_NO_MORE_ITEMS)
            break;
        if (rc == ERROR_MORE_DATA)
            continue;       /* a longer name [REV]: not a block */
        if (rc != ERROR_SUCCESS) {
            err = (int)rc;
            failed = "RegEnumValueW";
            break;
        }
        if (!persistent_parse_name(name, name_len, &start, &count)
                || persistent_args(protocol, start, count) != 0)
            continue;
        err = portres_persistent_lookup(protocol, start, count, &token);
        if (err == ERROR_NOT_FOUND) {
            err = 0;        /* not (or no longer) a persistent block */
            continue;
        }
        if (err) {
            failed = protocol == PORTRES_TCP
                     ? "LookupPersistentTcpPortReservation"
                     : "LookupPersistentUdpPortReservation";
            break;
        }
        if (len == cap) {
            cap = cap ? 2 * cap : 16;
            bigger = (portres_port_block *)calloc(cap, sizeof(*bigger));
            if (bigger == NULL) {
                err = ERROR_NOT_ENOUGH_MEMORY;
                break;
            }
            if (len)
                memcpy(bigger, arr, len * sizeof(*arr));
            free(arr);
            arr = bigger;
        }
        arr[len].start = start;
        arr[len].count = count;
        len++;
    }
    RegCloseKey(key);
    if (err) {
        free(arr);
        if (call != NULL)
            *call = failed;
        return err;
    }

    if (len > 1)
        qsort(arr, len, sizeof(*arr), block_compare);
    for (i = j = 0; i < len; i++)       /* drop duplicates, if any */
        if (j == 0 || block_compare(&arr[j - 1], &arr[i]) != 0)
            arr[j++] = arr[i];
    if (j == 0) {
        free(arr);
        arr = NULL;
    }
    *blocks = arr;
    *n = j;
    return 0;
}

void
portres_persistent_list_free(portres_port_block *blocks)
{
    free(blocks);
}

/* ------------------------------------------------------------------------
 * Who holds a port: the TCP and UDP endpoint tables with owning PIDs, and
 * the image name of a PID.
 *
 * GetExtendedTcpTable with TCP_TABLE_OWNER_PID_ALL returns, for AF_INET, a
 * MIB_TCPTABLE_OWNER_PID, for AF_INET6 a MIB_TCP6TABLE_OWNER_PID [GTT]
 * Remarks; GetExtendedUdpTable with UDP_TABLE_OWNER_PID a
 * MIB_UDPTABLE_OWNER_PID / MIB_UDP6TABLE_OWNER_PID [GUT].  Every
 * dwLocalPort is "the local port number in network byte order" in a DWORD
 * ([T4R], [T6R], [U4R], [U6R]): the port's two bytes, high byte first, are
 * the DWORD's low-addressed 16 bits (its low-order half on the
 * little-endian machines Windows runs on), so the port is ntohs() of the
 * DWORD's low 16 bits; the other two bytes are never read.  Rows are
 * reached through the headers' own table types, never by hand-computed
 * offsets: "any access ... should assume padding may exist" [T4T].
 *
 * Sizes [GTT]/[GUT]: "If this value is set too small,
 * ERROR_INSUFFICIENT_BUFFER is returned ... and this field will contain the
 * correct size".  The table can grow between that answer and the next
 * call, so each retry asks for the size returned plus a margin, and the
 * loop gives up (ERROR_INSUFFICIENT_BUFFER) after PORTRES_TABLE_ATTEMPTS
 * calls rather than spin on a table that keeps growing.  A successful
 * answer is checked against the buffer before any row is read: a
 * dwNumEntries the buffer cannot hold gives ERROR_INVALID_DATA.
 */
#define PORTRES_TABLE_FIRST     (16u * 1024u)
#define PORTRES_TABLE_MAX       (256u * 1024u * 1024u)
#define PORTRES_TABLE_ATTEMPTS  8

int
portres_tcp_state_from_mib(unsigned long mib_state)
{
    /* [STA] values -> include/net/tcp_states.h (TCP_ESTABLISHED 1,
     * TCP_SYN_SENT 2, TCP_SYN_RECV 3, TCP_FIN_WAIT1 4, TCP_FIN_WAIT2 5,
     * TCP_TIME_WAIT 6, TCP_CLOSE 7, TCP_CLOSE_WAIT 8, TCP_LAST_ACK 9,
     * TCP_LISTEN 10, TCP_CLOSING 11).  DELETE_TCB, a connection being torn
     * down, has no Linux counterpart: CLOSE. */
    switch (mib_state) {
    case 1:  return 7;      /* MIB_TCP_STATE_CLOSED */
    case 2:  return 10;     /* MIB_TCP_STATE_LISTEN */
    case 3:  return 2;      /* MIB_TCP_STATE_SYN_SENT */
    case 4:  return 3;      /* MIB_TCP_STATE_SYN_RCVD */
    case 5:  return 1;      /* MIB_TCP_STATE_ESTAB */
    case 6:  return 4;      /* MIB_TCP_STATE_FIN_WAIT1 */
    case 7:  return 5;      /* MIB_TCP_STATE_FIN_WAIT2 */
    case 8:  return 8;      /* MIB_TCP_STATE_CLOSE_WAIT */
    case 9:  return 11;     /* MIB_TCP_STATE_CLOSING */
    case 10: return 9;      /* MIB_TCP_STATE_LAST_ACK */
    case 11: return 6;      /* MIB_TCP_STATE_TIME_WAIT */
    case 12: return 7;      /* MIB_TCP_STATE_DELETE_TCB */
    default:
        /* Unknown to [STA] (e.g. a newer Windows' state): passed on, marked. */
        return mib_state < 1000ul ? PORTRES_MIB_STATE_OTHER + (int)mib_state
                                  : PORTRES_MIB_STATE_OTHER;
    }
}

/* The port of a table row: network order in the DWORD's first two bytes. */
static unsigned
table_port(DWORD local_port)
{
    return ntohs((u_short)(local_port & 0xFFFFu));
}

/* One table of PROTOCOL and FAMILY into a new buffer *TABLE of *SIZE
 * bytes.  Returns 0 or the function's error. */
static int
fetch_table(int protocol, ULONG family, void **table, DWORD *size)
{
    DWORD cap = PORTRES_TABLE_FIRST, want, rc;
    void *buf;
    int attempt;

    *table = NULL;
    *size = 0;
    for (attempt = 0; attempt < PORTRES_TABLE_ATTEMPTS; attempt++) {
        buf = calloc(1, cap);
        if (buf == NULL)
            return ERROR_NOT_ENOUGH_MEMORY;
        want = cap;
        /* bOrder FALSE: no sorting needed; Reserved 0 [GTT]/[GUT]. */
        if (protocol == PORTRES_TCP)
            rc = GetExtendedTcpTable(buf, &want, FALSE, family,
                                     TCP_TABLE_OWNER_PID_ALL, 0);
        else
            rc = GetExtendedUdpTable(buf, &want, FALSE, family,
                                     UDP_TABLE_OWNER_PID, 0);
        if (rc == NO_ERROR) {
            *table = buf;
            *size = cap;        /* what we own, whatever WANT says now */
            return 0;
        }
        free(buf);
        if (rc != ERROR_INSUFFICIENT_BUFFER)
            return (int)rc;
        /* WANT is the size now; ask for a quarter more, for the rows that
         * may appear before the next call.  A WANT that does not exceed
         * what was given (not documented) still makes the buffer grow. */
        if (want <= cap)
            want = cap * 2;             /* cap <= 320 MB: no overflow */
        if (want > PORTRES_TABLE_MAX || want + want / 4 > PORTRES_TABLE_MAX)
            return ERROR_INSUFFICIENT_BUFFER;
        cap = want + want / 4;
    }
    return ERROR_INSUFFICIENT_BUFFER;
}

/* Append to a growing array (calloc + copy: no realloc, so that the Wine
 * test's heap accounting sees every block). */
static int
append_socket(portres_win_socket **arr, size_t *len, size_t *cap,
              int family, int state, unsigned port, unsigned long pid)
{
    portres_win_socket *bigger;

    if (*len == *cap) {
        size_t ncap = *cap ? 2 * *cap : 16;
        bigger = (portres_win_socket *)calloc(ncap, sizeof(*bigger));
        if (bigger == NULL)
            return ERROR_NOT_ENOUGH_MEMORY;
        if (*len)
            memcpy(bigger, *arr, *len * sizeof(**arr));
        free(*arr);
        *arr = bigger;
        *cap = ncap;
    }
    (*arr)[*len].family = family;
    (*arr)[*len].state = state;
    (*arr)[*len].port = port;
    (*arr)[*len].pid = pid;
    (*len)++;
    return 0;
}

/* Does a table of SIZE bytes hold its dwNumEntries rows of ROW bytes
 * after an offset of FIRST? */
static int
table_fits(DWORD entries, size_t first, size_t row, DWORD size)
{
    if (size < first)
        return 0;
    return (size_t)entries <= ((size_t)size - first) / row;
}

#define PORTRES_TABLE_FITS(type, t, size) \
    table_fits((t)->dwNumEntries, offsetof(type, table), \
               sizeof((t)->table[0]), (size))

/* The rows of one table whose port is in [LO, HI], appended to ARR. */
static int
parse_table(int protocol, int family, const void *table, DWORD size,
            unsigned lo, unsigned hi, portres_win_socket **arr, size_t *len,
            size_t *cap)
{
    DWORD i;
    unsigned port;
    int err = 0;

    /* UDP rows: no state; 7 (TCP_CLOSE) is "bound", as on Linux. */
    if (protocol == PORTRES_TCP && family == AF_INET) {
        const MIB_TCPTABLE_OWNER_PID *t = (const MIB_TCPTABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_TCPTABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET,
                                    portres_tcp_state_from_mib(t->table[i].dwState),
                                    port, t->table[i].dwOwningPid);
        }
    } else if (protocol == PORTRES_TCP) {
        const MIB_TCP6TABLE_OWNER_PID *t = (const MIB_TCP6TABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_TCP6TABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET6,
                                    portres_tcp_state_from_mib(t->table[i].dwState),
                                    port, t->table[i].dwOwningPid);
        }
    } else if (family == AF_INET) {
        const MIB_UDPTABLE_OWNER_PID *t = (const MIB_UDPTABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_UDPTABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET, 7, port,
                                    t->table[i].dwOwningPid);
        }
    } else {
        const MIB_UDP6TABLE_OWNER_PID *t = (const MIB_UDP6TABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_UDP6TABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET6, 7, port,
                                    t->table[i].dwOwningPid);
        }
    }
    return err;
}

int
portres_win_port_sockets(int protocol, unsigned lo, unsigned hi,
                         portres_win_socket **out, size_t *n,
                         const char **call)
{
    static const int families[2] = { AF_INET, AF_INET6 };
    portres_win_socket *arr = NULL;
    size_t len = 0, cap = 0;
    void *table;
    DWORD size;
    int f, err = 0;

    if (call != NULL)
        *call = NULL;
    if (out == NULL || n == NULL)
        return ERROR_INVALID_PARAMETER;
    *out = NULL;
    *n = 0;
    if ((protocol != PORTRES_TCP && protocol != PORTRES_UDP) || lo > hi
            || hi > 65535u)
        return ERROR_INVALID_PARAMETER;

    for (f = 0; f < 2 && !err; f++) {
        err = fetch_table(protocol, (ULONG)families[f], &table, &size);
        if (err)
            break;
        err = parse_table(protocol, families[f], table, size, lo, hi, &arr,
                          &len, &cap);
        free(table);
    }
    if (err) {
        free(arr);
        if (call != NULL && err != ERROR_NOT_ENOUGH_MEMORY)
            *call = protocol == PORTRES_TCP ? "GetExtendedTcpTable"
                                            : "GetExtendedUdpTable";
        return err;
    }
    *out = arr;
    *n = len;
    return 0;
}

void
portres_win_port_sockets_free(portres_win_socket *sockets)
{
    free(sockets);
}

/* [QPI]: lpdwSize is "the size of the lpExeName buffer, in characters" on
 * input and the length written, without the NUL, on success.  A path
 * longer than MAX_PATH (long paths enabled) retries with the largest
 * Win32 path, 32767 characters. */
#define PORTRES_LONG_PATH 32768u

int
portres_process_name(unsigned long pid, char **utf8, size_t *len)
{
    WCHAR small[MAX_PATH + 1];
    WCHAR *wide = small, *big = NULL;
    DWORD wlen;
    HANDLE h;
    char *buf;
    int err = 0, n;

    if (utf8 == NULL || len == NULL)
        return ERROR_INVALID_PARAMETER;
    *utf8 = NULL;
    *len = 0;
    /* [OPR]: NULL on failure, GetLastError() says why (ERROR_ACCESS_DENIED,
     * ERROR_INVALID_PARAMETER for PID 0 or one that does not exist).
     * PROCESS_QUERY_LIMITED_INFORMATION is all [QPI] needs, and is granted
     * for more processes than PROCESS_QUERY_INFORMATION. */
    h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
    if (h == NULL)
        return (int)GetLastError();
    wlen = (DWORD)(sizeof(small) / sizeof(small[0]));
    if (!QueryFullProcessImageNameW(h, 0, wide, &wlen)) {
        err = (int)GetLastError();
        if (err == ERROR_INSUFFICIENT_BUFFER) {
            big = (WCHAR *)calloc(PORTRES_LONG_PATH, sizeof(WCHAR));
            if (big == NULL) {
                err = ERROR_NOT_ENOUGH_MEMORY;
            } else {
                wide = big;
                wlen = PORTRES_LONG_PATH;
                err = QueryFullProcessImageNameW(h, 0, wide, &wlen)
                      ? 0 : (int)GetLastError();
            }
        }
    }
    CloseHandle(h);
    if (err == 0 && (wlen == 0 || wlen >= PORTRES_LONG_PATH))
        err = ERROR_INVALID_DATA;       /* no name, or not NUL-terminated */
    if (err) {
        free(big);
        return err;
    }
    /* [W2M]: with a length (no NUL counted) it returns the bytes needed,
     * then the bytes written.  Flags 0, not WC_ERR_INVALID_CHARS: a name
     * holding an unpaired surrogate (NTFS allows it) is converted with a
     * replacement character instead of failing. */
    n = WideCharToMultiByte(CP_UTF8, 0, wide, (int)wlen, NULL, 0, NULL, NULL);
    if (n <= 0) {
        err = (int)GetLastError();
        free(big);
        return err ? err : ERROR_INVALID_DATA;
    }
    buf = (char *)calloc((size_t)n + 1, 1);
    if (buf == NULL) {
        free(big);
        return ERROR_NOT_ENOUGH_MEMORY;
    }
    if (WideCharToMultiByte(CP_UTF8, 0, wide, (int)wlen, buf, n, NULL, NULL)
            != n) {
        err = (int)GetLastError();
        free(buf);
        free(big);
        return err ? err : ERROR_INVALID_DATA;
    }
    free(big);
    *utf8 = buf;
    *len = (size_t)n;
    return 0;
}

void
portres_process_name_free(char *utf8)
{
    free(utf8);
}

#endif /* _WIN32 */
