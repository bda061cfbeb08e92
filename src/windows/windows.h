/*
 * windows/windows.h - what the files of the Windows backend share: the
 * mstcpip.h definitions, the block structure and the helpers each file
 * offers the others.  Plain C, private to src/windows/ (the binding sees
 * only portres.h); tests/windows/test_windows.c compiles the backend's
 * files into one program with its seams in front of the Win32 calls.
 *
 * The backend, one file per job:
 *   ioctl.c       WSAStartup; the three IOCTLs, synchronous; runtime blocks
 *   overlapped.c  the IOCTLs in overlapped mode; thread-pool waits
 *   persistent.c  persistent reservations (iphlpapi), and their listing
 *   owners.c      who holds a port (GetExtended*Table), process names
 *
 * Every function returns 0 or a Winsock/Win32 error code
 * (WSAGetLastError()/GetLastError()), errno is never used here, and a
 * failure records the call that failed (portres_fail, portres.h).
 *
 * References (Microsoft Learn page titles):
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
#ifndef PORTRES_WINDOWS_H
#define PORTRES_WINDOWS_H

#include "portres.h" /* winsock2.h + ws2tcpip.h come first */
#include <windows.h>
#include <mstcpip.h>
#include <iphlpapi.h> /* the persistent functions; link iphlpapi */
#ifdef _MSC_VER
/* RegOpenKeyExW/RegEnumValueW (listing) live in advapi32, which a plain
 * link.exe command line does not add by itself. */
#pragma comment(lib, "advapi32.lib")
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
#define IOC_VENDOR 0x18000000
#endif
#ifndef _WSAIOW
#define _WSAIOW(x, y) (IOC_IN | (x) | (y))
#endif
#ifndef SIO_ACQUIRE_PORT_RESERVATION
/* The header predates the feature: the structures are missing as well. */
#define SIO_ACQUIRE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 100)
typedef struct _INET_PORT_RANGE {
    USHORT StartPort;     /* network byte order [ACQ] sample: htons() */
    USHORT NumberOfPorts; /* host byte order */
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
#define SIO_RELEASE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 101)
#endif
#ifndef SIO_ASSOCIATE_PORT_RESERVATION
#define SIO_ASSOCIATE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 102)
#endif
#ifndef INVALID_PORT_RESERVATION_TOKEN
#define INVALID_PORT_RESERVATION_TOKEN ((ULONG64)0)
#endif
#ifndef WSA_FLAG_NO_HANDLE_INHERIT
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80 /* winsock2.h; [WSS] */
#endif
#ifndef SIO_BASE_HANDLE
#define SIO_BASE_HANDLE _WSAIOR(IOC_WS2, 34) /* mswsock.h */
#endif
#ifndef SO_PROTOCOL_INFOW
#define SO_PROTOCOL_INFOW 0x2005 /* winsock2.h */
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
#define PORTRES_STATIC_ASSERT(name, cond) typedef char portres_static_assert_##name[(cond) ? 1 : -1]

/* Overlapped sockets, so that the IOCTLs can also be issued in overlapped
 * mode; synchronous calls (lpOverlapped NULL) still work on them [ACQ]
 * Remarks.  Not inheritable, so a child process cannot keep a reservation
 * alive (the flag exists from Windows 7 SP1 / KB2398202 on, [WSS]). */
#define PORTRES_WSA_FLAGS (WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT)

struct portres_block {
    SOCKET sock; /* the acquiring socket: the reservation lives as
                           long as this socket [ACQ] Remarks */
    uint64_t token;
    unsigned start; /* host order */
    unsigned count;
    int protocol; /* enum portres_protocol */
    /* Shared by binds, exclusive for close: a bind in flight finishes
     * before the reservation ends, and none starts after it. */
    SRWLOCK lock;
    volatile LONG closed;
    /* The blocks of this process, by token, for portres_release (ioctl.c):
     * linked from block_init to portres_block_free. */
    portres_block *prev, *next;
    int registered;
};

/* Error for any use of a closed block (the errno analogue is EBADF). */
#define PORTRES_ERROR_CLOSED WSAEBADF

/* Record the failure of CALL: WSAGetLastError() / GetLastError(). */
#define PORTRES_FAIL_WSA(call) portres_fail(WSAGetLastError(), (call))
#define PORTRES_FAIL_LAST(call) portres_fail((int)GetLastError(), (call))

#define PORTRES_CALL_ACQUIRE "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)"
#define PORTRES_CALL_ASSOCIATE "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)"
#define PORTRES_CALL_RELEASE "WSAIoctl(SIO_RELEASE_PORT_RESERVATION)"

/* ioctl.c */
int protocol_type(int protocol, int *type, int *ipproto);
unsigned sockaddr_port(const struct sockaddr_storage *ss);
int acquire_args(int protocol, unsigned start, unsigned count, int *type, int *ipproto);
void block_init(portres_block *b, SOCKET s, const portres_reservation_instance *inst, int protocol);
/* A release of TOKEN succeeded: close the block of this process holding it
 * (without a second release). */
void block_released(uint64_t token);

#endif /* PORTRES_WINDOWS_H */
