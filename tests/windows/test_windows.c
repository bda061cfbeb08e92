/*
 * test_windows.c - native test of the Windows backend (src/windows/),
 * built with mingw-w64 and run under Wine by tests/windows/run.sh.
 *
 * The backend is compiled into this program with its WSAIoctl calls routed
 * through a recorder (portres_test_WSAIoctl below) that keeps the code, the
 * buffer sizes and a copy of the input bytes of every call, and then either
 * forwards to the real WSAIoctl or plays a scripted result.  That checks:
 *   - the exact bytes handed to the kernel against the documented layouts
 *     (INET_PORT_RANGE: StartPort network order, NumberOfPorts host order;
 *     INET_PORT_RESERVATION_TOKEN: a little-endian ULONG64);
 *   - how the backend reads a crafted INET_PORT_RESERVATION_INSTANCE;
 *   - the overlapped objects: a scripted pending operation is completed,
 *     cancelled or left pending by hand, to drive wait/timeout/reap/cancel/
 *     free (and the deliberate leak) deterministically;
 *   - the real Winsock behaviour Wine has: Wine 8 answers the three IOCTLs
 *     with WSAEOPNOTSUPP (overlapped: WSA_IO_PENDING, then that status,
 *     without signalling the event), so the error paths run for real, and
 *     are checked for leaks (process handles and the backend's heap).
 *   - the persistent-reservation calls (iphlpapi): Wine's functions abort
 *     the process, so they are never called; the backend's calls reach
 *     recording fakes instead, which check the arguments' bytes (StartPort
 *     network order, NumberOfPorts host order), the Tcp/Udp choice, the
 *     token pointer and the pass-through of the returned error; the
 *     listing reads a crafted registry key (Wine's registry is real) in
 *     place of the system's, through a recording RegOpenKeyExW.
 *   - who holds a port: GetExtendedTcpTable/GetExtendedUdpTable reach a
 *     recording seam that either plays crafted MIB_*TABLE_OWNER_PID images
 *     (port byte order, both families, the state mapping, the
 *     ERROR_INSUFFICIENT_BUFFER growth loop with a table that grows between
 *     calls, corrupt row counts) or forwards to Wine's real functions,
 *     which must find this program's own listener, connection and UDP
 *     socket with its PID; the process name comes from Wine's real
 *     OpenProcess/QueryFullProcessImageNameW, or from a scripted
 *     QueryFullProcessImageNameW (UTF-8 conversion, long paths).
 * [ASC] = Microsoft Learn "SIO_ASSOCIATE_PORT_RESERVATION Control Code".
 *
 * Output: one line per check, then "N passed, M failed"; exit status 1 on
 * any failure.
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>
#include <windows.h>
#include <iphlpapi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the seams, declared before the backend is included ---------------- */

/* Same prototype as WSAIoctl in winsock2.h. */
int WSAAPI portres_test_WSAIoctl(SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer,
                                 DWORD cbInBuffer, LPVOID lpvOutBuffer, DWORD cbOutBuffer,
                                 LPDWORD lpcbBytesReturned, LPWSAOVERLAPPED lpOverlapped,
                                 LPWSAOVERLAPPED_COMPLETION_ROUTINE lpCompletionRoutine);
int WSAAPI portres_test_WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData);
static void *portres_test_calloc(size_t n, size_t size);
static void portres_test_free(void *p);

/* Wine's iphlpapi persistent functions abort the process: the backend's
 * calls go to recording fakes (test_persistent below), never to Wine.
 * Same prototypes as in iphlpapi.h / winreg.h. */
ULONG WINAPI portres_test_CreatePersistentTcpPortReservation(USHORT, USHORT, PULONG64);
ULONG WINAPI portres_test_CreatePersistentUdpPortReservation(USHORT, USHORT, PULONG64);
ULONG WINAPI portres_test_LookupPersistentTcpPortReservation(USHORT, USHORT, PULONG64);
ULONG WINAPI portres_test_LookupPersistentUdpPortReservation(USHORT, USHORT, PULONG64);
ULONG WINAPI portres_test_DeletePersistentTcpPortReservation(USHORT, USHORT);
ULONG WINAPI portres_test_DeletePersistentUdpPortReservation(USHORT, USHORT);
LONG WINAPI portres_test_RegOpenKeyExW(HKEY, LPCWSTR, DWORD, REGSAM, PHKEY);
LONG WINAPI portres_test_RegEnumValueW(HKEY, DWORD, LPWSTR, LPDWORD, LPDWORD, LPDWORD, LPBYTE,
                                       LPDWORD);
/* The endpoint tables and the image name: same prototypes as in
 * iphlpapi.h / winbase.h. */
DWORD WINAPI portres_test_GetExtendedTcpTable(PVOID, PDWORD, WINBOOL, ULONG, TCP_TABLE_CLASS,
                                              ULONG);
DWORD WINAPI portres_test_GetExtendedUdpTable(PVOID, PDWORD, WINBOOL, ULONG, UDP_TABLE_CLASS,
                                              ULONG);
WINBOOL WINAPI portres_test_QueryFullProcessImageNameW(HANDLE, DWORD, LPWSTR, PDWORD);

#define WSAIoctl portres_test_WSAIoctl
#define WSAStartup portres_test_WSAStartup
#define calloc portres_test_calloc
#define free portres_test_free
#define CreatePersistentTcpPortReservation portres_test_CreatePersistentTcpPortReservation
#define CreatePersistentUdpPortReservation portres_test_CreatePersistentUdpPortReservation
#define LookupPersistentTcpPortReservation portres_test_LookupPersistentTcpPortReservation
#define LookupPersistentUdpPortReservation portres_test_LookupPersistentUdpPortReservation
#define DeletePersistentTcpPortReservation portres_test_DeletePersistentTcpPortReservation
#define DeletePersistentUdpPortReservation portres_test_DeletePersistentUdpPortReservation
#define RegOpenKeyExW portres_test_RegOpenKeyExW
#define RegEnumValueW portres_test_RegEnumValueW
#define GetExtendedTcpTable portres_test_GetExtendedTcpTable
#define GetExtendedUdpTable portres_test_GetExtendedUdpTable
#define QueryFullProcessImageNameW portres_test_QueryFullProcessImageNameW

#include "backend_sources.h"

#undef WSAIoctl
#undef WSAStartup
#undef calloc
#undef free
#undef CreatePersistentTcpPortReservation
#undef CreatePersistentUdpPortReservation
#undef LookupPersistentTcpPortReservation
#undef LookupPersistentUdpPortReservation
#undef DeletePersistentTcpPortReservation
#undef DeletePersistentUdpPortReservation
#undef RegOpenKeyExW
#undef RegEnumValueW
#undef GetExtendedTcpTable
#undef GetExtendedUdpTable
#undef QueryFullProcessImageNameW

/* The listing functions' failing call, as the checks below read it: the
 * error record of portres.h ("Errors"), NULL after a success. */
static int list_persistent(int protocol, portres_port_block **blocks, size_t *n, const char **call)
{
    int err;

    portres_error_clear();
    err = portres_persistent_list(protocol, blocks, n);
    *call = err ? portres_error_call() : NULL;
    return err;
}

static int list_port_sockets(int protocol, unsigned lo, unsigned hi, portres_port_socket **out,
                             size_t *n, const char **call)
{
    int err;

    portres_error_clear();
    err = portres_port_sockets(protocol, lo, hi, out, n);
    *call = err ? portres_error_call() : NULL;
    return err;
}

/* ---- heap and WSAStartup accounting ------------------------------------ */

static volatile LONG heap_live; /* backend blocks not yet freed */
static volatile LONG startup_calls;

static void *portres_test_calloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p != NULL)
        InterlockedIncrement(&heap_live);
    return p;
}

static void portres_test_free(void *p)
{
    if (p != NULL)
        InterlockedDecrement(&heap_live);
    free(p);
}

int WSAAPI portres_test_WSAStartup(WORD wVersionRequested, LPWSADATA lpWSAData)
{
    InterlockedIncrement(&startup_calls);
    Sleep(20); /* widen the window for racing initialisers */
    return WSAStartup(wVersionRequested, lpWSAData);
}

/* ---- the WSAIoctl recorder --------------------------------------------- */

enum { MODE_FORWARD, MODE_OK, MODE_FAIL, MODE_PENDING };

typedef struct {
    SOCKET s;
    DWORD code;
    DWORD cb_in;
    unsigned char in[32];
    LPVOID out;
    DWORD cb_out;
    LPWSAOVERLAPPED overlapped;
    HANDLE hevent; /* overlapped->hEvent at call time */
    LPWSAOVERLAPPED_COMPLETION_ROUTINE routine;
    int bound_err; /* getsockname() error on S at call time (0: bound) */
    int v6only;    /* IPV6_V6ONLY of S at call time; -1: not an IPv6 socket */
    int forwarded;
    int rc;
    int err; /* WSAGetLastError() when rc != 0 */
} ioctl_record;

#define MAX_RECORDS 16
static ioctl_record records[MAX_RECORDS];
static int n_records;
static int n_calls; /* all calls, including those not kept */

/* Script per code; acquire_out is what a scripted success writes. */
static int mode_acquire = MODE_FORWARD, err_acquire;
static int mode_associate = MODE_FORWARD, err_associate;
static int mode_release = MODE_FORWARD, err_release;
static unsigned char acquire_out[16];

/* The crafted INET_PORT_RESERVATION_INSTANCE, byte by byte: StartPort
 * 50000 in network order (C3 50), NumberOfPorts 10 in host (little-endian)
 * order, 4 bytes of padding, Token 0x1122334455667788 little-endian. */
static const unsigned char crafted_instance[16] = {0xC3, 0x50, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00,
                                                   0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
static const uint64_t crafted_token = 0x1122334455667788ULL;

static void script(int acquire, int associate, int release)
{
    mode_acquire = acquire;
    mode_associate = associate;
    mode_release = release;
    memcpy(acquire_out, crafted_instance, sizeof(acquire_out));
}

static void reset_records(void)
{
    n_records = 0;
    n_calls = 0;
}

int WSAAPI portres_test_WSAIoctl(SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer,
                                 DWORD cbInBuffer, LPVOID lpvOutBuffer, DWORD cbOutBuffer,
                                 LPDWORD lpcbBytesReturned, LPWSAOVERLAPPED lpOverlapped,
                                 LPWSAOVERLAPPED_COMPLETION_ROUTINE lpCompletionRoutine)
{
    ioctl_record r;
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);
    int mode = MODE_FORWARD, err = 0;

    memset(&r, 0, sizeof(r));
    r.s = s;
    r.code = dwIoControlCode;
    r.cb_in = cbInBuffer;
    if (lpvInBuffer != NULL)
        memcpy(r.in, lpvInBuffer, cbInBuffer < sizeof(r.in) ? cbInBuffer : sizeof(r.in));
    r.out = lpvOutBuffer;
    r.cb_out = cbOutBuffer;
    r.overlapped = lpOverlapped;
    r.hevent = lpOverlapped != NULL ? lpOverlapped->hEvent : NULL;
    r.routine = lpCompletionRoutine;
    r.bound_err = getsockname(s, (struct sockaddr *)&ss, &len) == 0 ? 0 : WSAGetLastError();
    {
        DWORD v = 0;
        int vlen = (int)sizeof(v);
        r.v6only = getsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (char *)&v, &vlen) == 0 ? (int)v : -1;
    }

    if (dwIoControlCode == SIO_ACQUIRE_PORT_RESERVATION) {
        mode = mode_acquire;
        err = err_acquire;
    } else if (dwIoControlCode == SIO_ASSOCIATE_PORT_RESERVATION) {
        mode = mode_associate;
        err = err_associate;
    } else if (dwIoControlCode == SIO_RELEASE_PORT_RESERVATION) {
        mode = mode_release;
        err = err_release;
    }

    if (mode == MODE_FORWARD) {
        r.forwarded = 1;
        r.rc = WSAIoctl(s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                        lpcbBytesReturned, lpOverlapped, lpCompletionRoutine);
        r.err = r.rc ? WSAGetLastError() : 0;
    } else if (mode == MODE_OK) {
        if (dwIoControlCode == SIO_ACQUIRE_PORT_RESERVATION && lpvOutBuffer != NULL
            && cbOutBuffer >= 16) {
            memcpy(lpvOutBuffer, acquire_out, 16);
            if (lpcbBytesReturned != NULL)
                *lpcbBytesReturned = 16;
        } else if (lpcbBytesReturned != NULL) {
            *lpcbBytesReturned = 0;
        }
        if (lpOverlapped != NULL) { /* completed at once */
            lpOverlapped->Internal = 0;
            lpOverlapped->InternalHigh = lpcbBytesReturned != NULL ? *lpcbBytesReturned : 0;
        }
        r.rc = 0;
    } else if (mode == MODE_PENDING && lpOverlapped != NULL) {
        /* What a kernel does for an operation it queues; the test then
         * completes it by hand (complete_pending). */
        lpOverlapped->Internal = STATUS_PENDING;
        lpOverlapped->InternalHigh = 0;
        r.rc = SOCKET_ERROR;
        r.err = WSA_IO_PENDING;
    } else {
        r.rc = SOCKET_ERROR;
        r.err = err;
    }

    if (n_records < MAX_RECORDS)
        records[n_records++] = r;
    n_calls++;
    WSASetLastError(r.err);
    return r.rc;
}

/* ---- reporting --------------------------------------------------------- */

#include "check.h"

static void hex(char *buf, const unsigned char *p, size_t n)
{
    size_t i;
    buf[0] = '\0';
    for (i = 0; i < n; i++)
        sprintf(buf + 3 * i, i + 1 < n ? "%02X " : "%02X", p[i]);
}

/* Compare the first N recorded input bytes with EXPECT. */
static int bytes_are(const ioctl_record *r, const unsigned char *expect, size_t n, char *got)
{
    hex(got, r->in, r->cb_in < n ? r->cb_in : n);
    return r->cb_in == n && memcmp(r->in, expect, n) == 0;
}

/* ---- helpers on real sockets ------------------------------------------- */

static SOCKET new_socket(int family, int type)
{
    return WSASocketW(family, type, type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP, NULL, 0,
                      WSA_FLAG_OVERLAPPED);
}

/* WSAENOTSOCK once S has been closed. */
static int socket_error(SOCKET s)
{
    int type = 0, len = (int)sizeof(type);
    return getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &len) == 0 ? 0 : WSAGetLastError();
}

static struct sockaddr_in loopback_any_port(void)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    return sin;
}

static unsigned local_port(SOCKET s)
{
    struct sockaddr_in sin;
    int len = (int)sizeof(sin);
    if (getsockname(s, (struct sockaddr *)&sin, &len) != 0)
        return 0;
    return ntohs(sin.sin_port);
}

/* Handles of this process, from NtQuerySystemInformation(
 * SystemHandleInformation = 16), which Wine implements.
 * (GetProcessHandleCount reports 0 under Wine 8.) */
typedef struct {
    ULONG OwnerPid;
    BYTE ObjectType;
    BYTE HandleFlags;
    USHORT HandleValue;
    PVOID ObjectPointer;
    ULONG AccessMask;
} handle_entry;
typedef struct {
    ULONG Count;
    handle_entry Handle[1];
} handle_info;
typedef LONG(WINAPI *nt_query_fn)(ULONG, PVOID, ULONG, PULONG);

static long count_handles(void)
{
    static nt_query_fn query;
    ULONG size = 1 << 16, ret = 0, i;
    DWORD pid = GetCurrentProcessId();
    long n = 0;
    handle_info *hi;
    LONG status;

    if (query == NULL) {
        FARPROC p = GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "NtQuerySystemInformation");
        memcpy(&query, &p, sizeof(query));
        if (query == NULL)
            return -1;
    }
    for (;;) {
        hi = (handle_info *)malloc(size);
        if (hi == NULL)
            return -1;
        status = query(16, hi, size, &ret);
        if (status == (LONG)0xC0000004L && size < (1u << 26)) {
            free(hi); /* STATUS_INFO_LENGTH_MISMATCH */
            size *= 4;
            continue;
        }
        break;
    }
    if (status != 0) {
        free(hi);
        return -1;
    }
    for (i = 0; i < hi->Count; i++)
        if (hi->Handle[i].OwnerPid == pid)
            n++;
    free(hi);
    return n;
}

/* A first round of a leak check whose handle count grew: said, then run
 * once more.  Wine creates some handles lazily, once (a fresh prefix's
 * first sockets); a leak grows the count on every round. */
static void note_lazy_handles(long h0, long h1)
{
    printf("     note: handles %ld -> %ld in a first round: once more\n", h0, h1);
}

/* ---- tests ------------------------------------------------------------- */

static DWORD WINAPI init_thread(LPVOID arg)
{
    *(int *)arg = portres_backend_init();
    return 0;
}

static void test_init(void)
{
    HANDLE threads[8];
    int results[8];
    int i, all_zero = 1, started = 0;

    for (i = 0; i < 8; i++) {
        results[i] = -1;
        threads[i] = CreateThread(NULL, 0, init_thread, &results[i], 0, NULL);
        if (threads[i] != NULL)
            started++;
    }
    for (i = 0; i < 8; i++) {
        if (threads[i] != NULL) {
            WaitForSingleObject(threads[i], INFINITE);
            CloseHandle(threads[i]);
        }
        if (results[i] != 0)
            all_zero = 0;
    }
    check(started == 8 && all_zero, "backend_init from 8 threads at once returns 0 in each", NULL);
    check(portres_backend_init() == 0 && startup_calls == 1, "WSAStartup(2.2) called exactly once",
          "%ld calls", (long)startup_calls);
}

static void test_acquire_bytes(void)
{
    static const unsigned char in_50000_10[4] = {0xC3, 0x50, 0x0A, 0x00};
    static const unsigned char in_0_10[4] = {0x00, 0x00, 0x0A, 0x00};
    static const unsigned char in_1_300[4] = {0x00, 0x01, 0x2C, 0x01};
    portres_block *b = NULL;
    portres_block_info info;
    unsigned conflict = 99;
    char got[128];
    ioctl_record *r = &records[0];
    DWORD flags = 0;
    int err, ok, family = 0, type = 0;
    unsigned bound = 1;

    script(MODE_OK, MODE_OK, MODE_OK);
    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    check(err == 0 && b != NULL && n_calls == 1,
          "acquire tcp 50000/10 (scripted success) makes one WSAIoctl call", "err %d, calls %d",
          err, n_calls);
    if (err || b == NULL)
        return;
    check(r->code == 0x98000064UL, "acquire: code 0x98000064", "0x%08lX", (unsigned long)r->code);
    check(r->cb_in == 4, "acquire: cbInBuffer 4", "%lu", (unsigned long)r->cb_in);
    check(bytes_are(r, in_50000_10, 4, got),
          "acquire: input bytes C3 50 0A 00 (start network order, count "
          "host order)",
          "got %s", got);
    check(r->out != NULL && r->cb_out == 16, "acquire: output buffer, cbOutBuffer 16", "%lu",
          (unsigned long)r->cb_out);
    check(r->overlapped == NULL && r->routine == NULL,
          "acquire: synchronous (lpOverlapped, lpCompletionRoutine NULL)", NULL);
    portres_block_get_info(b, &info);
    check(info.start == 50000,
          "acquire: crafted StartPort C3 50 reads back as 50000 (no double "
          "swap)",
          "%u", info.start);
    check(info.count == 10, "acquire: count 10", "%u", info.count);
    check(info.token == crafted_token, "acquire: token 0x1122334455667788", "0x%08lX%08lX",
          (unsigned long)(info.token >> 32), (unsigned long)(info.token & 0xFFFFFFFFu));
    check(info.protocol == PORTRES_TCP && conflict == 0, "acquire: protocol tcp, conflict_port 0",
          NULL);
    err = portres_socket_info(r->s, &family, &type, &bound);
    check(err == 0 && family == AF_INET && type == SOCK_STREAM && bound == 0,
          "acquire: acquiring socket is an unbound AF_INET SOCK_STREAM",
          "err %d family %d type %d port %u", err, family, type, bound);
    ok = GetHandleInformation((HANDLE)r->s, &flags) && !(flags & HANDLE_FLAG_INHERIT);
    check(ok, "acquire: acquiring socket is not inheritable", "flags 0x%lx", (unsigned long)flags);
    portres_block_free(b);

    reset_records();
    err = portres_block_acquire(PORTRES_UDP, 0, 10, &b, &conflict);
    check(err == 0 && n_calls == 1 && bytes_are(r, in_0_10, 4, got),
          "acquire wildcard start 0: input bytes 00 00 0A 00", "err %d, got %s", err, got);
    if (err == 0) {
        err = portres_socket_info(r->s, &family, &type, &bound);
        check(err == 0 && type == SOCK_DGRAM, "acquire udp: acquiring socket is SOCK_DGRAM",
              "type %d", type);
        portres_block_free(b);
    }

    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 1, 300, &b, &conflict);
    check(err == 0 && bytes_are(r, in_1_300, 4, got),
          "acquire start 1 count 300: input bytes 00 01 2C 01", "got %s", got);
    if (err == 0)
        portres_block_free(b);
    check(heap_live == 0, "acquire/free: no backend heap block left", "%ld live", (long)heap_live);
}

static void test_associate_release_bytes(void)
{
    static const unsigned char token_bytes[8] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    static const unsigned char raw_bytes[8] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    portres_block *b = NULL;
    SOCKET acq, s;
    struct sockaddr_in sin = loopback_any_port();
    unsigned port = 0, conflict;
    char got[128];
    int err;

    script(MODE_OK, MODE_OK, MODE_OK);
    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    if (err || b == NULL) {
        check(0, "associate/release: scripted acquire", "err %d", err);
        return;
    }
    acq = records[0].s;

    s = new_socket(AF_INET, SOCK_STREAM);
    reset_records();
    err = portres_block_bind(b, s, (struct sockaddr *)&sin, sizeof(sin), &port);
    check(err == 0 && n_calls == 1, "block_bind (scripted associate): one WSAIoctl call, then bind",
          "err %d calls %d", err, n_calls);
    check(records[0].code == 0x98000066UL && records[0].s == s,
          "block_bind: ASSOCIATE code 0x98000066 on the caller's socket", "0x%08lX",
          (unsigned long)records[0].code);
    check(bytes_are(&records[0], token_bytes, 8, got),
          "block_bind: cbInBuffer 8, token bytes 88 77 66 55 44 33 22 11", "got %s", got);
    check(records[0].out == NULL && records[0].cb_out == 0 && records[0].overlapped == NULL,
          "block_bind: lpvOutBuffer NULL, cbOutBuffer 0, synchronous", NULL);
    check(records[0].bound_err == WSAEINVAL, "block_bind: socket still unbound when associated",
          "%d", records[0].bound_err);
    check(port != 0 && port == local_port(s),
          "block_bind: reports the port bind() gave (getsockname)", "%u vs %u", port,
          local_port(s));
    closesocket(s);

    /* family must match the address: refused before any call */
    reset_records();
    {
        SOCKET out = 12345;
        err = portres_block_socket(b, AF_INET6, (struct sockaddr *)&sin, sizeof(sin), &out, &port);
        check(err == WSAEAFNOSUPPORT && n_calls == 0 && out == INVALID_SOCKET,
              "block_socket: family/address mismatch -> WSAEAFNOSUPPORT", "err %d", err);
    }

    /* res.socket(AF_INET6) is dual-stack (docs/platforms.md row 26): the
     * binding clears IPV6_V6ONLY, whose Windows default is 1, before the
     * associate and the bind; the option is read back from the real
     * socket. */
    {
        struct sockaddr_in6 sin6;
        SOCKET out = INVALID_SOCKET;
        DWORD v6only = 1;
        int optlen = (int)sizeof(v6only);
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = in6addr_any;
        reset_records();
        err =
            portres_block_socket(b, AF_INET6, (struct sockaddr *)&sin6, sizeof(sin6), &out, &port);
        check(err == 0 && out != INVALID_SOCKET && n_calls == 1 && records[0].s == out
                  && records[0].code == 0x98000066UL && records[0].bound_err == WSAEINVAL
                  && records[0].v6only == 0,
              "block_socket(AF_INET6): ASSOCIATE on the new socket while it is unbound and "
              "already dual-stack, then bind",
              "err %d calls %d", err, n_calls);
        check(out != INVALID_SOCKET
                  && getsockopt(out, IPPROTO_IPV6, IPV6_V6ONLY, (char *)&v6only, &optlen) == 0
                  && v6only == 0,
              "block_socket(AF_INET6): the socket is dual-stack (IPV6_V6ONLY reads 0)",
              "v6only %lu, error %d", (unsigned long)v6only, WSAGetLastError());
        if (out != INVALID_SOCKET)
            closesocket(out);
    }

    reset_records();
    err = portres_block_close(b);
    check(err == 0 && n_calls == 1 && records[0].code == 0x98000065UL && records[0].s == acq,
          "block_close: RELEASE code 0x98000065 on the acquiring socket",
          "err %d calls %d code 0x%08lX", err, n_calls, (unsigned long)records[0].code);
    check(bytes_are(&records[0], token_bytes, 8, got) && records[0].out == NULL
              && records[0].cb_out == 0,
          "block_close: 8-byte token 88 .. 11, no output buffer", "got %s", got);
    check(socket_error(acq) == WSAENOTSOCK,
          "block_close: acquiring socket closed after the release", "%d", socket_error(acq));
    check(portres_block_closed(b), "block_closed() is true after close", NULL);
    reset_records();
    err = portres_block_close(b);
    check(err == 0 && n_calls == 0, "block_close again: no call, returns 0", "err %d calls %d", err,
          n_calls);
    s = new_socket(AF_INET, SOCK_STREAM);
    portres_error_clear();
    err = portres_block_bind(b, s, (struct sockaddr *)&sin, sizeof(sin), &port);
    check(err == WSAEBADF && n_calls == 0 && portres_error_call() == portres_refused,
          "block_bind on a closed block: WSAEBADF, no call, recorded as portres's refusal",
          "err %d", err);
    closesocket(s);
    {
        SOCKET out = 12345;
        portres_error_clear();
        err = portres_block_socket(b, AF_INET, (struct sockaddr *)&sin, sizeof(sin), &out, &port);
        check(err == WSAEBADF && out == INVALID_SOCKET && n_calls == 0
                  && portres_error_call() == portres_refused,
              "block_socket on a closed block: WSAEBADF, no socket, portres's refusal", "err %d",
              err);
    }
    portres_block_free(b);
    check(heap_live == 0, "block_free: no backend heap block left", "%ld live", (long)heap_live);

    /* the raw calls */
    s = new_socket(AF_INET, SOCK_DGRAM);
    reset_records();
    err = portres_associate(s, 0x0102030405060708ULL);
    check(err == 0 && records[0].code == 0x98000066UL && bytes_are(&records[0], raw_bytes, 8, got)
              && records[0].out == NULL && records[0].cb_out == 0,
          "associate(0x0102030405060708): code 0x98000066, bytes 08 07 .. 01", "got %s", got);
    reset_records();
    err = portres_release(s, 0x0102030405060708ULL);
    check(err == 0 && records[0].code == 0x98000065UL && bytes_are(&records[0], raw_bytes, 8, got)
              && records[0].out == NULL && records[0].cb_out == 0,
          "release(0x0102030405060708): code 0x98000065, bytes 08 07 .. 01", "got %s", got);
    closesocket(s);
}

static void test_acquire_failures(void)
{
    portres_block *b = (portres_block *)1;
    unsigned conflict = 99;
    long handles0 = count_handles();
    int err;

    script(MODE_FAIL, MODE_OK, MODE_OK);
    err_acquire = WSAEADDRINUSE;
    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    check(err == WSAEADDRINUSE && b == NULL && conflict == 0,
          "acquire failing with WSAEADDRINUSE returns it, *out NULL", "err %d", err);
    check(socket_error(records[0].s) == WSAENOTSOCK && heap_live == 0,
          "acquire failure: acquiring socket closed, block freed", NULL);

    memset(acquire_out + 8, 0, 8); /* success, but token 0 */
    mode_acquire = MODE_OK;
    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    check(err == ERROR_INVALID_DATA && b == NULL && socket_error(records[0].s) == WSAENOTSOCK
              && heap_live == 0,
          "acquire 'success' with token 0: ERROR_INVALID_DATA, nothing kept", "err %d", err);

    script(MODE_OK, MODE_OK, MODE_OK);
    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 0, &b, &conflict);
    check(err == WSAEINVAL && n_calls == 0,
          "acquire count 0: WSAEINVAL, "
          "no call",
          "err %d", err);
    err = portres_block_acquire(PORTRES_TCP, 65535, 2, &b, &conflict);
    check(err == WSAEINVAL && n_calls == 0, "acquire past port 65535: WSAEINVAL, no call", "err %d",
          err);
    err = portres_block_acquire(7, 50000, 10, &b, &conflict);
    check(err == WSAEINVAL && n_calls == 0, "acquire unknown protocol: WSAEINVAL, no call",
          "err %d", err);
    check(handles0 >= 0 && count_handles() == handles0, "acquire failures: handle count unchanged",
          "%ld -> %ld", handles0, count_handles());
}

static void test_wine_real(void)
{
    int pass;
    portres_block *b = (portres_block *)1;
    unsigned conflict, port = 0;
    struct sockaddr_in sin = loopback_any_port();
    long h0, h1, heap0;
    SOCKET s, out;
    int i, err, family, type;
    unsigned bound;

    script(MODE_FORWARD, MODE_FORWARD, MODE_FORWARD);

    reset_records();
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    check(err == WSAEOPNOTSUPP && b == NULL && records[0].forwarded
              && records[0].err == WSAEOPNOTSUPP,
          "wine: acquire tcp -> WSAEOPNOTSUPP (10045), *out NULL", "err %d", err);
    check(socket_error(records[0].s) == WSAENOTSOCK, "wine: acquire failure closed its socket",
          NULL);
    err = portres_block_acquire(PORTRES_UDP, 0, 10, &b, &conflict);
    check(err == WSAEOPNOTSUPP && b == NULL, "wine: acquire udp wildcard -> WSAEOPNOTSUPP",
          "err %d", err);

    /* warm-up done above; now 100 failing acquisitions */
    for (pass = 0; pass < 2; pass++) {
        h0 = count_handles();
        heap0 = heap_live;
        for (i = 0; i < 100; i++) {
            err = portres_block_acquire(i & 1 ? PORTRES_UDP : PORTRES_TCP, (unsigned)(40000 + i),
                                        10, &b, &conflict);
            if (err != WSAEOPNOTSUPP || b != NULL)
                break;
        }
        h1 = count_handles();
        if (h1 == h0 || i != 100)
            break;
        note_lazy_handles(h0, h1);
    }
    check(i == 100 && h0 > 0 && h1 == h0 && heap_live == heap0,
          "wine: 100 failed acquisitions leak no handle, no heap block",
          "iter %d, handles %ld -> %ld, heap %ld -> %ld", i, h0, h1, heap0, (long)heap_live);

    s = new_socket(AF_INET, SOCK_STREAM);
    err = portres_associate(s, crafted_token);
    check(err == WSAEOPNOTSUPP, "wine: associate on a TCP socket -> 10045", "err %d", err);
    err = portres_release(s, crafted_token);
    check(err == WSAEOPNOTSUPP, "wine: release on a TCP socket -> 10045", "err %d", err);
    closesocket(s);
    s = new_socket(AF_INET, SOCK_DGRAM);
    err = portres_associate(s, crafted_token);
    check(err == WSAEOPNOTSUPP, "wine: associate on a UDP socket -> 10045", "err %d", err);
    closesocket(s);

    /* [ASC] lists WSAENOTSOCK for a non-socket; Wine 8 checks the code
     * first and answers WSAEOPNOTSUPP.  Check the error is passed through
     * untouched, whichever it is. */
    reset_records();
    err = portres_associate(INVALID_SOCKET, crafted_token);
    check(err != 0 && err == records[0].err,
          "wine: associate(INVALID_SOCKET) fails with WSAIoctl's own error", "err %d", err);
    printf("     note: associate(INVALID_SOCKET) gave %d ([ASC] documents "
           "WSAENOTSOCK 10038; Wine 8 gives 10045)\n",
           err);
    err = portres_release(INVALID_SOCKET, crafted_token);
    check(err != 0 && err == records[1].err,
          "wine: release(INVALID_SOCKET) fails with WSAIoctl's own error", "err %d", err);
    err = portres_socket_info(INVALID_SOCKET, &family, &type, &bound);
    check(err == WSAENOTSOCK,
          "wine: socket_info(INVALID_SOCKET) -> "
          "WSAENOTSOCK (10038)",
          "err %d", err);

    /* socket_info on real sockets */
    s = new_socket(AF_INET, SOCK_STREAM);
    err = portres_socket_info(s, &family, &type, &bound);
    check(err == 0 && family == AF_INET && type == SOCK_STREAM && bound == 0,
          "wine: socket_info unbound TCP -> AF_INET, SOCK_STREAM, port 0",
          "err %d family %d type %d port %u", err, family, type, bound);
    err = portres_bind(s, (struct sockaddr *)&sin, sizeof(sin), &port);
    check(err == 0 && port != 0 && port == local_port(s),
          "wine: portres_bind 127.0.0.1:0 reports the bound port", "err %d port %u", err, port);
    err = portres_socket_info(s, &family, &type, &bound);
    check(err == 0 && bound == port, "wine: socket_info bound TCP -> its port", "err %d port %u",
          err, bound);
    err = portres_bind(s, (struct sockaddr *)&sin, sizeof(sin), &port);
    check(err == WSAEINVAL, "wine: portres_bind twice -> WSAEINVAL", "err %d", err);
    closesocket(s);

    s = new_socket(AF_INET, SOCK_DGRAM);
    err = portres_socket_info(s, &family, &type, &bound);
    check(err == 0 && family == AF_INET && type == SOCK_DGRAM && bound == 0,
          "wine: socket_info unbound UDP -> AF_INET, SOCK_DGRAM, port 0",
          "err %d family %d type %d port %u", err, family, type, bound);
    err = portres_bind(s, (struct sockaddr *)&sin, sizeof(sin), &port);
    err = err ? err : portres_socket_info(s, &family, &type, &bound);
    check(err == 0 && bound == port && port != 0, "wine: socket_info bound UDP -> its port",
          "err %d port %u", err, bound);
    closesocket(s);

    s = new_socket(AF_INET6, SOCK_STREAM);
    if (s != INVALID_SOCKET) {
        err = portres_socket_info(s, &family, &type, &bound);
        check(err == 0 && family == AF_INET6 && type == SOCK_STREAM && bound == 0,
              "wine: socket_info unbound TCP6 -> AF_INET6", "err %d family %d", err, family);
        closesocket(s);
    }

    /* block_socket error path: a scripted block, the real associate */
    script(MODE_OK, MODE_FORWARD, MODE_OK);
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, &conflict);
    if (err || b == NULL) {
        check(0, "wine: scripted acquire for block_socket", "err %d", err);
        return;
    }
    reset_records();
    out = 12345;
    err = portres_block_socket(b, AF_INET, (struct sockaddr *)&sin, sizeof(sin), &out, &port);
    check(err == WSAEOPNOTSUPP && out == INVALID_SOCKET && n_calls == 1 && records[0].forwarded,
          "wine: block_socket -> 10045 from the real associate, no socket", "err %d", err);
    check(socket_error(records[0].s) == WSAENOTSOCK,
          "wine: block_socket closed the socket it created", NULL);
    for (pass = 0; pass < 2; pass++) {
        h0 = count_handles();
        for (i = 0; i < 100; i++) {
            err =
                portres_block_socket(b, AF_INET, (struct sockaddr *)&sin, sizeof(sin), &out, &port);
            if (err != WSAEOPNOTSUPP || out != INVALID_SOCKET)
                break;
        }
        h1 = count_handles();
        if (h1 == h0 || i != 100)
            break;
        note_lazy_handles(h0, h1);
    }
    check(i == 100 && h1 == h0, "wine: 100 failed block_socket calls leak no handle",
          "iter %d, handles %ld -> %ld", i, h0, h1);

    mode_release = MODE_FORWARD;
    reset_records();
    err = portres_block_close(b);
    check(err == WSAEOPNOTSUPP && socket_error(records[0].s) == WSAENOTSOCK,
          "wine: block_close returns the release error, still closes", "err %d", err);
    portres_block_free(b);
    h1 = count_handles();
    check(heap_live == 0 && h1 == h0 - 1, "wine: block_free: acquiring socket and block gone",
          "heap %ld, handles %ld -> %ld", (long)heap_live, h0, h1);
}

/* ---- overlapped ---------------------------------------------------------- */

/* Finish, as a kernel would, an operation the recorder left pending. */
static void complete_pending(const ioctl_record *r, DWORD status, const void *out, DWORD n)
{
    if (out != NULL && r->out != NULL && r->cb_out >= n)
        memcpy(r->out, out, n);
    r->overlapped->InternalHigh = n;
    MemoryBarrier();
    r->overlapped->Internal = status;
    SetEvent((HANDLE)((ULONG_PTR)r->hevent & ~(ULONG_PTR)1));
}

/* The hEvent handed to WSAIoctl: OV's event with the low-order bit set. */
static int tagged_event_ok(const ioctl_record *r, const portres_overlapped *ov)
{
    ULONG_PTR h = (ULONG_PTR)r->hevent;
    return r->overlapped != NULL && (h & 1)
           && (intptr_t)(h & ~(ULONG_PTR)1) == portres_ov_event(ov);
}

static void test_overlapped(void)
{
    static const unsigned char in_50000_10[4] = {0xC3, 0x50, 0x0A, 0x00};
    static const unsigned char token_bytes[8] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    portres_overlapped *ov = NULL;
    portres_block *b;
    portres_block_info info;
    ioctl_record acq;
    char got[128];
    long heap0 = heap_live;
    SOCKET s;
    DWORD t0, elapsed;
    int err, w1, w2;

    /* ACQUIRE, pending, then completed by "the kernel" */
    script(MODE_PENDING, MODE_OK, MODE_OK);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, &ov);
    check(err == 0 && ov != NULL && n_calls == 1,
          "ov acquire (scripted pending): started, one WSAIoctl call", "err %d", err);
    if (err || ov == NULL)
        return;
    acq = records[0];
    check(acq.code == 0x98000064UL && bytes_are(&acq, in_50000_10, 4, got) && acq.out != NULL
              && acq.cb_out == 16,
          "ov acquire: code 0x98000064, bytes C3 50 0A 00, cbOutBuffer 16", "got %s", got);
    check(tagged_event_ok(&acq, ov) && acq.routine == NULL,
          "ov acquire: hEvent = ov event | 1 (no IOCP packet), no routine", "hEvent %p event %p",
          (void *)acq.hevent, (void *)portres_ov_event(ov));
    w1 = portres_ov_wait_event(ov, 0);
    check(w1 == PORTRES_WAIT_TIMEOUT && !portres_ov_reap(ov) && portres_ov_take_block(ov) == NULL,
          "ov acquire pending: wait(0) times out, reap 0, no block", "wait %d", w1);
    complete_pending(&acq, 0, crafted_instance, 16);
    w1 = portres_ov_wait_event(ov, 1000);
    w2 = portres_ov_wait_event(ov, 0);
    check(w1 == PORTRES_WAIT_SIGNALLED && w2 == PORTRES_WAIT_SIGNALLED,
          "ov event: signalled, and stays so (manual-reset)", "%d %d", w1, w2);
    check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0, "ov acquire: reaped, no error",
          "error %d", portres_ov_error(ov));
    b = portres_ov_take_block(ov);
    check(b != NULL && portres_ov_take_block(ov) == NULL,
          "ov acquire: take_block gives the block once", NULL);
    if (b != NULL) {
        portres_block_get_info(b, &info);
        check(info.start == 50000 && info.count == 10 && info.token == crafted_token,
              "ov acquire: block 50000/10, token 0x1122334455667788", "start %u count %u",
              info.start, info.count);
        reset_records();
        err = portres_block_close(b);
        check(err == 0 && records[0].code == 0x98000065UL && records[0].s == acq.s
                  && bytes_are(&records[0], token_bytes, 8, got)
                  && socket_error(acq.s) == WSAENOTSOCK,
              "ov acquire: its block releases and closes the acquiring "
              "socket",
              "err %d", err);
        portres_block_free(b);
    }
    check(portres_ov_free(ov, 0) == 0 && heap_live == heap0,
          "ov free after completion: 0, nothing left", "heap %ld -> %ld", heap0, (long)heap_live);

    /* ACQUIRE completing with an error status */
    script(MODE_PENDING, MODE_OK, MODE_OK);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_UDP, 0, 10, &ov);
    if (err == 0) {
        acq = records[0];
        complete_pending(&acq, 0xC00000BBUL, NULL, 0); /* NOT_SUPPORTED */
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSAEOPNOTSUPP
                  && portres_ov_take_block(ov) == NULL && socket_error(acq.s) == WSAENOTSOCK,
              "ov acquire failing (STATUS_NOT_SUPPORTED): 10045, no block, "
              "socket closed",
              "error %d", portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0 && heap_live == heap0,
              "ov free after failure: nothing left", NULL);
    }

    /* ASSOCIATE pending, cancelled, then aborted by "the kernel" */
    s = new_socket(AF_INET, SOCK_STREAM);
    script(MODE_OK, MODE_PENDING, MODE_PENDING);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ASSOCIATE, s, crafted_token, 0, 0, 0, &ov);
    check(err == 0 && records[0].code == 0x98000066UL && records[0].s == s
              && bytes_are(&records[0], token_bytes, 8, got) && records[0].out == NULL
              && records[0].cb_out == 0 && tagged_event_ok(&records[0], ov),
          "ov associate: code 0x98000066, 8 token bytes, no output, tagged "
          "event",
          "err %d got %s", err, got);
    if (err == 0) {
        err = portres_ov_cancel(ov);
        check(err == 0, "ov cancel while pending: 0", "err %d", err);
        complete_pending(&records[0], 0xC0000120UL, NULL, 0); /* CANCELLED */
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSA_OPERATION_ABORTED,
              "ov associate cancelled: error WSA_OPERATION_ABORTED (995)", "error %d",
              portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0 && heap_live == heap0 && socket_error(s) == 0,
              "ov free: 0; the caller's socket stays open", NULL);
    }

    /* RELEASE that never completes: freeing leaks it, after the grace */
    reset_records();
    err = portres_ov_start(PORTRES_OP_RELEASE, s, crafted_token, 0, 0, 0, &ov);
    check(err == 0 && records[0].code == 0x98000065UL
              && bytes_are(&records[0], token_bytes, 8, got),
          "ov release: code 0x98000065, 8 token bytes", "err %d", err);
    if (err == 0) {
        t0 = GetTickCount();
        err = portres_ov_free(ov, 100);
        elapsed = GetTickCount() - t0;
        check(err == 1 && elapsed >= 90 && heap_live == heap0 + 1,
              "ov free of a never-completing op: waits the grace, then leaks "
              "(returns 1)",
              "ret %d after %lu ms", err, (unsigned long)elapsed);
        heap0 = heap_live; /* the deliberate leak */
    }
    closesocket(s);

    /* The caller's socket closed while an ASSOCIATE is pending: closing a
     * socket cancels its outstanding I/O, which completes the OVERLAPPED
     * (here "the kernel" does so with STATUS_CANCELLED).  Reaping must not
     * need the (now invalid) socket, and nothing is leaked. */
    s = new_socket(AF_INET, SOCK_STREAM);
    script(MODE_OK, MODE_PENDING, MODE_PENDING);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ASSOCIATE, s, crafted_token, 0, 0, 0, &ov);
    check(err == 0, "ov associate pending, then its socket is closed", "err %d", err);
    if (err == 0) {
        closesocket(s);
        check(portres_ov_reap(ov) == 0,
              "socket closed, I/O not completed yet: still pending (not freed)", NULL);
        complete_pending(&records[0], 0xC0000120UL, NULL, 0); /* CANCELLED */
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) != 0,
              "socket closed while pending: reaped from the OVERLAPPED, with an error", "error %d",
              portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0 && heap_live == heap0,
              "socket closed while pending: freed, no heap block left", NULL);
    }

    /* ... and if the kernel never completes it: CancelIoEx cannot reach a
     * closed socket, so freeing leaks the OVERLAPPED rather than free what
     * the kernel may still write. */
    s = new_socket(AF_INET, SOCK_STREAM);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ASSOCIATE, s, crafted_token, 0, 0, 0, &ov);
    if (err == 0) {
        closesocket(s);
        err = portres_ov_free(ov, 50);
        check(err == 1 && heap_live == heap0 + 1,
              "socket closed, I/O never completed: free leaks it (returns 1)", "ret %d", err);
        heap0 = heap_live; /* the deliberate leak */
    }

    /* completed at once (WSAIoctl returns 0) */
    script(MODE_OK, MODE_OK, MODE_OK);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, &ov);
    check(err == 0 && portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0
              && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_SIGNALLED,
          "ov acquire completing at once: done, event set", "err %d", err);
    if (err == 0) {
        b = portres_ov_take_block(ov);
        if (b != NULL)
            portres_block_get_info(b, &info);
        check(b != NULL && info.start == 50000 && info.token == crafted_token,
              "ov acquire completing at once: the block", NULL);
        portres_block_free(b);
        portres_ov_free(ov, 0);
    }
    /* ... and not taken: freeing the object frees the block too */
    reset_records();
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, &ov);
    if (err == 0) {
        acq = records[0];
        reset_records();
        check(portres_ov_free(ov, 0) == 0 && n_calls == 1 && records[0].code == 0x98000065UL
                  && socket_error(acq.s) == WSAENOTSOCK && heap_live == heap0,
              "ov free with the block not taken: released, closed, freed", NULL);
    }

    /* failing at once (not WSA_IO_PENDING) */
    script(MODE_FAIL, MODE_OK, MODE_OK);
    err_acquire = WSAEADDRINUSE;
    reset_records();
    ov = (portres_overlapped *)1;
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, &ov);
    check(err == WSAEADDRINUSE && ov == NULL && socket_error(records[0].s) == WSAENOTSOCK
              && heap_live == heap0,
          "ov acquire failing at once: the error, *out NULL, nothing left", "err %d", err);

    reset_records();
    err = portres_ov_start(9, INVALID_SOCKET, 0, 0, 0, 0, &ov);
    check(err == WSAEINVAL && ov == NULL && n_calls == 0, "ov_start unknown op: WSAEINVAL, no call",
          "err %d", err);
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 65000, 1000, &ov);
    check(err == WSAEINVAL && n_calls == 0, "ov_start acquire past 65535: WSAEINVAL, no call",
          "err %d", err);
    ov = (portres_overlapped *)1;
    err = portres_ov_start_pending(-1, &ov);
    check(err == 0 && ov != NULL && portres_ov_reap(ov) == 0 && n_calls == 0
              && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_TIMEOUT,
          "ov_start_pending: pending, no IOCTL, event not signalled", "err %d", err);
    if (err == 0) {
        check(portres_ov_cancel(ov) == 0 && portres_ov_reap(ov) == 1
                  && portres_ov_error(ov) == ERROR_OPERATION_ABORTED
                  && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_SIGNALLED,
              "ov_start_pending: cancel completes it with ERROR_OPERATION_ABORTED", "error %d",
              portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0, "ov_start_pending: freed", NULL);
    }
    err = portres_ov_start_pending(0, &ov);
    if (err == 0) {
        portres_ov_cancel(ov);
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0,
              "ov_start_pending(0): a cancel the operation outruns: success", "error %d",
              portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0, "ov_start_pending(0): freed", NULL);
    }
    err = portres_ov_start_pending(-1, &ov);
    if (err == 0)
        check(portres_ov_free(ov, 0) == 0 && heap_live == heap0,
              "ov_start_pending: freed while pending (cancelled first), nothing left", NULL);
    check(portres_ov_free(NULL, 0) == 0, "ov_free(NULL): 0", NULL);
}

static void test_overlapped_wine(void)
{
    int pass;
    portres_overlapped *ov = NULL;
    long h0, h1, heap0;
    SOCKET s, acq_sock;
    int err, i, w;

    script(MODE_FORWARD, MODE_FORWARD, MODE_FORWARD);
    reset_records();
    err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, &ov);
    check(err == 0 && ov != NULL && records[0].forwarded && records[0].err == WSA_IO_PENDING,
          "wine: ov acquire -> WSAIoctl says WSA_IO_PENDING (997)", "err %d, WSAIoctl error %d",
          err, records[0].err);
    if (err || ov == NULL)
        return;
    acq_sock = records[0].s;
    w = portres_ov_wait_event(ov, 0);
    check(w == PORTRES_WAIT_SIGNALLED,
          "wine: ov event set although Wine does not signal it (reaped at "
          "start)",
          "wait %d", w);
    check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSAEOPNOTSUPP
              && portres_ov_take_block(ov) == NULL,
          "wine: ov acquire result: WSAEOPNOTSUPP, no block", "error %d", portres_ov_error(ov));
    check(portres_ov_cancel(ov) == 0, "wine: ov cancel after completion: 0", NULL);
    check(portres_ov_free(ov, 0) == 0 && socket_error(acq_sock) == WSAENOTSOCK,
          "wine: ov free: 0, acquiring socket closed", NULL);

    for (pass = 0; pass < 2; pass++) {
        h0 = count_handles();
        heap0 = heap_live;
        for (i = 0; i < 100; i++) {
            err = portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0,
                                   i & 1 ? PORTRES_UDP : PORTRES_TCP, 0, 10, &ov);
            if (err != 0 || !portres_ov_reap(ov) || portres_ov_error(ov) != WSAEOPNOTSUPP
                || portres_ov_free(ov, 0) != 0)
                break;
        }
        h1 = count_handles();
        if (h1 == h0 || i != 100)
            break;
        note_lazy_handles(h0, h1);
    }
    check(i == 100 && h1 == h0 && heap_live == heap0,
          "wine: 100 overlapped acquisitions leak no handle (socket, event), "
          "no heap block",
          "iter %d, handles %ld -> %ld, heap %ld -> %ld", i, h0, h1, heap0, (long)heap_live);

    s = new_socket(AF_INET, SOCK_STREAM);
    err = portres_ov_start(PORTRES_OP_ASSOCIATE, s, crafted_token, 0, 0, 0, &ov);
    if (err == 0) {
        check(portres_ov_wait_event(ov, 2000) == PORTRES_WAIT_SIGNALLED,
              "wine: ov associate: the event is set (Wine completes without it)", NULL);
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSAEOPNOTSUPP,
              "wine: ov associate on a TCP socket -> 10045", "error %d", portres_ov_error(ov));
        portres_ov_free(ov, 0);
    } else {
        check(0, "wine: ov associate started", "err %d", err);
    }
    err = portres_ov_start(PORTRES_OP_RELEASE, s, crafted_token, 0, 0, 0, &ov);
    check(err == 0 && portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSAEOPNOTSUPP,
          "wine: ov release on a TCP socket -> 10045", "err %d", err);
    if (err == 0)
        portres_ov_free(ov, 0);
    closesocket(s);

    /* Windows fails this at once (WSAENOTSOCK).  Wine 8 answers
     * WSA_IO_PENDING and never writes the OVERLAPPED: it stays pending by
     * its own status word, so nothing of it may be freed. */
    reset_records();
    heap0 = heap_live;
    err = portres_ov_start(PORTRES_OP_ASSOCIATE, INVALID_SOCKET, crafted_token, 0, 0, 0, &ov);
    if (err == 0) {
        w = portres_ov_reap(ov);
        check(w == 0 && records[0].err == WSA_IO_PENDING && portres_ov_free(ov, 50) == 1
                  && heap_live == heap0 + 1,
              "wine: ov associate(INVALID_SOCKET): WSA_IO_PENDING, never completed: pending by "
              "its OVERLAPPED, kept (leaked), not freed",
              "reap %d, WSAIoctl error %d", w, records[0].err);
    } else {
        check(err == WSAENOTSOCK, "ov associate(INVALID_SOCKET): WSAENOTSOCK at once", "%d", err);
    }
}

/* ---- persistent reservations (iphlpapi fakes) ---------------------------- */

enum { PF_CREATE_TCP, PF_CREATE_UDP, PF_LOOKUP_TCP, PF_LOOKUP_UDP, PF_DELETE_TCP, PF_DELETE_UDP };
static const char *const pf_names[] = {
    "CreatePersistentTcpPortReservation", "CreatePersistentUdpPortReservation",
    "LookupPersistentTcpPortReservation", "LookupPersistentUdpPortReservation",
    "DeletePersistentTcpPortReservation", "DeletePersistentUdpPortReservation"};

typedef struct {
    int fn;                 /* PF_* */
    unsigned char start[2]; /* StartPort as laid out in memory */
    unsigned char count[2]; /* NumberOfPorts as laid out in memory */
    PULONG64 token;         /* the Token argument (NULL for Delete) */
} pcall_record;

#define MAX_PCALLS 64
static pcall_record pcalls[MAX_PCALLS];
static int n_pcalls;
static ULONG pscript_err; /* non-zero: every call returns it */
static int pscript_store; /* Lookups answer from store_has() */
static const ULONG64 ptoken = 0x1122334455667788ULL;

static void reset_pcalls(void)
{
    n_pcalls = 0;
    pscript_err = 0;
    pscript_store = 0;
}

/* The blocks "the system" holds for the listing tests. */
static int store_has(int udp, unsigned start, unsigned count)
{
    if (udp)
        return start == 52311 && count == 1;
    return (start == 50000 && count == 10) || (start == 80 && count == 20)
           || (start >= 20000 && start < 20400 && start % 10 == 0 && count == 5);
}

static ULONG pfake(int fn, USHORT start, USHORT count, PULONG64 token)
{
    pcall_record r;
    unsigned s, c;

    memset(&r, 0, sizeof(r));
    r.fn = fn;
    memcpy(r.start, &start, 2);
    memcpy(r.count, &count, 2);
    r.token = token;
    if (n_pcalls < MAX_PCALLS)
        pcalls[n_pcalls] = r;
    n_pcalls++;
    /* The functions return their result; a stale "last error" must not
     * leak into what the backend reports. */
    SetLastError(ERROR_GEN_FAILURE);
    if (pscript_err)
        return pscript_err;
    if (pscript_store && (fn == PF_LOOKUP_TCP || fn == PF_LOOKUP_UDP)) {
        s = (unsigned)r.start[0] << 8 | r.start[1]; /* network order */
        c = r.count[0] | (unsigned)r.count[1] << 8; /* little-endian */
        if (!store_has(fn == PF_LOOKUP_UDP, s, c))
            return ERROR_NOT_FOUND;
        *token = 0x1000 + s;
        return NO_ERROR;
    }
    if (token != NULL)
        *token = ptoken;
    return NO_ERROR;
}

ULONG WINAPI portres_test_CreatePersistentTcpPortReservation(USHORT s, USHORT n, PULONG64 t)
{
    return pfake(PF_CREATE_TCP, s, n, t);
}

ULONG WINAPI portres_test_CreatePersistentUdpPortReservation(USHORT s, USHORT n, PULONG64 t)
{
    return pfake(PF_CREATE_UDP, s, n, t);
}

ULONG WINAPI portres_test_LookupPersistentTcpPortReservation(USHORT s, USHORT n, PULONG64 t)
{
    return pfake(PF_LOOKUP_TCP, s, n, t);
}

ULONG WINAPI portres_test_LookupPersistentUdpPortReservation(USHORT s, USHORT n, PULONG64 t)
{
    return pfake(PF_LOOKUP_UDP, s, n, t);
}

ULONG WINAPI portres_test_DeletePersistentTcpPortReservation(USHORT s, USHORT n)
{
    return pfake(PF_DELETE_TCP, s, n, NULL);
}

ULONG WINAPI portres_test_DeletePersistentUdpPortReservation(USHORT s, USHORT n)
{
    return pfake(PF_DELETE_UDP, s, n, NULL);
}

/* RegOpenKeyExW: record, then open the real key, a crafted test key
 * instead, or fail as scripted. */
enum { REG_FORWARD, REG_REDIRECT, REG_FAIL };
static int reg_mode = REG_FORWARD;
static LONG reg_err;
static int reg_calls;
static HKEY reg_root;
static REGSAM reg_sam;
static WCHAR reg_path[200];
static const WCHAR *reg_redirect_path; /* under HKEY_CURRENT_USER */

LONG WINAPI portres_test_RegOpenKeyExW(HKEY root, LPCWSTR sub, DWORD options, REGSAM sam, PHKEY out)
{
    reg_calls++;
    reg_root = root;
    reg_sam = sam;
    lstrcpynW(reg_path, sub != NULL ? sub : L"", 200);
    switch (reg_mode) {
    case REG_FORWARD:
        return RegOpenKeyExW(root, sub, options, sam, out);
    case REG_REDIRECT:
        return RegOpenKeyExW(HKEY_CURRENT_USER, reg_redirect_path, 0, KEY_QUERY_VALUE, out);
    default:
        return reg_err;
    }
}

/* RegEnumValueW: the real one, in the key's order, in reverse order, or
 * with every value twice (the registry promises no order [REV]). */
enum { ENUM_AS_IS, ENUM_REVERSE, ENUM_TWICE };
static int enum_mode = ENUM_AS_IS;

LONG WINAPI portres_test_RegEnumValueW(HKEY key, DWORD index, LPWSTR name, LPDWORD name_len,
                                       LPDWORD reserved, LPDWORD type, LPBYTE data,
                                       LPDWORD data_len)
{
    DWORD values = 0;

    if (enum_mode != ENUM_AS_IS) {
        if (RegQueryInfoKeyW(key, NULL, NULL, NULL, NULL, NULL, NULL, &values, NULL, NULL, NULL,
                             NULL)
            != ERROR_SUCCESS)
            return ERROR_INVALID_HANDLE;
        if (enum_mode == ENUM_REVERSE)
            index = index < values ? values - 1 - index : values;
        else
            index = index / 2;
    }
    return RegEnumValueW(key, index, name, name_len, reserved, type, data, data_len);
}

/* The argument bytes of the call recorded at INDEX. */
static int pcall_is(int index, int fn, const unsigned char start[2], const unsigned char count[2],
                    char *got)
{
    const pcall_record *r = &pcalls[index];
    unsigned char both[4];

    if (index >= n_pcalls || index >= MAX_PCALLS) {
        strcpy(got, "(no call)");
        return 0;
    }
    memcpy(both, r->start, 2);
    memcpy(both + 2, r->count, 2);
    hex(got, both, 4);
    return r->fn == fn && memcmp(r->start, start, 2) == 0 && memcmp(r->count, count, 2) == 0;
}

static void test_persistent(void)
{
    static const unsigned char s50000[2] = {0xC3, 0x50}, c10[2] = {0x0A, 0};
    static const unsigned char s256[2] = {0x01, 0x00}, c256[2] = {0x00, 0x01};
    static const unsigned char s1[2] = {0x00, 0x01}, c65535[2] = {0xFF, 0xFF};
    static const unsigned char s65535[2] = {0xFF, 0xFF}, c1[2] = {0x01, 0};
    static const ULONG errors[] = {ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, ERROR_NOT_FOUND,
                                   ERROR_INVALID_PARAMETER};
    static const struct {
        unsigned start, count;
    } bad[] = {{0, 10}, {50000, 0}, {65535, 2}, {65000, 1000}, {70000, 1}, {1, 70000}};
    uint64_t token;
    char got[64];
    int err, proto, fn, ok, i, j, bytes_ok;

    check(ERROR_ACCESS_DENIED == 5 && ERROR_SHARING_VIOLATION == 32 && ERROR_NOT_FOUND == 1168
              && ERROR_INVALID_PARAMETER == 87,
          "persistent: error codes 5, 32, 1168, 87 as portres/_persistent.py "
          "maps them",
          NULL);

    /* create, lookup: bytes, Tcp/Udp, token pointer, token value */
    for (proto = PORTRES_TCP; proto <= PORTRES_UDP; proto++) {
        const char *pname = proto == PORTRES_TCP ? "tcp" : "udp";

        reset_pcalls();
        token = 0;
        err = portres_persistent_create(proto, 50000, 10, &token);
        fn = proto == PORTRES_TCP ? PF_CREATE_TCP : PF_CREATE_UDP;
        bytes_ok = pcall_is(0, fn, s50000, c10, got);
        check(err == 0 && n_pcalls == 1 && bytes_ok,
              proto == PORTRES_TCP ? "persistent create tcp 50000/10: one "
                                     "CreatePersistentTcpPortReservation call, bytes C3 50 0A 00"
                                   : "persistent create udp 50000/10: one "
                                     "CreatePersistentUdpPortReservation call, bytes C3 50 0A 00",
              "err %d, %d calls, fn %s, got %s", err, n_pcalls,
              n_pcalls ? pf_names[pcalls[0].fn] : "-", got);
        check(pcalls[0].token != NULL && token == ptoken,
              proto == PORTRES_TCP ? "persistent create tcp: Token pointer filled, token "
                                     "0x1122334455667788 returned (last error ignored)"
                                   : "persistent create udp: Token pointer filled, token "
                                     "0x1122334455667788 returned (last error ignored)",
              "%s: token 0x%08lX%08lX", pname, (unsigned long)(token >> 32),
              (unsigned long)(token & 0xFFFFFFFFu));

        reset_pcalls();
        token = 0;
        err = portres_persistent_lookup(proto, 256, 256, &token);
        fn = proto == PORTRES_TCP ? PF_LOOKUP_TCP : PF_LOOKUP_UDP;
        bytes_ok = pcall_is(0, fn, s256, c256, got);
        check(err == 0 && n_pcalls == 1 && bytes_ok && pcalls[0].token != NULL && token == ptoken,
              proto == PORTRES_TCP ? "persistent lookup tcp 256/256: LookupPersistentTcp..., "
                                     "bytes 01 00 00 01, token returned"
                                   : "persistent lookup udp 256/256: LookupPersistentUdp..., "
                                     "bytes 01 00 00 01, token returned",
              "err %d, %d calls, got %s", err, n_pcalls, got);

        reset_pcalls();
        err = portres_persistent_delete(proto, 1, 65535);
        fn = proto == PORTRES_TCP ? PF_DELETE_TCP : PF_DELETE_UDP;
        bytes_ok = pcall_is(0, fn, s1, c65535, got);
        check(err == 0 && n_pcalls == 1 && bytes_ok,
              proto == PORTRES_TCP ? "persistent delete tcp 1/65535: DeletePersistentTcp..., "
                                     "bytes 00 01 FF FF"
                                   : "persistent delete udp 1/65535: DeletePersistentUdp..., "
                                     "bytes 00 01 FF FF",
              "err %d, %d calls, got %s", err, n_pcalls, got);
    }
    reset_pcalls();
    err = portres_persistent_create(PORTRES_TCP, 65535, 1, &token);
    bytes_ok = pcall_is(0, PF_CREATE_TCP, s65535, c1, got);
    check(err == 0 && bytes_ok, "persistent create tcp 65535/1 (last port): bytes FF FF 01 00",
          "err %d, got %s", err, got);

    /* errors come back unchanged, from every function; no token */
    ok = 1;
    for (i = 0; i < (int)(sizeof(errors) / sizeof(errors[0])); i++) {
        for (proto = PORTRES_TCP; proto <= PORTRES_UDP; proto++) {
            int results[3];
            reset_pcalls();
            pscript_err = errors[i];
            token = 99;
            results[0] = portres_persistent_create(proto, 50000, 10, &token);
            ok &= token == 0;
            token = 99;
            results[1] = portres_persistent_lookup(proto, 50000, 10, &token);
            ok &= token == 0;
            results[2] = portres_persistent_delete(proto, 50000, 10);
            for (j = 0; j < 3; j++)
                ok &= results[j] == (int)errors[i];
            ok &= n_pcalls == 3;
        }
    }
    check(ok,
          "persistent create/lookup/delete, tcp and udp: errors 5, 32, "
          "1168, 87 returned unchanged, token left 0",
          NULL);

    /* bad arguments: ERROR_INVALID_PARAMETER, no call */
    reset_pcalls();
    ok = 1;
    for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
        ok &= portres_persistent_create(PORTRES_TCP, bad[i].start, bad[i].count, &token)
              == ERROR_INVALID_PARAMETER;
        ok &= portres_persistent_lookup(PORTRES_UDP, bad[i].start, bad[i].count, &token)
              == ERROR_INVALID_PARAMETER;
        ok &= portres_persistent_delete(PORTRES_TCP, bad[i].start, bad[i].count)
              == ERROR_INVALID_PARAMETER;
    }
    ok &= portres_persistent_create(2, 50000, 10, &token) == ERROR_INVALID_PARAMETER;
    ok &= portres_persistent_delete(-1, 50000, 10) == ERROR_INVALID_PARAMETER;
    ok &= portres_persistent_create(PORTRES_TCP, 50000, 10, NULL) == ERROR_INVALID_PARAMETER;
    ok &= portres_persistent_lookup(PORTRES_TCP, 50000, 10, NULL) == ERROR_INVALID_PARAMETER;
    check(ok && n_pcalls == 0,
          "persistent: start 0, count 0, past 65535, > 65535, bad protocol, "
          "NULL token -> ERROR_INVALID_PARAMETER (87), no call",
          "%d calls", n_pcalls);
}

/* ---- persistent listing ------------------------------------------------- */

static const WCHAR list_key_tcp[] = L"Software\\portres-test\\tcp";
static const WCHAR list_key_udp[] = L"Software\\portres-test\\udp";

static int set_block_value(HKEY key, const WCHAR *name)
{
    static const BYTE data[4] = {0x12, 0x00, 0xFF, 0xFF}; /* as seen */
    return RegSetValueExW(key, name, 0, REG_BINARY, data, sizeof(data)) == ERROR_SUCCESS;
}

/* The crafted stores: every kind of name the parser must take or skip. */
static int make_list_keys(void)
{
    static const WCHAR *const tcp_names[] = {
        L"c3500a00",                                 /* 50000/10: held */
        L"00501400",                                 /* 80/20: held */
        L"1F400100",                                 /* 8000/1, upper case: parsed, not held */
        L"ffff0200",                                 /* 65535/2: past 65535, skipped */
        L"00000100",                                 /* start 0: skipped */
        L"30390000",                                 /* count 0: skipped */
        L"zz500a00",                                 /* not hex */
        L"c3500a",                                   /* 6 digits */
        L"c3500a0000",                               /* 10 digits */
        L"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* > the name buffer */
    };
    HKEY tcp = NULL, udp = NULL;
    WCHAR name[16];
    int i, ok = 1;
    unsigned start;

    RegDeleteTreeW(HKEY_CURRENT_USER, L"Software\\portres-test");
    if (RegCreateKeyExW(HKEY_CURRENT_USER, list_key_tcp, 0, NULL, 0, KEY_SET_VALUE, NULL, &tcp,
                        NULL)
            != ERROR_SUCCESS
        || RegCreateKeyExW(HKEY_CURRENT_USER, list_key_udp, 0, NULL, 0, KEY_SET_VALUE, NULL, &udp,
                           NULL)
               != ERROR_SUCCESS)
        ok = 0;
    for (i = 0; ok && i < (int)(sizeof(tcp_names) / sizeof(tcp_names[0])); i++)
        ok &= set_block_value(tcp, tcp_names[i]);
    /* 40 held blocks of 5 ports from 20000: the array grows past 16, 32 */
    for (i = 0; ok && i < 40; i++) {
        start = 20000 + 10 * (unsigned)i;
        swprintf(name, 16, L"%02x%02x0500", start >> 8, start & 0xFF);
        ok &= set_block_value(tcp, name);
    }
    if (ok) {
        ok &= set_block_value(udp, L"cc570100"); /* 52311/1: held */
        ok &= set_block_value(udp, L"c3500a00"); /* 50000/10: not udp */
    }
    if (tcp != NULL)
        RegCloseKey(tcp);
    if (udp != NULL)
        RegCloseKey(udp);
    return ok;
}

static void test_persistent_list(void)
{
    static const unsigned char s50000[2] = {0xC3, 0x50}, c10[2] = {0x0A, 0};
    static const unsigned char s52311[2] = {0xCC, 0x57}, c1[2] = {0x01, 0};
    portres_port_block *blocks = (portres_port_block *)1;
    size_t n = 99, k;
    const char *call = "x";
    long heap0, h0, h1;
    char got[64];
    int err, ok, lookups_ok, found, i;

    if (!make_list_keys()) {
        check(0, "persistent list: crafted registry keys created", NULL);
        return;
    }
    heap0 = heap_live;
    h0 = count_handles();

    /* TCP, from the crafted store */
    reset_pcalls();
    pscript_store = 1;
    reg_mode = REG_REDIRECT;
    reg_redirect_path = list_key_tcp;
    reg_calls = 0;
    err = list_persistent(PORTRES_TCP, &blocks, &n, &call);
    check(err == 0 && call == NULL && reg_calls == 1 && reg_root == HKEY_LOCAL_MACHINE
              && lstrcmpW(reg_path, L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
                                    L"{eb004a03-9b1a-11d4-9123-0050047759bc}\\29")
                     == 0
              && reg_sam == (KEY_QUERY_VALUE | KEY_WOW64_64KEY),
          "persistent list tcp: opens HKLM\\...\\Nsi\\{eb004a03-...}\\29 "
          "read-only (KEY_QUERY_VALUE | KEY_WOW64_64KEY)",
          "err %d, %d opens, sam 0x%lx", err, reg_calls, (unsigned long)reg_sam);
    ok = err == 0 && blocks != NULL && n == 42 && blocks[0].start == 80 && blocks[0].count == 20
         && blocks[41].start == 50000 && blocks[41].count == 10;
    for (k = 1; ok && k < 41; k++)
        ok = blocks[k].start == 20000 + 10 * (unsigned)(k - 1) && blocks[k].count == 5;
    check(ok,
          "persistent list tcp: the 42 held blocks, sorted (80/20, "
          "20000/5 .. 20390/5, 50000/10)",
          "err %d, n %lu, first %u/%u", err, (unsigned long)n, n ? blocks[0].start : 0,
          n ? blocks[0].count : 0);
    lookups_ok = n_pcalls == 43;
    found = 0;
    for (i = 0; lookups_ok && i < n_pcalls && i < MAX_PCALLS; i++) {
        lookups_ok = pcalls[i].fn == PF_LOOKUP_TCP;
        if (pcall_is(i, PF_LOOKUP_TCP, s50000, c10, got))
            found = 1;
    }
    check(lookups_ok && found,
          "persistent list tcp: 43 LookupPersistentTcpPortReservation calls "
          "(one per well-formed name; 8000/1 not found, dropped), 50000/10 as "
          "C3 50 0A 00",
          "%d calls", n_pcalls);
    portres_persistent_list_free(err == 0 ? blocks : NULL);

    /* the registry promises no order: reversed, or each value seen twice */
    for (i = 0; i < 2; i++) {
        reset_pcalls();
        pscript_store = 1;
        enum_mode = i == 0 ? ENUM_REVERSE : ENUM_TWICE;
        blocks = (portres_port_block *)1;
        err = list_persistent(PORTRES_TCP, &blocks, &n, &call);
        enum_mode = ENUM_AS_IS;
        ok = err == 0 && n == 42 && blocks[0].start == 80 && blocks[41].start == 50000
             && n_pcalls == (i == 0 ? 43 : 86);
        for (found = 1; ok && found < 42; found++)
            ok = blocks[found - 1].start < blocks[found].start;
        check(ok,
              i == 0 ? "persistent list tcp, values enumerated in reverse: "
                       "the same 42 blocks, sorted by start"
                     : "persistent list tcp, every value enumerated twice: "
                       "the same 42 blocks, no duplicate",
              "err %d, n %lu, %d calls", err, (unsigned long)n, n_pcalls);
        portres_persistent_list_free(err == 0 ? blocks : NULL);
    }

    /* UDP */
    reset_pcalls();
    pscript_store = 1;
    reg_redirect_path = list_key_udp;
    blocks = (portres_port_block *)1;
    err = list_persistent(PORTRES_UDP, &blocks, &n, &call);
    check(err == 0 && n == 1 && blocks[0].start == 52311 && blocks[0].count == 1 && n_pcalls == 2
              && pcalls[0].fn == PF_LOOKUP_UDP && pcalls[1].fn == PF_LOOKUP_UDP
              && (pcall_is(0, PF_LOOKUP_UDP, s52311, c1, got)
                  || pcall_is(1, PF_LOOKUP_UDP, s52311, c1, got))
              && lstrcmpW(reg_path, L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
                                    L"{eb004a02-9b1a-11d4-9123-0050047759bc}\\5")
                     == 0,
          "persistent list udp: Nsi\\{eb004a02-...}\\5, LookupPersistentUdp... "
          "per name, [(52311, 1)]",
          "err %d, n %lu, %d calls", err, (unsigned long)n, n_pcalls);
    portres_persistent_list_free(err == 0 ? blocks : NULL);

    /* a Lookup failing otherwise than ERROR_NOT_FOUND ends the listing */
    reset_pcalls();
    pscript_err = ERROR_ACCESS_DENIED;
    reg_redirect_path = list_key_tcp;
    blocks = (portres_port_block *)1;
    err = list_persistent(PORTRES_TCP, &blocks, &n, &call);
    check(err == ERROR_ACCESS_DENIED && blocks == NULL && n == 0 && call != NULL
              && strcmp(call, "LookupPersistentTcpPortReservation") == 0,
          "persistent list: a Lookup error (5) is returned, naming "
          "LookupPersistentTcpPortReservation; nothing kept",
          "err %d, call %s", err, call ? call : "NULL");

    /* no store: no persistent reservation yet */
    reset_pcalls();
    reg_mode = REG_FAIL;
    reg_err = ERROR_FILE_NOT_FOUND;
    blocks = (portres_port_block *)1;
    err = list_persistent(PORTRES_UDP, &blocks, &n, &call);
    check(err == 0 && blocks == NULL && n == 0 && n_pcalls == 0,
          "persistent list, store key absent: empty list, no Lookup", "err %d", err);
    reg_err = ERROR_ACCESS_DENIED;
    err = list_persistent(PORTRES_TCP, &blocks, &n, &call);
    check(err == ERROR_ACCESS_DENIED && blocks == NULL && call != NULL
              && strcmp(call, "RegOpenKeyExW") == 0,
          "persistent list, key not readable: 5, naming RegOpenKeyExW", "err %d", err);

    reg_calls = 0;
    err = list_persistent(7, &blocks, &n, &call);
    check(err == ERROR_INVALID_PARAMETER && reg_calls == 0
              && list_persistent(PORTRES_TCP, NULL, &n, &call) == ERROR_INVALID_PARAMETER
              && list_persistent(PORTRES_TCP, &blocks, NULL, &call) == ERROR_INVALID_PARAMETER,
          "persistent list: bad protocol, NULL outputs -> 87, no call", "err %d", err);

    h1 = count_handles();
    check(heap_live == heap0 && h1 == h0,
          "persistent list: no heap block, no handle (registry key) left",
          "heap %ld -> %ld, handles %ld -> %ld", heap0, (long)heap_live, h0, h1);

    /* Wine's own registry: no such store */
    reset_pcalls();
    pscript_store = 1;
    reg_mode = REG_FORWARD;
    err = list_persistent(PORTRES_TCP, &blocks, &n, &call);
    check(err == 0, "wine: persistent list tcp on Wine's registry: no error", "err %d", err);
    printf("     note: Wine's registry holds %lu persistent TCP block(s)\n", (unsigned long)n);
    portres_persistent_list_free(err == 0 ? blocks : NULL);
    reset_pcalls();
    RegDeleteTreeW(HKEY_CURRENT_USER, L"Software\\portres-test");
}

/* ---- who holds a port (endpoint-table seams) ----------------------------- */

enum { TBL_FORWARD, TBL_SCRIPT };

typedef struct {
    int udp;
    ULONG af;
    int null_table;
    DWORD size_in;  /* *pdwSize on entry: the buffer's size */
    DWORD size_out; /* *pdwSize on return */
    WINBOOL order;
    int table_class;
    ULONG reserved;
    DWORD rc;
} tcall_record;

#define MAX_TCALLS 32
static tcall_record tcalls[MAX_TCALLS];
static int n_tcalls;
static int tbl_mode = TBL_FORWARD;
/* Scripted tables, by [udp][family is AF_INET6]: byte images built with
 * the headers' own types (DWORD-aligned storage). */
static DWORD tbl_store[2][2][1024];
static DWORD tbl_len[2][2];
static DWORD tbl_pad; /* bytes the table needs beyond its image */
static int tbl_grow;  /* times it grows right after giving its size */
static int tbl_lie;   /* times it says "too small" without a size */
static DWORD tbl_err; /* non-zero: returned (for tbl_err_af, 0 any) */
static ULONG tbl_err_af;

static void reset_tables(void)
{
    memset(tbl_store, 0, sizeof(tbl_store));
    memset(tbl_len, 0, sizeof(tbl_len));
    tbl_pad = 0;
    tbl_grow = tbl_lie = 0;
    tbl_err = 0;
    tbl_err_af = 0;
    n_tcalls = 0;
    tbl_mode = TBL_SCRIPT;
}

static DWORD tfake(int udp, PVOID table, PDWORD size, WINBOOL order, ULONG af, int cls,
                   ULONG reserved)
{
    tcall_record r;
    const unsigned char *img;
    DWORD img_len, need;

    memset(&r, 0, sizeof(r));
    r.udp = udp;
    r.af = af;
    r.null_table = table == NULL;
    r.size_in = *size;
    r.order = order;
    r.table_class = cls;
    r.reserved = reserved;
    if (tbl_mode == TBL_FORWARD) {
        r.rc = udp ? GetExtendedUdpTable(table, size, order, af, (UDP_TABLE_CLASS)cls, reserved)
                   : GetExtendedTcpTable(table, size, order, af, (TCP_TABLE_CLASS)cls, reserved);
    } else if (tbl_err && (tbl_err_af == 0 || tbl_err_af == af)) {
        r.rc = tbl_err;
    } else {
        img = (const unsigned char *)tbl_store[udp][af == AF_INET6];
        img_len = tbl_len[udp][af == AF_INET6];
        if (img_len == 0)
            img_len = 4; /* dwNumEntries 0 */
        need = img_len + tbl_pad;
        if (tbl_lie > 0) {
            tbl_lie--;
            r.rc = ERROR_INSUFFICIENT_BUFFER; /* *size left as given */
        } else if (table == NULL || *size < need) {
            *size = need;
            r.rc = ERROR_INSUFFICIENT_BUFFER;
            if (tbl_grow > 0) { /* rows appear before the next call: */
                tbl_grow--;     /* more than any margin on NEED */
                tbl_pad += need + 100000;
            }
        } else {
            /* Garbage after the rows: a parser reading past dwNumEntries
             * sees port 0xEEEE = 61166. */
            memset(table, 0xEE, *size);
            memcpy(table, img, img_len);
            r.rc = NO_ERROR;
        }
    }
    r.size_out = *size;
    if (n_tcalls < MAX_TCALLS)
        tcalls[n_tcalls] = r;
    n_tcalls++;
    /* The result is the return value; a stale last error must not matter. */
    SetLastError(ERROR_GEN_FAILURE);
    return r.rc;
}

DWORD WINAPI portres_test_GetExtendedTcpTable(PVOID t, PDWORD size, WINBOOL order, ULONG af,
                                              TCP_TABLE_CLASS cls, ULONG reserved)
{
    return tfake(0, t, size, order, af, (int)cls, reserved);
}

DWORD WINAPI portres_test_GetExtendedUdpTable(PVOID t, PDWORD size, WINBOOL order, ULONG af,
                                              UDP_TABLE_CLASS cls, ULONG reserved)
{
    return tfake(1, t, size, order, af, (int)cls, reserved);
}

/* dwLocalPort as the stack lays it out: the port's two bytes in network
 * order, then two bytes this code must never read (garbage here). */
static DWORD wire_port(unsigned port)
{
    unsigned char b[4];
    DWORD d;

    b[0] = (unsigned char)(port >> 8);
    b[1] = (unsigned char)(port & 0xFF);
    b[2] = 0xAB;
    b[3] = 0xCD;
    memcpy(&d, b, 4);
    return d;
}

typedef struct {
    unsigned port;
    DWORD state; /* MIB_TCP_STATE (TCP only) */
    DWORD pid;
} trow;

static void set_tcp4(const trow *rows, int n)
{
    MIB_TCPTABLE_OWNER_PID *t = (MIB_TCPTABLE_OWNER_PID *)tbl_store[0][0];
    int i;

    t->dwNumEntries = (DWORD)n;
    for (i = 0; i < n; i++) {
        t->table[i].dwState = rows[i].state;
        t->table[i].dwLocalAddr = htonl(INADDR_LOOPBACK);
        t->table[i].dwLocalPort = wire_port(rows[i].port);
        t->table[i].dwRemotePort = wire_port(1);
        t->table[i].dwOwningPid = rows[i].pid;
    }
    tbl_len[0][0] =
        (DWORD)(offsetof(MIB_TCPTABLE_OWNER_PID, table) + (size_t)n * sizeof(t->table[0]));
}

static void set_tcp6(const trow *rows, int n)
{
    MIB_TCP6TABLE_OWNER_PID *t = (MIB_TCP6TABLE_OWNER_PID *)tbl_store[0][1];
    int i;

    t->dwNumEntries = (DWORD)n;
    for (i = 0; i < n; i++) {
        t->table[i].ucLocalAddr[15] = 1;
        t->table[i].dwLocalScopeId = 0x01020304;
        t->table[i].dwLocalPort = wire_port(rows[i].port);
        t->table[i].dwRemotePort = wire_port(2);
        t->table[i].dwState = rows[i].state;
        t->table[i].dwOwningPid = rows[i].pid;
    }
    tbl_len[0][1] =
        (DWORD)(offsetof(MIB_TCP6TABLE_OWNER_PID, table) + (size_t)n * sizeof(t->table[0]));
}

static void set_udp4(const trow *rows, int n)
{
    MIB_UDPTABLE_OWNER_PID *t = (MIB_UDPTABLE_OWNER_PID *)tbl_store[1][0];
    int i;

    t->dwNumEntries = (DWORD)n;
    for (i = 0; i < n; i++) {
        t->table[i].dwLocalPort = wire_port(rows[i].port);
        t->table[i].dwOwningPid = rows[i].pid;
    }
    tbl_len[1][0] =
        (DWORD)(offsetof(MIB_UDPTABLE_OWNER_PID, table) + (size_t)n * sizeof(t->table[0]));
}

static void set_udp6(const trow *rows, int n)
{
    MIB_UDP6TABLE_OWNER_PID *t = (MIB_UDP6TABLE_OWNER_PID *)tbl_store[1][1];
    int i;

    t->dwNumEntries = (DWORD)n;
    for (i = 0; i < n; i++) {
        t->table[i].dwLocalScopeId = 0x01020304;
        t->table[i].dwLocalPort = wire_port(rows[i].port);
        t->table[i].dwOwningPid = rows[i].pid;
    }
    tbl_len[1][1] =
        (DWORD)(offsetof(MIB_UDP6TABLE_OWNER_PID, table) + (size_t)n * sizeof(t->table[0]));
}

/* Is (family, state, port, pid) the I-th result? */
static int sock_is(const portres_port_socket *s, size_t n, size_t i, int family, int state,
                   unsigned port, unsigned long pid)
{
    return s != NULL && i < n && s[i].family == family && s[i].state == state && s[i].port == port
           && s[i].pid == pid;
}

static void print_sockets(const portres_port_socket *s, size_t n)
{
    size_t i;

    for (i = 0; s != NULL && i < n; i++)
        printf("       [%lu] family %d state %d port %u pid %lu\n", (unsigned long)i, s[i].family,
               s[i].state, s[i].port, s[i].pid);
}

static void test_state_mapping(void)
{
    /* MIB_TCP_STATE 1..12 -> include/net/tcp_states.h */
    static const int expect[13] = {
        0,
        7 /* CLOSED */,
        10 /* LISTEN */,
        2 /* SYN_SENT */,
        3 /* SYN_RCVD */,
        1 /* ESTAB */,
        4 /* FIN_WAIT1 */,
        5 /* FIN_WAIT2 */,
        8 /* CLOSE_WAIT */,
        11 /* CLOSING */,
        9 /* LAST_ACK */,
        6 /* TIME_WAIT */,
        7 /* DELETE_TCB */
    };
    unsigned long v;
    int ok = 1, bad = 0;

    for (v = 1; v <= 12; v++)
        if (portres_tcp_state_from_mib(v) != expect[v]) {
            ok = 0;
            bad = (int)v;
        }
    check(ok,
          "tcp states: MIB_TCP_STATE 1..12 map to Linux's numbers "
          "(LISTEN 2 -> 10, ESTAB 5 -> 1, TIME_WAIT 11 -> 6, "
          "CLOSE_WAIT 8 -> 8, ...)",
          "MIB %d -> %d", bad, bad ? portres_tcp_state_from_mib((unsigned long)bad) : 0);
    check(portres_tcp_state_from_mib(0) == 1000 && portres_tcp_state_from_mib(100) == 1100
              && portres_tcp_state_from_mib(13) == 1013
              && portres_tcp_state_from_mib(0xFFFFFFFFul) == 1000,
          "tcp states: other MIB values -> 1000 + value (1000 when huge)", "%d %d %d %d",
          portres_tcp_state_from_mib(0), portres_tcp_state_from_mib(100),
          portres_tcp_state_from_mib(13), portres_tcp_state_from_mib(0xFFFFFFFFul));
}

static void test_port_sockets_crafted(void)
{
    static const trow tcp4[] = {
        {50000, MIB_TCP_STATE_LISTEN, 1111},
        {20675, MIB_TCP_STATE_LISTEN, 7}, /* bytes 50 C3: not 50000 */
        {50001, MIB_TCP_STATE_ESTAB, 2222},
        {49999, MIB_TCP_STATE_LISTEN, 3},
        {50002, MIB_TCP_STATE_LISTEN, 4},
    };
    static const trow tcp6[] = {
        {50000, MIB_TCP_STATE_TIME_WAIT, 0},
        {50000, 100, 5555},
        {50001, MIB_TCP_STATE_CLOSE_WAIT, 6},
    };
    static const trow udp4[] = {{50000, 0, 10}, {50001, 0, 11}};
    static const trow udp6[] = {{49999, 0, 12}, {50000, 0, 13}};
    portres_port_socket *s = (portres_port_socket *)1;
    size_t n = 99;
    const char *call = "x";
    long heap0 = heap_live;
    int err, ok, i;

    /* TCP, both families, with a port range and the byte order */
    reset_tables();
    set_tcp4(tcp4, 5);
    set_tcp6(tcp6, 3);
    err = list_port_sockets(PORTRES_TCP, 50000, 50001, &s, &n, &call);
    ok = err == 0 && call == NULL && n == 5 && sock_is(s, n, 0, AF_INET, 10, 50000, 1111)
         && sock_is(s, n, 1, AF_INET, 1, 50001, 2222) && sock_is(s, n, 2, AF_INET6, 6, 50000, 0)
         && sock_is(s, n, 3, AF_INET6, 1100, 50000, 5555)
         && sock_is(s, n, 4, AF_INET6, 8, 50001, 6);
    check(ok,
          "port sockets tcp 50000-50001: both families, ports read as "
          "network order from the DWORD's first two bytes (C3 50 = "
          "50000; 50 C3 = 20675 left out), states mapped, PIDs kept",
          "err %d, n %lu", err, (unsigned long)n);
    if (!ok)
        print_sockets(s, n);
    check(n_tcalls == 2 && tcalls[0].af == AF_INET && tcalls[1].af == AF_INET6 && !tcalls[0].udp
              && !tcalls[1].udp && tcalls[0].table_class == TCP_TABLE_OWNER_PID_ALL
              && tcalls[1].table_class == TCP_TABLE_OWNER_PID_ALL && !tcalls[0].order
              && tcalls[0].reserved == 0 && !tcalls[0].null_table && tcalls[0].size_in == 16384,
          "port sockets tcp: GetExtendedTcpTable(buffer of 16384, bOrder "
          "FALSE, AF_INET then AF_INET6, TCP_TABLE_OWNER_PID_ALL, 0)",
          "%d calls, class %d, size %lu", n_tcalls, tcalls[0].table_class,
          (unsigned long)tcalls[0].size_in);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* One port, exactly; the rows after dwNumEntries are never read */
    err = list_port_sockets(PORTRES_TCP, 50002, 50002, &s, &n, &call);
    check(err == 0 && n == 1 && sock_is(s, n, 0, AF_INET, 10, 50002, 4),
          "port sockets tcp 50002-50002: the one row", "err %d, n %lu", err, (unsigned long)n);
    portres_port_sockets_free(err == 0 ? s : NULL);
    err = list_port_sockets(PORTRES_TCP, 61166, 61166, &s, &n, &call);
    check(err == 0 && n == 0 && s == NULL,
          "port sockets: bytes past dwNumEntries (port 61166 there) not read", "err %d, n %lu", err,
          (unsigned long)n);

    /* UDP, both families: state 7 (bound) */
    set_udp4(udp4, 2);
    set_udp6(udp6, 2);
    n_tcalls = 0;
    err = list_port_sockets(PORTRES_UDP, 50000, 50000, &s, &n, &call);
    check(err == 0 && n == 2 && sock_is(s, n, 0, AF_INET, 7, 50000, 10)
              && sock_is(s, n, 1, AF_INET6, 7, 50000, 13) && n_tcalls == 2 && tcalls[0].udp
              && tcalls[1].udp && tcalls[0].af == AF_INET && tcalls[1].af == AF_INET6
              && tcalls[0].table_class == UDP_TABLE_OWNER_PID
              && tcalls[1].table_class == UDP_TABLE_OWNER_PID,
          "port sockets udp 50000: GetExtendedUdpTable(UDP_TABLE_OWNER_PID) "
          "for both families, rows in state 7 (bound) with their PIDs",
          "err %d, n %lu, %d calls", err, (unsigned long)n, n_tcalls);
    if (err == 0 && n != 2)
        print_sockets(s, n);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* Growth: the first buffer is too small */
    reset_tables();
    set_tcp4(tcp4, 5);
    tbl_pad = 40000;
    err = list_port_sockets(PORTRES_TCP, 50000, 50000, &s, &n, &call);
    check(err == 0 && n == 1 && n_tcalls == 4 && tcalls[0].rc == ERROR_INSUFFICIENT_BUFFER
              && tcalls[1].rc == NO_ERROR && tcalls[1].size_in >= tcalls[0].size_out
              && tcalls[3].size_in >= tcalls[2].size_out,
          "port sockets: ERROR_INSUFFICIENT_BUFFER -> one retry with at "
          "least the size returned, per family",
          "err %d, n %lu, %d calls", err, (unsigned long)n, n_tcalls);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* Growth: the table grows twice between the size and the next call */
    reset_tables();
    set_tcp4(tcp4, 5);
    tbl_pad = 40000;
    tbl_grow = 2;
    err = list_port_sockets(PORTRES_TCP, 50000, 50000, &s, &n, &call);
    ok = err == 0 && n == 1 && sock_is(s, n, 0, AF_INET, 10, 50000, 1111) && n_tcalls == 6
         && tcalls[3].rc == NO_ERROR;
    for (i = 1; ok && i < 4; i++)
        ok = tcalls[i].size_in >= tcalls[i - 1].size_out;
    check(ok,
          "port sockets: a table that grows between calls -> each retry "
          "asks for the latest size (plus margin) until it fits",
          "err %d, n %lu, %d calls", err, (unsigned long)n, n_tcalls);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* Growth: "too small" without a bigger size still grows the buffer */
    reset_tables();
    set_tcp4(tcp4, 5);
    tbl_lie = 1;
    err = list_port_sockets(PORTRES_TCP, 50000, 50000, &s, &n, &call);
    check(err == 0 && n == 1 && n_tcalls == 3 && tcalls[1].size_in > tcalls[0].size_in,
          "port sockets: ERROR_INSUFFICIENT_BUFFER with no larger size -> "
          "a larger buffer anyway",
          "err %d, %d calls, %lu -> %lu", err, n_tcalls, (unsigned long)tcalls[0].size_in,
          (unsigned long)(n_tcalls > 1 ? tcalls[1].size_in : 0));
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* Growth without end: bounded */
    reset_tables();
    set_tcp4(tcp4, 5);
    tbl_pad = 40000;
    tbl_grow = 1000;
    err = list_port_sockets(PORTRES_TCP, 50000, 50000, &s, &n, &call);
    check(err == ERROR_INSUFFICIENT_BUFFER && s == NULL && n == 0
              && n_tcalls == PORTRES_TABLE_ATTEMPTS && call != NULL
              && strcmp(call, "GetExtendedTcpTable") == 0,
          "port sockets: a table that never stops growing -> "
          "ERROR_INSUFFICIENT_BUFFER after 8 calls, naming "
          "GetExtendedTcpTable",
          "err %d, %d calls", err, n_tcalls);

    /* A row count the buffer cannot hold */
    reset_tables();
    set_tcp4(tcp4, 5);
    ((MIB_TCPTABLE_OWNER_PID *)tbl_store[0][0])->dwNumEntries = 0x10000000;
    err = list_port_sockets(PORTRES_TCP, 0, 65535, &s, &n, &call);
    check(err == ERROR_INVALID_DATA && s == NULL && call != NULL,
          "port sockets: dwNumEntries past the buffer -> ERROR_INVALID_DATA, "
          "no row read",
          "err %d", err);
    /* The boundary: (16384 - 4) / 28 = 585 MIB_UDP6ROW_OWNER_PID rows fit */
    reset_tables();
    set_udp6(udp6, 2);
    ((MIB_UDP6TABLE_OWNER_PID *)tbl_store[1][1])->dwNumEntries = 586;
    err = list_port_sockets(PORTRES_UDP, 0, 65535, &s, &n, &call);
    check(sizeof(MIB_UDP6ROW_OWNER_PID) == 28 && err == ERROR_INVALID_DATA && s == NULL
              && call != NULL && strcmp(call, "GetExtendedUdpTable") == 0,
          "port sockets: 586 udp6 rows claimed in a 16384-byte buffer -> "
          "ERROR_INVALID_DATA (naming GetExtendedUdpTable)",
          "err %d", err);
    ((MIB_UDP6TABLE_OWNER_PID *)tbl_store[1][1])->dwNumEntries = 585;
    err = list_port_sockets(PORTRES_UDP, 0, 65535, &s, &n, &call);
    check(err == 0 && n == 585 && sock_is(s, n, 0, AF_INET6, 7, 49999, 12)
              && sock_is(s, n, 584, AF_INET6, 7, 0xEEEE, 0xEEEEEEEEul),
          "port sockets: 585 udp6 rows (exactly the buffer) are read", "err %d, n %lu", err,
          (unsigned long)n);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* Errors pass through; nothing is kept from the first family */
    reset_tables();
    set_tcp4(tcp4, 5);
    tbl_err = ERROR_INVALID_PARAMETER;
    tbl_err_af = AF_INET6;
    err = list_port_sockets(PORTRES_TCP, 50000, 50000, &s, &n, &call);
    check(err == ERROR_INVALID_PARAMETER && s == NULL && n == 0 && n_tcalls == 2,
          "port sockets: the AF_INET6 call's error is returned, the AF_INET "
          "rows freed",
          "err %d, %d calls", err, n_tcalls);

    /* Bad arguments: no call */
    reset_tables();
    ok = list_port_sockets(7, 1, 2, &s, &n, &call) == ERROR_INVALID_PARAMETER
         && list_port_sockets(PORTRES_TCP, 3, 2, &s, &n, &call) == ERROR_INVALID_PARAMETER
         && list_port_sockets(PORTRES_UDP, 0, 65536, &s, &n, &call) == ERROR_INVALID_PARAMETER
         && list_port_sockets(PORTRES_UDP, 0, 1, NULL, &n, &call) == ERROR_INVALID_PARAMETER;
    check(ok && n_tcalls == 0,
          "port sockets: bad protocol/range/pointer -> "
          "ERROR_INVALID_PARAMETER before any call",
          "%d calls", n_tcalls);

    /* More results than the first array holds (16, 32, ...) */
    {
        static trow many[40];
        for (i = 0; i < 40; i++) {
            many[i].port = 40000 + (unsigned)i;
            many[i].state = MIB_TCP_STATE_LISTEN;
            many[i].pid = 100 + (DWORD)i;
        }
        reset_tables();
        set_tcp4(many, 40);
        set_tcp6(many, 40);
        err = list_port_sockets(PORTRES_TCP, 40000, 40039, &s, &n, &call);
        ok = err == 0 && n == 80;
        for (i = 0; ok && i < 40; i++)
            ok = sock_is(s, n, (size_t)i, AF_INET, 10, 40000 + (unsigned)i, 100 + (unsigned long)i)
                 && sock_is(s, n, 40 + (size_t)i, AF_INET6, 10, 40000 + (unsigned)i,
                            100 + (unsigned long)i);
        check(ok, "port sockets: 80 results, in table order", "err %d, n %lu", err,
              (unsigned long)n);
        portres_port_sockets_free(err == 0 ? s : NULL);
    }
    check(heap_live == heap0, "port sockets: no heap block left by any case", "%ld -> %ld", heap0,
          (long)heap_live);
    tbl_mode = TBL_FORWARD;
}

/* Wine before 9.17 cannot name the PID of a socket (its nsiproxy looked
 * for the socket's inode in the Unix processes' fd tables, while the
 * wineserver holds the socket); 9.17 ("nsiproxy: Implement TCP table on
 * top of a server call", with tests that GetExtendedTcpTable/UdpTable
 * associate a socket with the correct PID) fixed it.  0 is the tables'
 * own "unavailable" [U4R]. */
static int wine_knows_pids = -1;

static int knows_pids(void)
{
    typedef const char *(CDECL * wine_version_fn)(void);
    wine_version_fn fn;
    FARPROC p;
    int major = 0, minor = 0;

    if (wine_knows_pids >= 0)
        return wine_knows_pids;
    p = GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "wine_get_version");
    memcpy(&fn, &p, sizeof(fn));
    if (fn == NULL) {
        wine_knows_pids = 1; /* Windows itself */
    } else {
        sscanf(fn(), "%d.%d", &major, &minor);
        wine_knows_pids = major > 9 || (major == 9 && minor >= 17);
        printf("     note: Wine %s: owning PIDs %s\n", fn(),
               wine_knows_pids ? "required" : "may be 0 (fixed in Wine 9.17)");
    }
    return wine_knows_pids;
}

/* Find (family, state, port) owned by PID among the results (PID or, where
 * Wine cannot tell, 0; never another process). */
static int has_sock(const portres_port_socket *s, size_t n, int family, int state, unsigned port,
                    unsigned long pid)
{
    size_t i;

    for (i = 0; s != NULL && i < n; i++)
        if (s[i].family == family && s[i].state == state && s[i].port == port
            && (s[i].pid == pid || (s[i].pid == 0 && !knows_pids())))
            return 1;
    return 0;
}

static void test_port_sockets_wine(void)
{
    int pass;
    unsigned long me = GetCurrentProcessId();
    portres_port_socket *s = NULL;
    size_t n = 0;
    const char *call = NULL;
    struct sockaddr_in sin = loopback_any_port();
    struct sockaddr_in6 sin6;
    SOCKET lst, cli = INVALID_SOCKET, acc = INVALID_SOCKET, udp, l6;
    unsigned port, uport, port6;
    long heap0 = heap_live, h0, h1;
    int err, i, len, ok;

    tbl_mode = TBL_FORWARD;
    n_tcalls = 0;
    lst = new_socket(AF_INET, SOCK_STREAM);
    if (lst == INVALID_SOCKET || bind(lst, (struct sockaddr *)&sin, sizeof(sin))
        || listen(lst, 4)) {
        check(0, "wine: a listening TCP socket on 127.0.0.1", "%d", WSAGetLastError());
        return;
    }
    port = local_port(lst);
    err = list_port_sockets(PORTRES_TCP, port, port, &s, &n, &call);
    ok = err == 0 && has_sock(s, n, AF_INET, 10, port, me);
    check(ok, "wine: GetExtendedTcpTable finds our listener (LISTEN, our PID)",
          "err %d (%s), port %u, n %lu", err, call ? call : "-", port, (unsigned long)n);
    if (err == 0 && !ok)
        print_sockets(s, n);
    printf("     note: wine: %d GetExtendedTcpTable calls, first buffer %lu, "
           "sizes returned %lu/%lu\n",
           n_tcalls, (unsigned long)tcalls[0].size_in, (unsigned long)tcalls[0].size_out,
           (unsigned long)(n_tcalls > 1 ? tcalls[1].size_out : 0));
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* A connection: ESTABLISHED on the listener's port (accepted side) */
    cli = new_socket(AF_INET, SOCK_STREAM);
    sin.sin_port = htons((u_short)port);
    if (cli != INVALID_SOCKET && connect(cli, (struct sockaddr *)&sin, sizeof(sin)) == 0)
        acc = accept(lst, NULL, NULL);
    err = list_port_sockets(PORTRES_TCP, port, port, &s, &n, &call);
    ok = err == 0 && acc != INVALID_SOCKET && has_sock(s, n, AF_INET, 10, port, me)
         && has_sock(s, n, AF_INET, 1, port, me);
    check(ok,
          "wine: with a connection accepted: LISTEN and ESTABLISHED rows "
          "on the port, our PID",
          "err %d, accept %s, n %lu", err, acc != INVALID_SOCKET ? "ok" : "failed",
          (unsigned long)n);
    if (err == 0 && !ok)
        print_sockets(s, n);
    portres_port_sockets_free(err == 0 ? s : NULL);

    /* UDP */
    udp = new_socket(AF_INET, SOCK_DGRAM);
    sin = loopback_any_port();
    if (udp != INVALID_SOCKET && bind(udp, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
        uport = local_port(udp);
        err = list_port_sockets(PORTRES_UDP, uport, uport, &s, &n, &call);
        check(err == 0 && n >= 1 && has_sock(s, n, AF_INET, 7, uport, me),
              "wine: GetExtendedUdpTable finds our bound UDP socket (state 7, "
              "our PID)",
              "err %d, n %lu", err, (unsigned long)n);
        portres_port_sockets_free(err == 0 ? s : NULL);
    } else {
        check(0, "wine: a bound UDP socket", "%d", WSAGetLastError());
    }

    /* IPv6, if Wine's host has it */
    l6 = new_socket(AF_INET6, SOCK_STREAM);
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr.s6_addr[15] = 1; /* ::1 */
    if (l6 != INVALID_SOCKET && bind(l6, (struct sockaddr *)&sin6, sizeof(sin6)) == 0
        && listen(l6, 1) == 0) {
        len = (int)sizeof(sin6);
        getsockname(l6, (struct sockaddr *)&sin6, &len);
        port6 = ntohs(sin6.sin6_port);
        err = list_port_sockets(PORTRES_TCP, port6, port6, &s, &n, &call);
        check(err == 0 && has_sock(s, n, AF_INET6, 10, port6, me),
              "wine: GetExtendedTcpTable(AF_INET6) finds our [::1] listener", "err %d, n %lu", err,
              (unsigned long)n);
        if (err == 0 && !has_sock(s, n, AF_INET6, 10, port6, me))
            print_sockets(s, n);
        portres_port_sockets_free(err == 0 ? s : NULL);
    } else {
        printf("     note: wine: no IPv6 listener (%d): AF_INET6 real call "
               "not checked\n",
               WSAGetLastError());
    }

    /* Whole range, twice, leaks nothing */
    for (pass = 0; pass < 2; pass++) {
        h0 = count_handles();
        for (i = 0; i < 20; i++) {
            err = list_port_sockets(i & 1 ? PORTRES_UDP : PORTRES_TCP, 0, 65535, &s, &n, &call);
            if (err)
                break;
            portres_port_sockets_free(s);
        }
        h1 = count_handles();
        if (h1 == h0 || i != 20)
            break;
        note_lazy_handles(h0, h1);
    }
    check(i == 20 && heap_live == heap0 && h1 == h0,
          "wine: 20 whole-range listings leak no heap block, no handle",
          "iter %d err %d, heap %ld -> %ld, handles %ld -> %ld", i, err, heap0, (long)heap_live, h0,
          h1);

    if (l6 != INVALID_SOCKET)
        closesocket(l6);
    if (udp != INVALID_SOCKET)
        closesocket(udp);
    if (acc != INVALID_SOCKET)
        closesocket(acc);
    if (cli != INVALID_SOCKET)
        closesocket(cli);
    closesocket(lst);
}

/* QueryFullProcessImageNameW: forwarded, or a scripted name. */
static int qpi_mode = TBL_FORWARD;
static const WCHAR *qpi_name;
static int qpi_calls;
static DWORD qpi_size_in[4];

WINBOOL WINAPI portres_test_QueryFullProcessImageNameW(HANDLE h, DWORD flags, LPWSTR name,
                                                       PDWORD size)
{
    DWORD need;

    if (qpi_calls < 4)
        qpi_size_in[qpi_calls] = *size;
    qpi_calls++;
    if (qpi_mode == TBL_FORWARD)
        return QueryFullProcessImageNameW(h, flags, name, size);
    need = (DWORD)lstrlenW(qpi_name);
    if (*size <= need) { /* room for the NUL too */
        SetLastError(ERROR_INSUFFICIENT_BUFFER);
        return FALSE;
    }
    memcpy(name, qpi_name, (need + 1) * sizeof(WCHAR));
    *size = need;
    return TRUE;
}

static void test_process_name(void)
{
    int pass;
    /* "C:\Café\😀.exe": é is C3 A9, U+1F600 (D83D DE00) is F0 9F 98 80 */
    static const WCHAR cafe[] = {'C',    ':',    '\\', 'C', 'a', 'f', 0xE9, '\\',
                                 0xD83D, 0xDE00, '.',  'e', 'x', 'e', 0};
    static const char cafe_utf8[] = "C:\\Caf\xC3\xA9\\\xF0\x9F\x98\x80.exe";
    static const WCHAR lone[] = {'a', 0xD800, 'b', 0};
    static WCHAR longname[301];
    unsigned long me = GetCurrentProcessId();
    char *name = NULL;
    size_t len = 0;
    long heap0 = heap_live, h0, h1;
    int err, i;

    qpi_mode = TBL_FORWARD;
    qpi_calls = 0;
    err = portres_process_name(me, &name, &len);
    check(err == 0 && name != NULL && len == strlen(name) && strstr(name, "test_windows-") != NULL
              && len > 4 && strcmp(name + len - 4, ".exe") == 0 && qpi_calls == 1
              && qpi_size_in[0] == MAX_PATH + 1,
          "wine: process_name(our PID) -> our .exe path in UTF-8 (one "
          "QueryFullProcessImageNameW call, MAX_PATH + 1 characters)",
          "err %d, name %s, %d calls", err, name ? name : "(null)", qpi_calls);
    if (name != NULL)
        printf("     note: wine: process_name(%lu) = %s\n", me, name);
    portres_process_name_free(name);

    err = portres_process_name(0, &name, &len);
    check(err != 0 && name == NULL && len == 0, "wine: process_name(0) -> an error, no name",
          "err %d", err);
    printf("     note: wine: process_name(0) -> %d\n", err);
    err = portres_process_name(0xFFFFFFF0ul, &name, &len);
    check(err != 0 && name == NULL, "wine: process_name(no such PID) -> an error, no name",
          "err %d", err);
    printf("     note: wine: process_name(0xFFFFFFF0) -> %d\n", err);
    check(portres_process_name(me, NULL, &len) == ERROR_INVALID_PARAMETER,
          "process_name: NULL output -> ERROR_INVALID_PARAMETER", NULL);

    for (pass = 0; pass < 2; pass++) {
        h0 = count_handles();
        for (i = 0; i < 100; i++) {
            err = portres_process_name(i & 1 ? me : 0xFFFFFFF0ul, &name, &len);
            portres_process_name_free(name);
        }
        h1 = count_handles();
        if (h1 == h0 || i != 100)
            break;
        note_lazy_handles(h0, h1);
    }
    check(h1 == h0 && heap_live == heap0,
          "wine: 100 process_name calls leak no process handle, no heap block",
          "handles %ld -> %ld, heap %ld -> %ld", h0, h1, heap0, (long)heap_live);

    /* Scripted names */
    qpi_mode = TBL_SCRIPT;
    qpi_name = cafe;
    qpi_calls = 0;
    err = portres_process_name(me, &name, &len);
    check(err == 0 && name != NULL && len == strlen(cafe_utf8)
              && memcmp(name, cafe_utf8, len + 1) == 0 && qpi_calls == 1,
          "process_name: UTF-16 with a non-BMP character -> exact UTF-8 bytes", "err %d, len %lu",
          err, (unsigned long)len);
    portres_process_name_free(name);

    for (i = 0; i < 300; i++)
        longname[i] = (WCHAR)('a' + i % 26);
    longname[300] = 0;
    qpi_name = longname;
    qpi_calls = 0;
    err = portres_process_name(me, &name, &len);
    check(err == 0 && len == 300 && name != NULL && name[0] == 'a'
              && name[299] == (char)('a' + 299 % 26) && qpi_calls == 2
              && qpi_size_in[1] == PORTRES_LONG_PATH,
          "process_name: a 300-character path -> ERROR_INSUFFICIENT_BUFFER, "
          "then a 32768-character buffer",
          "err %d, len %lu, %d calls", err, (unsigned long)len, qpi_calls);
    portres_process_name_free(name);

    qpi_name = lone;
    err = portres_process_name(me, &name, &len);
    check(err == 0 && name != NULL && name[0] == 'a' && name[len - 1] == 'b',
          "process_name: an unpaired surrogate does not make it fail", "err %d", err);
    if (err == 0) {
        char got[64];
        hex(got, (const unsigned char *)name, len < 16 ? len : 16);
        printf("     note: wine: a, U+D800, b -> %s\n", got);
    }
    portres_process_name_free(name);

    qpi_name = L"";
    err = portres_process_name(me, &name, &len);
    check(err == ERROR_INVALID_DATA && name == NULL,
          "process_name: an empty name -> ERROR_INVALID_DATA, no name", "err %d", err);
    check(heap_live == heap0, "process_name: no heap block left", "%ld -> %ld", heap0,
          (long)heap_live);
    qpi_mode = TBL_FORWARD;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("portres Windows backend test (%d-bit)\n", (int)(sizeof(void *) * 8));
    test_init();
    test_acquire_bytes();
    test_associate_release_bytes();
    test_acquire_failures();
    test_persistent();
    test_persistent_list();
    test_wine_real();
    test_overlapped();
    test_overlapped_wine();
    test_state_mapping();
    test_port_sockets_crafted();
    test_port_sockets_wine();
    test_process_name();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
