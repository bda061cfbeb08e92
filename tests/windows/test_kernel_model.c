/*
 * test_kernel_model.c - the Windows backend's overlapped state machine
 * against a model of the kernel, built with mingw-w64 and run under Wine
 * (x86_64 and i686) by tests/windows/run.sh.
 *
 * Wine answers the port-reservation IOCTLs with one outcome only (pending,
 * then WSAEOPNOTSUPP, without signalling the event).  Windows documents
 * more, and the backend must be right for each of them:
 *
 *   "WSAIoctl function (winsock2.h)": an overlapped call returns 0 when it
 *   completed at once, or SOCKET_ERROR with WSA_IO_PENDING when it was
 *   queued, or another error when it never started;
 *   "WSAGetOverlappedResult function (winsock2.h)": FALSE with
 *   WSA_IO_INCOMPLETE while pending, FALSE with the operation's error once
 *   it failed, and FALSE with an error of its own (WSANOTINITIALISED,
 *   WSAENOTSOCK, WSAEFAULT, ...) when it could not tell at all;
 *   "CancelIoEx function (ioapiset.h)": a cancel is a request -- the
 *   operation may still complete normally, or abort with
 *   ERROR_OPERATION_ABORTED, or (a driver that ignores it) not complete;
 *   "OVERLAPPED structure (minwinbase.h)" / HasOverlappedIoCompleted:
 *   Internal is STATUS_PENDING until the operation is done;
 *   SIO_BASE_HANDLE ("Winsock IOCTLs"): a layered provider's socket is not
 *   the base provider's handle, and CancelIoEx needs the latter.
 *
 * The model: the backend's WSAIoctl, WSAGetOverlappedResult, CancelIoEx,
 * CloseHandle, calloc and free are routed here (the same compile-time seams
 * as test_windows.c: production code calls the real functions directly).
 * Each overlapped IOCTL becomes a "kernel operation" the model owns: the
 * OVERLAPPED, the input and output buffers and the event.  The test then
 * plays one documented outcome, and checks (a) what the backend reports to
 * its caller (the binding: reap / error / take_block / free), and (b) that
 * nothing the model still owns is freed or closed: every free() is checked
 * against the live operations' memory, every CloseHandle() against their
 * events; freed memory is poisoned and kept (never reused), so a late
 * completion by the model can only land in memory still allocated.
 *
 * Output: one line per check, then "N passed, M failed"; exit status 1 on
 * any failure.
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <iphlpapi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef STATUS_SUCCESS
#define STATUS_SUCCESS ((DWORD)0x00000000L)
#endif
#define K_STATUS_CANCELLED ((DWORD)0xC0000120L)
#define K_STATUS_ACCESS_DENIED ((DWORD)0xC0000022L)
#define K_STATUS_NOT_SUPPORTED ((DWORD)0xC00000BBL)

/* ---- the seams, declared before the backend is included ---------------- */

int WSAAPI model_WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD cb_in, LPVOID out, DWORD cb_out,
                          LPDWORD returned, LPWSAOVERLAPPED ov,
                          LPWSAOVERLAPPED_COMPLETION_ROUTINE routine);
BOOL WSAAPI model_WSAGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED ov, LPDWORD bytes, BOOL wait,
                                         LPDWORD flags);
BOOL WINAPI model_CancelIoEx(HANDLE h, LPOVERLAPPED ov);
BOOL WINAPI model_CloseHandle(HANDLE h);
BOOL WINAPI model_GetVersionExW(LPOSVERSIONINFOW info);
static void *model_calloc(size_t n, size_t size);
static void model_free(void *p);

#define WSAIoctl model_WSAIoctl
#define WSAGetOverlappedResult model_WSAGetOverlappedResult
#define CancelIoEx model_CancelIoEx
#define CloseHandle model_CloseHandle
#define GetVersionExW model_GetVersionExW
#define calloc model_calloc
#define free model_free

#include "backend_sources.h"

#undef WSAIoctl
#undef WSAGetOverlappedResult
#undef CancelIoEx
#undef CloseHandle
#undef GetVersionExW
#undef calloc
#undef free

/* ---- reporting --------------------------------------------------------- */

static int n_passed, n_failed;

static void check(int ok, const char *what, const char *detail_fmt, ...)
{
    printf("%s - %s", ok ? "ok  " : "FAIL", what);
    if (!ok && detail_fmt != NULL) {
        va_list ap;
        printf(" (");
        va_start(ap, detail_fmt);
        vprintf(detail_fmt, ap);
        va_end(ap);
        printf(")");
    }
    printf("\n");
    fflush(stdout);
    if (ok)
        n_passed++;
    else
        n_failed++;
}

/* ---- the backend's heap: tracked, poisoned on free, never reused -------- */

typedef struct {
    unsigned char *p;
    size_t size;
    int live;
} allocation;

#define MAX_ALLOCS 4096
static allocation allocs[MAX_ALLOCS];
static int n_allocs;
static CRITICAL_SECTION model_lock;

static void *model_calloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > (size_t)-1 / size)
        return NULL;
    p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        return NULL;
    EnterCriticalSection(&model_lock);
    if (n_allocs < MAX_ALLOCS) {
        allocs[n_allocs].p = (unsigned char *)p;
        allocs[n_allocs].size = n * size;
        allocs[n_allocs].live = 1;
        n_allocs++;
    }
    LeaveCriticalSection(&model_lock);
    return p;
}

static long heap_live(void)
{
    long n = 0;
    int i;

    EnterCriticalSection(&model_lock);
    for (i = 0; i < n_allocs; i++)
        n += allocs[i].live;
    LeaveCriticalSection(&model_lock);
    return n;
}

/* Is [P, P+N) inside a live allocation of the backend? */
static int heap_alive(const void *p, size_t n)
{
    const unsigned char *c = (const unsigned char *)p;
    int i, alive = 0;

    EnterCriticalSection(&model_lock);
    for (i = 0; i < n_allocs; i++)
        if (allocs[i].live && c >= allocs[i].p && c + n <= allocs[i].p + allocs[i].size)
            alive = 1;
    LeaveCriticalSection(&model_lock);
    return alive;
}

/* ---- the kernel's operations ------------------------------------------- */

enum cancel_mode {
    CANCEL_ABORTS,       /* completes with STATUS_CANCELLED at once */
    CANCEL_ABORTS_LATER, /* ... from another thread, 40 ms later */
    CANCEL_COMPLETES_OK, /* the race: completes successfully anyway */
    CANCEL_IGNORED       /* the request is taken, nothing completes */
};

typedef struct {
    int live;             /* the model (the kernel) owns everything below */
    SOCKET s;             /* the socket the IOCTL was issued on */
    SOCKET cancel_handle; /* the handle CancelIoEx must be given */
    DWORD code;
    LPWSAOVERLAPPED ov;
    HANDLE event; /* hEvent without its low-order bit */
    void *in;
    DWORD cb_in;
    void *out;
    DWORD cb_out;
    int cancel_mode;
    int cancels; /* CancelIoEx calls that reached it */
    DWORD late_ms;
} kop;

#define MAX_KOPS 64
static kop kops[MAX_KOPS];
static int n_kops;

/* Violations of the kernel's ownership, counted and described. */
static volatile LONG violations;
static char violation_text[256];

static void violation(const char *what, int k)
{
    InterlockedIncrement(&violations);
    snprintf(violation_text, sizeof(violation_text), "%s (operation %d)", what, k);
}

/* The script for the next IOCTL. */
enum start_mode {
    START_FORWARD, /* not one of ours: the real WSAIoctl */
    START_OK,      /* completes at once */
    START_FAIL,    /* never starts: an immediate error */
    START_PENDING  /* queued; the test completes it */
};
static int next_start = START_FORWARD;
static int next_fail_error = WSAEADDRINUSE;
static DWORD next_bytes = 16; /* bytes an immediate success reports */
static int next_cancel = CANCEL_ABORTS;
static DWORD next_late_ms = 40;
/* Non-zero: WSAGetOverlappedResult fails with this, whatever the state. */
static int gor_failure;
/* Not INVALID_SOCKET: sockets sit on a layered provider whose base handle
 * is this one (SIO_BASE_HANDLE returns it, CancelIoEx needs it). */
static SOCKET lsp_base = INVALID_SOCKET;
static int base_handle_queries;
/* The synchronous reservation IOCTLs: how many, and the last one's socket
 * and code. */
static int sync_calls;
static SOCKET sync_socket;
static DWORD sync_code;

/* The crafted INET_PORT_RESERVATION_INSTANCE: StartPort 50000 in network
 * order, NumberOfPorts 10, padding, Token 0x1122334455667788. */
static const unsigned char crafted_instance[16] = {0xC3, 0x50, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00,
                                                   0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
static const uint64_t crafted_token = 0x1122334455667788ULL;

static int is_reservation_code(DWORD code)
{
    return code == SIO_ACQUIRE_PORT_RESERVATION || code == SIO_ASSOCIATE_PORT_RESERVATION
           || code == SIO_RELEASE_PORT_RESERVATION;
}

static HANDLE untagged(HANDLE h)
{
    return (HANDLE)((ULONG_PTR)h & ~(ULONG_PTR)1);
}

/* Complete operation K as the kernel would: output (DATA, 16 bytes, when
 * not NULL), the byte count N it reports, then the status word last, then
 * the event (unless SIGNAL is 0, Wine's way). */
static void kernel_complete(int k, DWORD status, const void *data, DWORD n, int signal)
{
    kop *op = &kops[k];

    EnterCriticalSection(&model_lock);
    if (!op->live) {
        LeaveCriticalSection(&model_lock);
        return;
    }
    if (!heap_alive(op->ov, sizeof(*op->ov)) || (op->in != NULL && !heap_alive(op->in, op->cb_in))
        || (op->out != NULL && !heap_alive(op->out, op->cb_out)))
        violation("completion found the OVERLAPPED or a buffer freed", k);
    else {
        if (data != NULL && op->out != NULL && op->cb_out >= 16)
            memcpy(op->out, data, 16);
        op->ov->InternalHigh = n;
        MemoryBarrier();
        op->ov->Internal = status;
        if (signal && !SetEvent(op->event))
            violation("completion found the event closed", k);
    }
    op->live = 0;
    LeaveCriticalSection(&model_lock);
}

static DWORD WINAPI late_cancel_thread(LPVOID arg)
{
    int k = (int)(INT_PTR)arg;
    Sleep(kops[k].late_ms);
    kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
    return 0;
}

static int find_kop(const void *ov)
{
    int k;
    for (k = n_kops - 1; k >= 0; k--)
        if ((const void *)kops[k].ov == ov)
            return k;
    return -1;
}

int WSAAPI model_WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD cb_in, LPVOID out, DWORD cb_out,
                          LPDWORD returned, LPWSAOVERLAPPED ov,
                          LPWSAOVERLAPPED_COMPLETION_ROUTINE routine)
{
    int mode = next_start, k;

    if (code == SIO_BASE_HANDLE && lsp_base != INVALID_SOCKET) {
        base_handle_queries++;
        if (out == NULL || cb_out < sizeof(SOCKET)) {
            WSASetLastError(WSAEFAULT);
            return SOCKET_ERROR;
        }
        memcpy(out, &lsp_base, sizeof(SOCKET));
        if (returned != NULL)
            *returned = (DWORD)sizeof(SOCKET);
        return 0;
    }
    if (!is_reservation_code(code) || mode == START_FORWARD)
        return WSAIoctl(s, code, in, cb_in, out, cb_out, returned, ov, routine);
    if (mode == START_FAIL) {
        if (ov == NULL) {
            sync_calls++;
            sync_socket = s;
            sync_code = code;
        }
        WSASetLastError(next_fail_error);
        return SOCKET_ERROR;
    }
    if (ov == NULL) { /* synchronous */
        sync_calls++;
        sync_socket = s;
        sync_code = code;
        if (mode != START_OK) {
            WSASetLastError(WSAEINVAL);
            return SOCKET_ERROR;
        }
        if (code == SIO_ACQUIRE_PORT_RESERVATION && out != NULL && cb_out >= 16)
            memcpy(out, crafted_instance, 16);
        if (returned != NULL)
            *returned = code == SIO_ACQUIRE_PORT_RESERVATION ? next_bytes : 0;
        return 0;
    }
    if (n_kops == MAX_KOPS) {
        WSASetLastError(WSAENOBUFS);
        return SOCKET_ERROR;
    }
    k = n_kops++;
    memset(&kops[k], 0, sizeof(kops[k]));
    kops[k].live = 1;
    kops[k].s = s;
    kops[k].cancel_handle = lsp_base != INVALID_SOCKET ? lsp_base : s;
    kops[k].code = code;
    kops[k].ov = ov;
    kops[k].event = untagged(ov->hEvent);
    kops[k].in = in;
    kops[k].cb_in = cb_in;
    kops[k].out = out;
    kops[k].cb_out = cb_out;
    kops[k].cancel_mode = next_cancel;
    kops[k].late_ms = next_late_ms;
    if (!heap_alive(ov, sizeof(*ov)))
        violation("WSAIoctl given an OVERLAPPED outside the backend's heap", k);
    ov->Internal = STATUS_PENDING;
    ov->InternalHigh = 0;
    if (mode == START_OK) {
        /* Completed at once: the kernel fills in the OVERLAPPED and
         * signals the event as for any completion. */
        kernel_complete(k, STATUS_SUCCESS,
                        code == SIO_ACQUIRE_PORT_RESERVATION ? crafted_instance : NULL,
                        code == SIO_ACQUIRE_PORT_RESERVATION ? next_bytes : 0, 1);
        if (returned != NULL)
            *returned = code == SIO_ACQUIRE_PORT_RESERVATION ? next_bytes : 0;
        return 0;
    }
    WSASetLastError(WSA_IO_PENDING);
    return SOCKET_ERROR;
}

/* The Winsock error of a completion status (what WSAGetOverlappedResult
 * reports for the statuses used here). */
static int wsa_error_of(DWORD status)
{
    switch (status) {
    case K_STATUS_CANCELLED:
        return WSA_OPERATION_ABORTED;
    case K_STATUS_ACCESS_DENIED:
        return WSAEACCES;
    case K_STATUS_NOT_SUPPORTED:
        return WSAEOPNOTSUPP;
    default:
        return WSAEINVAL;
    }
}

BOOL WSAAPI model_WSAGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED ov, LPDWORD bytes, BOOL wait,
                                         LPDWORD flags)
{
    int k = find_kop(ov);
    DWORD status;

    (void)s;
    if (k < 0)
        return WSAGetOverlappedResult(s, ov, bytes, wait, flags);
    if (!heap_alive(ov, sizeof(*ov))) {
        violation("WSAGetOverlappedResult on a freed OVERLAPPED", k);
        WSASetLastError(WSAEFAULT);
        return FALSE;
    }
    if (wait)
        violation("WSAGetOverlappedResult with fWait TRUE (would block)", k);
    if (gor_failure) {
        WSASetLastError(gor_failure);
        return FALSE;
    }
    status = (DWORD) * (volatile ULONG_PTR *)&ov->Internal;
    if (status == (DWORD)STATUS_PENDING) {
        WSASetLastError(WSA_IO_INCOMPLETE);
        return FALSE;
    }
    if (bytes != NULL)
        *bytes = (DWORD)ov->InternalHigh;
    if (flags != NULL)
        *flags = 0;
    if (status == STATUS_SUCCESS)
        return TRUE;
    WSASetLastError(wsa_error_of(status));
    return FALSE;
}

BOOL WINAPI model_CancelIoEx(HANDLE h, LPOVERLAPPED ov)
{
    int k = find_kop(ov);
    kop *op;

    if (k < 0 || !kops[k].live) {
        SetLastError(ERROR_NOT_FOUND);
        return FALSE;
    }
    op = &kops[k];
    if ((SOCKET)h != op->cancel_handle) {
        /* A layered provider's socket: no I/O of ours on this handle. */
        SetLastError(ERROR_NOT_FOUND);
        return FALSE;
    }
    op->cancels++;
    switch (op->cancel_mode) {
    case CANCEL_ABORTS:
        kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
        break;
    case CANCEL_ABORTS_LATER: {
        HANDLE t = CreateThread(NULL, 0, late_cancel_thread, (LPVOID)(INT_PTR)k, 0, NULL);
        if (t != NULL)
            CloseHandle(t);
        break;
    }
    case CANCEL_COMPLETES_OK:
        kernel_complete(k, STATUS_SUCCESS,
                        op->code == SIO_ACQUIRE_PORT_RESERVATION ? crafted_instance : NULL,
                        op->code == SIO_ACQUIRE_PORT_RESERVATION ? 16 : 0, 1);
        break;
    default: /* CANCEL_IGNORED */
        break;
    }
    return TRUE;
}

BOOL WINAPI model_CloseHandle(HANDLE h)
{
    int k;

    EnterCriticalSection(&model_lock);
    for (k = 0; k < n_kops; k++)
        if (kops[k].live && kops[k].event == h)
            violation("CloseHandle on the event of a live operation", k);
    LeaveCriticalSection(&model_lock);
    return CloseHandle(h);
}

static void model_free(void *p)
{
    int i, k;
    unsigned char *c = (unsigned char *)p;

    if (p == NULL)
        return;
    EnterCriticalSection(&model_lock);
    for (i = 0; i < n_allocs; i++)
        if (allocs[i].p == c && allocs[i].live)
            break;
    if (i == n_allocs) {
        LeaveCriticalSection(&model_lock);
        violation("free of memory the backend did not allocate (or twice)", -1);
        return;
    }
    for (k = 0; k < n_kops; k++) {
        const unsigned char *ov = (const unsigned char *)kops[k].ov;
        const unsigned char *in = (const unsigned char *)kops[k].in;
        const unsigned char *out = (const unsigned char *)kops[k].out;
        size_t size = allocs[i].size;
        if (!kops[k].live)
            continue;
        if ((ov >= c && ov < c + size) || (in != NULL && in >= c && in < c + size)
            || (out != NULL && out >= c && out < c + size))
            violation("free of an OVERLAPPED or buffer the kernel owns", k);
    }
    allocs[i].live = 0;
    memset(c, 0xDB, allocs[i].size); /* poison; never handed out again */
    LeaveCriticalSection(&model_lock);
}

/* ---- helpers ----------------------------------------------------------- */

static void reset_model(void)
{
    next_start = START_PENDING;
    next_fail_error = WSAEADDRINUSE;
    next_bytes = 16;
    next_cancel = CANCEL_ABORTS;
    next_late_ms = 40;
    gor_failure = 0;
    lsp_base = INVALID_SOCKET;
    base_handle_queries = 0;
    violations = 0;
    violation_text[0] = '\0';
}

static SOCKET new_socket(int type)
{
    return WSASocketW(AF_INET, type, type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP, NULL, 0,
                      WSA_FLAG_OVERLAPPED);
}

/* WSAENOTSOCK once S has been closed. */
static int socket_error(SOCKET s)
{
    int type = 0, len = (int)sizeof(type);
    return getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &len) == 0 ? 0 : WSAGetLastError();
}

static int no_violation(void)
{
    return violations == 0;
}

/* Start an ASSOCIATE on a new TCP socket (*S); the last kop is its. */
static int start_associate(SOCKET *s, portres_overlapped **ov)
{
    *s = new_socket(SOCK_STREAM);
    *ov = NULL;
    if (*s == INVALID_SOCKET)
        return WSAGetLastError();
    return portres_ov_start(PORTRES_OP_ASSOCIATE, *s, crafted_token, 0, 0, 0, ov);
}

static int start_acquire(portres_overlapped **ov)
{
    *ov = NULL;
    return portres_ov_start(PORTRES_OP_ACQUIRE, INVALID_SOCKET, 0, PORTRES_TCP, 50000, 10, ov);
}

/* ---- the outcomes ------------------------------------------------------ */

static void test_immediate(void)
{
    portres_overlapped *ov;
    portres_block *b;
    portres_block_info info;
    long heap0 = heap_live();
    int err, k;

    reset_model();
    next_start = START_OK;
    err = start_acquire(&ov);
    k = n_kops - 1;
    check(err == 0 && ov != NULL && portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0
              && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_SIGNALLED,
          "immediate success: done at once, no error, event signalled", "err %d", err);
    if (err || ov == NULL)
        return;
    b = portres_ov_take_block(ov);
    if (b != NULL)
        portres_block_get_info(b, &info);
    check(b != NULL && info.start == 50000 && info.count == 10 && info.token == crafted_token,
          "immediate success: the block 50000/10, token 0x1122334455667788", NULL);
    next_start = START_OK; /* the release of close() */
    portres_block_free(b);
    check(portres_ov_free(ov, 0) == 0 && heap_live() == heap0 && no_violation() && !kops[k].live,
          "immediate success: freed, nothing left, ownership kept", "%s", violation_text);

    /* A success reporting fewer bytes than an INET_PORT_RESERVATION_INSTANCE
     * holds: the output cannot be trusted. */
    reset_model();
    next_start = START_OK;
    next_bytes = 8;
    err = start_acquire(&ov);
    check(err == 0 && ov != NULL && portres_ov_reap(ov) == 1
              && portres_ov_error(ov) == ERROR_INVALID_DATA && portres_ov_take_block(ov) == NULL,
          "immediate success with 8 of 16 bytes: ERROR_INVALID_DATA, no block", "err %d error %d",
          err, ov ? portres_ov_error(ov) : -1);
    if (ov != NULL)
        portres_ov_free(ov, 0);
    check(heap_live() == heap0 && no_violation(), "short immediate success: nothing left", "%s",
          violation_text);

    /* The synchronous form, same check. */
    reset_model();
    next_start = START_OK;
    next_bytes = 8;
    {
        portres_block *sb = (portres_block *)1;
        unsigned conflict = 1;
        err = portres_block_acquire(PORTRES_TCP, 50000, 10, &sb, &conflict);
        check(err == ERROR_INVALID_DATA && sb == NULL && heap_live() == heap0,
              "synchronous acquire returning 8 of 16 bytes: ERROR_INVALID_DATA", "err %d", err);
        if (err == 0 && sb != NULL)
            portres_block_free(sb); /* (the defect) keep going */
    }

    reset_model();
    next_start = START_FAIL;
    next_fail_error = WSAEACCES;
    ov = (portres_overlapped *)1;
    err = start_acquire(&ov);
    check(err == WSAEACCES && ov == NULL && heap_live() == heap0,
          "immediate error: returned, *out NULL, nothing left", "err %d", err);
}

static void test_pending_then(void)
{
    portres_overlapped *ov;
    portres_block *b;
    portres_block_info info;
    long heap0 = heap_live();
    SOCKET s;
    int err, k;

    /* pending, then success */
    reset_model();
    err = start_acquire(&ov);
    k = n_kops - 1;
    check(err == 0 && ov != NULL && kops[k].live && portres_ov_reap(ov) == 0
              && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_TIMEOUT,
          "pending: not done, event not signalled", "err %d", err);
    if (err || ov == NULL)
        return;
    kernel_complete(k, STATUS_SUCCESS, crafted_instance, 16, 1);
    check(portres_ov_wait_event(ov, 1000) == PORTRES_WAIT_SIGNALLED && portres_ov_reap(ov) == 1
              && portres_ov_error(ov) == 0,
          "pending then success: signalled, done, no error", "error %d", portres_ov_error(ov));
    b = portres_ov_take_block(ov);
    if (b != NULL)
        portres_block_get_info(b, &info);
    check(b != NULL && info.start == 50000 && info.token == crafted_token,
          "pending then success: the block", NULL);
    next_start = START_OK;
    portres_block_free(b);
    portres_ov_free(ov, 0);
    check(heap_live() == heap0 && no_violation(),
          "pending then success: nothing left, ownership kept", "%s", violation_text);

    /* pending, then success without the event (Wine's way) */
    reset_model();
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        kernel_complete(k, STATUS_SUCCESS, NULL, 0, 0);
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0
                  && portres_ov_wait_event(ov, 0) == PORTRES_WAIT_SIGNALLED,
              "completed without signalling: reap sees it and sets the event", "error %d",
              portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }
    closesocket(s);

    /* pending, then success with a short byte count */
    reset_model();
    err = start_acquire(&ov);
    k = n_kops - 1;
    if (err == 0) {
        SOCKET acq = kops[k].s;
        kernel_complete(k, STATUS_SUCCESS, crafted_instance, 4, 1);
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == ERROR_INVALID_DATA
                  && portres_ov_take_block(ov) == NULL && socket_error(acq) == WSAENOTSOCK,
              "pending then success with 4 of 16 bytes: ERROR_INVALID_DATA, "
              "socket closed",
              "error %d", portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }

    /* pending, then an error */
    reset_model();
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        kernel_complete(k, K_STATUS_ACCESS_DENIED, NULL, 0, 1);
        check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == WSAEACCES,
              "pending then error: done with WSAEACCES (10013)", "error %d", portres_ov_error(ov));
        check(portres_ov_free(ov, 0) == 0 && socket_error(s) == 0,
              "pending then error: freed; the caller's socket stays open", NULL);
    }
    closesocket(s);
    check(heap_live() == heap0 && no_violation(), "pending outcomes: nothing left, ownership kept",
          "%s", violation_text);
}

static void test_cancel(void)
{
    portres_overlapped *ov;
    portres_block *b;
    long heap0 = heap_live();
    DWORD t0, elapsed;
    SOCKET s;
    int err, k, ret;

    /* cancel that aborts */
    reset_model();
    next_cancel = CANCEL_ABORTS;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        err = portres_ov_cancel(ov);
        check(err == 0 && kops[k].cancels == 1 && portres_ov_reap(ov) == 1
                  && portres_ov_error(ov) == WSA_OPERATION_ABORTED,
              "cancel that aborts: WSA_OPERATION_ABORTED (995)", "err %d cancels %d error %d", err,
              kops[k].cancels, portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }
    closesocket(s);

    /* cancel that still completes successfully: the result stands */
    reset_model();
    next_cancel = CANCEL_COMPLETES_OK;
    err = start_associate(&s, &ov);
    if (err == 0) {
        err = portres_ov_cancel(ov);
        check(err == 0 && portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0,
              "cancel that completes anyway (associate): success, no error", "err %d error %d", err,
              portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }
    closesocket(s);
    reset_model();
    next_cancel = CANCEL_COMPLETES_OK;
    err = start_acquire(&ov);
    if (err == 0) {
        err = portres_ov_cancel(ov);
        b = portres_ov_reap(ov) ? portres_ov_take_block(ov) : NULL;
        check(err == 0 && b != NULL,
              "cancel that completes anyway (acquire): the block is handed out", "err %d error %d",
              err, portres_ov_error(ov));
        next_start = START_OK;
        portres_block_free(b);
        portres_ov_free(ov, 0);
    }

    /* free while pending, the abort arriving later: waited for, then freed */
    reset_model();
    next_cancel = CANCEL_ABORTS_LATER;
    next_late_ms = 60;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        t0 = GetTickCount();
        ret = portres_ov_free(ov, 2000);
        elapsed = GetTickCount() - t0;
        check(ret == 0 && !kops[k].live && elapsed >= 40 && no_violation(),
              "free while pending, cancel completing 60 ms later: waits, frees",
              "ret %d after %lu ms %s", ret, (unsigned long)elapsed, violation_text);
    }
    closesocket(s);
    check(heap_live() == heap0 && no_violation(), "cancel outcomes: nothing left, ownership kept",
          "%s", violation_text);
}

static void test_never_signalled(void)
{
    portres_overlapped *ov;
    long heap0 = heap_live();
    SOCKET s;
    int err, k, ret;

    reset_model();
    next_cancel = CANCEL_IGNORED;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err != 0) {
        check(0, "never signalled: started", "err %d", err);
        return;
    }
    check(portres_ov_wait_event(ov, 30) == PORTRES_WAIT_TIMEOUT && portres_ov_reap(ov) == 0,
          "never signalled: wait times out, still pending", NULL);
    ret = portres_ov_free(ov, 100);
    check(ret == 1 && kops[k].live && kops[k].cancels >= 1,
          "never signalled: free cancels, waits the grace, then leaks (1)", "ret %d cancels %d",
          ret, kops[k].cancels);
    check(heap_alive(kops[k].ov, sizeof(*kops[k].ov)) && heap_alive(kops[k].in, kops[k].cb_in)
              && no_violation(),
          "never signalled: OVERLAPPED, buffers and event all left alive", "%s", violation_text);
    /* The kernel lets go at last: it writes into memory still allocated. */
    kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
    check(no_violation(), "never signalled: the late completion is harmless", "%s", violation_text);
    check(heap_live() == heap0 + 1, "never signalled: exactly one block leaked", "%ld -> %ld",
          heap0, heap_live());
    closesocket(s);
}

static void test_undeterminable(void)
{
    portres_overlapped *ov;
    long heap0 = heap_live();
    SOCKET s;
    int err, k, ret;

    /* WSAGetOverlappedResult cannot tell (WSANOTINITIALISED) while the
     * operation is pending: it is still the kernel's. */
    reset_model();
    next_cancel = CANCEL_IGNORED;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err != 0) {
        check(0, "undeterminable: started", "err %d", err);
        return;
    }
    gor_failure = WSANOTINITIALISED;
    ret = portres_ov_reap(ov);
    check(ret == 0, "undeterminable while pending (WSANOTINITIALISED): not done",
          "reap said done, error %d", portres_ov_error(ov));
    ret = portres_ov_free(ov, 50);
    check(ret == 1 && kops[k].live && no_violation(),
          "undeterminable while pending: free leaks, frees nothing the kernel "
          "owns",
          "ret %d %s", ret, violation_text);
    kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
    check(no_violation(), "undeterminable: the late completion is harmless", "%s", violation_text);
    heap0 = heap_live();
    closesocket(s);

    /* ... and once the OVERLAPPED says it is done, its status decides. */
    reset_model();
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        gor_failure = WSAEFAULT;
        kernel_complete(k, STATUS_SUCCESS, NULL, 0, 1);
        ret = portres_ov_reap(ov);
        check(ret == 1 && portres_ov_error(ov) == 0,
              "undeterminable (WSAEFAULT) after a success: done, no error "
              "(read from the OVERLAPPED)",
              "error %d", portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }
    closesocket(s);
    reset_model();
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        gor_failure = WSANOTINITIALISED;
        kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
        ret = portres_ov_reap(ov);
        check(ret == 1 && portres_ov_error(ov) == WSA_OPERATION_ABORTED,
              "undeterminable after an abort: done, WSA_OPERATION_ABORTED", "error %d",
              portres_ov_error(ov));
        portres_ov_free(ov, 0);
    }
    closesocket(s);
    check(heap_live() == heap0 && no_violation(),
          "undeterminable outcomes: nothing else left, ownership kept", "%s", violation_text);
}

static void test_layered_provider(void)
{
    portres_overlapped *ov;
    long heap0 = heap_live();
    SOCKET s, base;
    DWORD t0, elapsed;
    int err, k, ret;

    /* The application's socket belongs to a layered provider; the I/O is
     * the base provider's, which only its handle can cancel. */
    base = new_socket(SOCK_STREAM);
    reset_model();
    lsp_base = base;
    next_cancel = CANCEL_ABORTS;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err != 0) {
        check(0, "layered provider: started", "err %d", err);
        closesocket(base);
        return;
    }
    err = portres_ov_cancel(ov);
    ret = portres_ov_reap(ov);
    check(err == 0 && kops[k].cancels == 1 && ret == 1
              && portres_ov_error(ov) == WSA_OPERATION_ABORTED,
          "layered provider: cancel reaches the base handle (SIO_BASE_HANDLE)",
          "err %d cancels %d base queries %d", err, kops[k].cancels, base_handle_queries);
    portres_ov_free(ov, 0);
    closesocket(s);

    reset_model();
    lsp_base = base;
    next_cancel = CANCEL_ABORTS;
    err = start_associate(&s, &ov);
    k = n_kops - 1;
    if (err == 0) {
        t0 = GetTickCount();
        ret = portres_ov_free(ov, 1000);
        elapsed = GetTickCount() - t0;
        check(ret == 0 && !kops[k].live && elapsed < 500,
              "layered provider: free cancels at once, no grace wait, no leak",
              "ret %d after %lu ms", ret, (unsigned long)elapsed);
        if (ret == 1)
            kernel_complete(k, K_STATUS_CANCELLED, NULL, 0, 1);
    }
    closesocket(s);
    closesocket(base);
    check(no_violation(), "layered provider: ownership kept", "%s", violation_text);
    (void)heap0;
}

/* ---- beyond the state machine ------------------------------------------ */

/* What an application without a Windows 10 manifest gets from GetVersionExW
 * ("GetVersionExW function (sysinfoapi.h)": the manifested version, 6.2
 * build 9200 when there is none). */
BOOL WINAPI model_GetVersionExW(LPOSVERSIONINFOW info)
{
    if (info == NULL || info->dwOSVersionInfoSize < sizeof(OSVERSIONINFOW)) {
        SetLastError(ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    info->dwMajorVersion = 6;
    info->dwMinorVersion = 2;
    info->dwBuildNumber = 9200;
    info->dwPlatformId = VER_PLATFORM_WIN32_NT;
    info->szCSDVersion[0] = 0;
    return TRUE;
}

typedef LONG(WINAPI *rtl_get_version_fn)(PRTL_OSVERSIONINFOW);

static void test_windows_build(void)
{
    RTL_OSVERSIONINFOW real;
    rtl_get_version_fn get = NULL;
    unsigned long major = 0, minor = 0, build = 0;
    FARPROC p = GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "RtlGetVersion");
    int err;

    memcpy(&get, &p, sizeof(get));
    memset(&real, 0, sizeof(real));
    real.dwOSVersionInfoSize = sizeof(real);
    check(get != NULL && get(&real) == 0, "RtlGetVersion answers here", NULL);
    err = portres_windows_build(&major, &minor, &build);
    check(err == 0 && major == real.dwMajorVersion && minor == real.dwMinorVersion
              && build == real.dwBuildNumber && build != 9200,
          "windows_build: the real version (RtlGetVersion), not the "
          "manifest-emulated 6.2.9200 of GetVersionExW",
          "err %d: %lu.%lu.%lu, RtlGetVersion %lu.%lu.%lu", err, major, minor, build,
          (unsigned long)real.dwMajorVersion, (unsigned long)real.dwMinorVersion,
          (unsigned long)real.dwBuildNumber);
    printf("     note: RtlGetVersion here: %lu.%lu.%lu\n", (unsigned long)real.dwMajorVersion,
           (unsigned long)real.dwMinorVersion, (unsigned long)real.dwBuildNumber);
}

static void test_socket_width(void)
{
    portres_socket s = 0;
    int err;

    err = portres_socket_from_u64(0x12345678ULL, &s);
    check(err == 0 && s == (SOCKET)0x12345678UL, "socket_from_u64: a 32-bit handle value passes",
          "err %d", err);
    s = 0;
    err = portres_socket_from_u64(0x100000000ULL, &s);
#ifdef _WIN64
    check(err == 0 && (unsigned long long)s == 0x100000000ULL,
          "socket_from_u64: 2^32 fits a 64-bit SOCKET", "err %d", err);
#else
    check(err == ERROR_ARITHMETIC_OVERFLOW && s == 0,
          "socket_from_u64: 2^32 does not fit a 32-bit SOCKET: "
          "ERROR_ARITHMETIC_OVERFLOW, never truncated to 0",
          "err %d s %lu", err, (unsigned long)s);
#endif
    err = portres_socket_from_u64((unsigned long long)INVALID_SOCKET, &s);
    check(err == WSAENOTSOCK, "socket_from_u64: INVALID_SOCKET is refused", "err %d", err);
}

static void test_release_closes_the_block(void)
{
    portres_block *b = NULL, *b2 = NULL;
    long heap0 = heap_live();
    SOCKET acq, other;
    int err, calls;

    reset_model();
    next_start = START_OK;
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b, NULL);
    acq = sync_socket;
    if (err != 0 || b == NULL) {
        check(0, "release: acquired", "err %d", err);
        return;
    }
    other = new_socket(SOCK_STREAM);
    /* release(sock, token) failing: the block stays as it was */
    next_start = START_FAIL;
    next_fail_error = WSAEINVAL;
    err = portres_release(other, crafted_token);
    check(err == WSAEINVAL && !portres_block_closed(b) && socket_error(acq) == 0,
          "release failing: its error, the block still open", "err %d", err);
    /* ... succeeding: the reservation is gone, and so is the block */
    next_start = START_OK;
    err = portres_release(other, crafted_token);
    check(err == 0 && sync_code == SIO_RELEASE_PORT_RESERVATION && portres_block_closed(b),
          "release(sock, token) of a block's token marks the block closed", "err %d closed %d", err,
          portres_block_closed(b));
    check(socket_error(acq) == WSAENOTSOCK, "release: the block's acquiring socket is closed too",
          "%d", socket_error(acq));
    calls = sync_calls;
    err = portres_block_close(b);
    check(err == 0 && sync_calls == calls,
          "close() after release: no second SIO_RELEASE_PORT_RESERVATION", "err %d, %d more calls",
          err, sync_calls - calls);
    portres_block_free(b);
    /* a token no block has: released, nothing else touched */
    err = portres_block_acquire(PORTRES_UDP, 50000, 10, &b2, NULL);
    acq = sync_socket;
    if (err == 0) {
        err = portres_release(other, crafted_token ^ 1);
        check(err == 0 && !portres_block_closed(b2) && socket_error(acq) == 0,
              "release of another token leaves the block open", "err %d", err);
        portres_block_free(b2);
    }
    /* ... and the overlapped form, once it completes successfully */
    reset_model();
    next_start = START_OK;
    err = portres_block_acquire(PORTRES_TCP, 50000, 10, &b2, NULL);
    acq = sync_socket;
    if (err == 0) {
        portres_overlapped *ov = NULL;
        next_start = START_PENDING;
        err = portres_ov_start(PORTRES_OP_RELEASE, other, crafted_token, 0, 0, 0, &ov);
        check(err == 0 && !portres_block_closed(b2),
              "overlapped release pending: the block still open", "err %d", err);
        if (err == 0) {
            kernel_complete(n_kops - 1, STATUS_SUCCESS, NULL, 0, 1);
            check(portres_ov_reap(ov) == 1 && portres_ov_error(ov) == 0 && portres_block_closed(b2)
                      && socket_error(acq) == WSAENOTSOCK,
                  "overlapped release completed: the block is closed, its socket too", NULL);
            portres_ov_free(ov, 0);
        }
        portres_block_free(b2);
    }
    closesocket(other);
    check(heap_live() == heap0, "release: nothing left", "%ld -> %ld", heap0, heap_live());
}

int main(void)
{
    int err;

    setvbuf(stdout, NULL, _IONBF, 0);
    InitializeCriticalSection(&model_lock);
    printf("portres Windows backend against a kernel model (%d-bit)\n", (int)(sizeof(void *) * 8));
    err = portres_backend_init();
    check(err == 0, "backend_init", "err %d", err);
    test_immediate();
    test_pending_then();
    test_cancel();
    test_never_signalled();
    test_undeterminable();
    test_layered_provider();
    test_release_closes_the_block();
    test_windows_build();
    test_socket_width();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
