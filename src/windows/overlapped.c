/*
 * windows/overlapped.c - the IOCTLs in overlapped mode.
 */
#ifdef _WIN32

#include "windows.h"

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
    HANDLE event; /* manual-reset; ov.hEvent is this | 1 */
    SOCKET s;     /* the socket the IOCTL was issued on */
    int op;       /* enum portres_op, or OP_TEST */
    int protocol;
    volatile LONG done; /* the result below is recorded */
    int error;
    int cancel_error; /* OP_TEST: its result once cancelled */
    DWORD returned;
    union {
        INET_PORT_RANGE range;
        INET_PORT_RESERVATION_TOKEN token;
    } in;
    portres_reservation_instance out;
    portres_block *block; /* ACQUIRE: allocated up front; the result
                               once done without error, until taken */
};

/* The IOCTL an operation issues. */
static const char *ov_call(int op)
{
    switch (op) {
    case -1:
        return "overlapped operation"; /* portres_ov_start_pending */
    case PORTRES_OP_ACQUIRE:
        return PORTRES_CALL_ACQUIRE;
    case PORTRES_OP_ASSOCIATE:
        return PORTRES_CALL_ASSOCIATE;
    default:
        return PORTRES_CALL_RELEASE;
    }
}

/* The operation of portres_ov_start_pending: no IOCTL, pending until
 * cancelled. */
#define OP_TEST (-1)

/* Record the result of a finished operation and signal the event.  BYTES:
 * what the kernel says it wrote to the output buffer. */
static void ov_finish(portres_overlapped *ov, int err, DWORD bytes)
{
    if (ov->op == PORTRES_OP_ACQUIRE) {
        /* [ACQ]: the output is an INET_PORT_RESERVATION_INSTANCE; fewer
         * bytes, or no token, and it cannot be trusted. */
        if (err == 0
            && (bytes < (DWORD)sizeof(ov->out)
                || ov->out.Token.Token == INVALID_PORT_RESERVATION_TOKEN))
            err = ERROR_INVALID_DATA;
        if (err == 0) {
            block_init(ov->block, ov->s, &ov->out, ov->protocol);
        } else {
            closesocket(ov->s); /* ends whatever it reserved [ACQ] Remarks */
            free(ov->block);
            ov->block = NULL;
        }
    }
    if (ov->op == PORTRES_OP_RELEASE && err == 0)
        block_released(ov->in.token.Token);
    ov->error = err;
    InterlockedExchange(&ov->done, 1);
    /* The kernel signals the event too, but Wine 8 completes these IOCTLs
     * (status in ov.Internal) without signalling it: set it here so that
     * every waiter wakes.  Harmless twice on a manual-reset event. */
    SetEvent(ov->event);
}

/* Free an object the kernel is done with (or never saw). */
static void ov_destroy(portres_overlapped *ov)
{
    if (ov->block != NULL) {
        if (ov->done && ov->error == 0)
            portres_block_free(ov->block); /* release + close */
        else
            free(ov->block); /* never filled */
    }
    if (ov->event != NULL)
        CloseHandle(ov->event);
    free(ov);
}

/* The status word of the OVERLAPPED: STATUS_PENDING until the operation is
 * done, written by the kernel after the output and the byte count
 * (HasOverlappedIoCompleted, winbase.h; "OVERLAPPED structure
 * (minwinbase.h)").  The barrier orders the reads that follow after it. */
static DWORD ov_status(const portres_overlapped *ov)
{
    DWORD status = (DWORD) * (volatile const ULONG_PTR *)&ov->ov.Internal;
    MemoryBarrier();
    return status;
}

/* A Winsock error for a completion status, for when Winsock cannot say:
 * the statuses these IOCTLs complete with, then RtlNtStatusToDosError
 * (winternl.h; ntdll is loaded in every process). */
typedef ULONG(WINAPI *rtl_status_fn)(LONG);

static int status_error(DWORD status)
{
    static rtl_status_fn to_dos;
    HMODULE ntdll;
    FARPROC p;

    switch (status) {
    case 0xC0000120UL: /* STATUS_CANCELLED */
        return WSA_OPERATION_ABORTED;
    case 0xC00000BBUL: /* STATUS_NOT_SUPPORTED */
        return WSAEOPNOTSUPP;
    case 0xC0000022UL: /* STATUS_ACCESS_DENIED */
        return WSAEACCES;
    case 0xC000000DUL: /* STATUS_INVALID_PARAMETER */
        return WSAEINVAL;
    case 0xC0000008UL: /* STATUS_INVALID_HANDLE */
        return WSAENOTSOCK;
    case 0xC0000043UL: /* STATUS_SHARING_VIOLATION */
    case 0xC000020AUL: /* STATUS_ADDRESS_ALREADY_EXISTS */
        return WSAEADDRINUSE;
    case 0xC000009AUL: /* STATUS_INSUFFICIENT_RESOURCES */
        return WSAENOBUFS;
    default:
        break;
    }
    if (to_dos == NULL) {
        ntdll = GetModuleHandleW(L"ntdll.dll");
        p = ntdll != NULL ? GetProcAddress(ntdll, "RtlNtStatusToDosError") : NULL;
        memcpy(&to_dos, &p, sizeof(to_dos));
    }
    return to_dos != NULL ? (int)to_dos((LONG)status) : ERROR_INVALID_DATA;
}

/* WSAGetOverlappedResult's own failures, when it could not look at the
 * operation at all ("WSAGetOverlappedResult function (winsock2.h)",
 * Return value): the OVERLAPPED decides then. */
static int undeterminable(int err)
{
    return err == WSANOTINITIALISED || err == WSAENETDOWN || err == WSAENOTSOCK || err == WSAEFAULT
           || err == WSAEINVAL;
}

int portres_ov_reap(portres_overlapped *ov)
{
    DWORD bytes = 0, flags = 0, status;
    BOOL ok;
    int err;

    if (ov->done)
        return 1;
    if (ov->op == OP_TEST)
        return 0; /* done only when cancelled */
    ok = WSAGetOverlappedResult(ov->s, &ov->ov, &bytes, FALSE, &flags);
    err = ok ? 0 : WSAGetLastError();
    if (!ok && err == WSA_IO_INCOMPLETE)
        return 0;
    status = ov_status(ov);
    if (ok) {
        /* Done and successful: a provider may keep its own use of Internal
         * (non-IFS providers, "WSAOVERLAPPED structure"), but never
         * reports a success it has not finished. */
        ov_finish(ov, 0, bytes);
        return 1;
    }
    /* A failure: the operation's, or WSAGetOverlappedResult's own.  Only
     * the OVERLAPPED says whether the kernel is done with it; until then
     * nothing of it may be freed, whatever the error. */
    if (status == (DWORD)STATUS_PENDING)
        return 0;
    if ((LONG)status >= 0) /* NT_SUCCESS: it succeeded, Winsock could not say */
        ov_finish(ov, 0, (DWORD)ov->ov.InternalHigh);
    else
        ov_finish(ov, undeterminable(err) ? status_error(status) : err, 0);
    return 1;
}

int portres_ov_start(int op, portres_socket s, uint64_t token, int protocol, unsigned start,
                     unsigned count, portres_overlapped **out)
{
    portres_overlapped *ov;
    DWORD code, cb_in, cb_out;
    void *in, *outbuf;
    int type = 0, ipproto = 0, err;

    if (out == NULL)
        return portres_refuse(WSAEFAULT);
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
        return portres_refuse(WSAEINVAL);
    }

    /* Everything is allocated before the IOCTL, which must find its
     * buffers in place. */
    ov = (portres_overlapped *)calloc(1, sizeof(*ov));
    if (ov == NULL)
        return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
    ov->op = op;
    ov->protocol = protocol;
    ov->s = INVALID_SOCKET;
    if (op == PORTRES_OP_ACQUIRE) {
        ov->block = (portres_block *)calloc(1, sizeof(*ov->block));
        if (ov->block == NULL) {
            ov_destroy(ov);
            return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
        }
    }
    /* Manual-reset: it stays signalled for every waiter ("OVERLAPPED
     * structure (minwinbase.h)" advises manual-reset events). */
    ov->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov->event == NULL) {
        err = PORTRES_FAIL_LAST("CreateEventW");
        ov_destroy(ov);
        return err;
    }
    /* Low-order bit set: no completion packet is queued should the socket
     * be bound to an I/O completion port, e.g. by asyncio's proactor
     * ("GetQueuedCompletionStatus function (ioapiset.h)"). */
    ov->ov.hEvent = (HANDLE)((ULONG_PTR)ov->event | 1);
    /* Pending until the kernel says otherwise (it writes STATUS_PENDING
     * itself when it queues the IOCTL): a provider that completes without
     * touching Internal is then never taken for done before
     * WSAGetOverlappedResult says so. */
    ov->ov.Internal = STATUS_PENDING;

    if (op == PORTRES_OP_ACQUIRE) {
        ov->s = WSASocketW(AF_INET, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
        if (ov->s == INVALID_SOCKET) {
            err = PORTRES_FAIL_WSA("WSASocketW");
            ov_destroy(ov);
            return err;
        }
        ov->in.range.StartPort = htons((u_short)start); /* as [ACQ] */
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
        outbuf = NULL; /* [ASC], [REL]: no output */
        cb_out = 0;
    }

    if (WSAIoctl(ov->s, code, in, cb_in, outbuf, cb_out, &ov->returned, &ov->ov, NULL) == 0) {
        /* Completed at once: the result, byte count included, is read as
         * for any completion. */
        portres_ov_reap(ov);
    } else {
        err = WSAGetLastError();
        if (err != WSA_IO_PENDING) {
            portres_fail(err, ov_call(op));
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

int portres_ov_start_pending(int cancel_error, portres_overlapped **out)
{
    portres_overlapped *ov;
    int err;

    /* For the tests of the wait machinery (the binding's
     * _pending_overlapped): the object and its event, no IOCTL. */
    if (out == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    *out = NULL;
    ov = (portres_overlapped *)calloc(1, sizeof(*ov));
    if (ov == NULL)
        return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
    ov->op = OP_TEST;
    ov->s = INVALID_SOCKET;
    ov->cancel_error = cancel_error < 0 ? ERROR_OPERATION_ABORTED : cancel_error;
    ov->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov->event == NULL) {
        err = PORTRES_FAIL_LAST("CreateEventW");
        ov_destroy(ov);
        return err;
    }
    *out = ov;
    return 0;
}

intptr_t portres_ov_event(const portres_overlapped *ov)
{
    return (intptr_t)ov->event; /* the untagged handle */
}

int portres_ov_wait_event(const portres_overlapped *ov, long timeout_ms)
{
    /* long is 32 bits on Windows: any value >= 0 is below INFINITE. */
    DWORD ms = timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms;

    switch (WaitForSingleObject(ov->event, ms)) {
    case WAIT_OBJECT_0:
        return PORTRES_WAIT_SIGNALLED;
    case WAIT_TIMEOUT:
        return PORTRES_WAIT_TIMEOUT;
    default:
        return PORTRES_FAIL_LAST("WaitForSingleObject");
    }
}

int portres_ov_error(const portres_overlapped *ov)
{
    return ov->error ? portres_fail(ov->error, ov_call(ov->op)) : 0;
}

portres_block *portres_ov_take_block(portres_overlapped *ov)
{
    portres_block *b;

    if (!ov->done || ov->error != 0)
        return NULL;
    b = ov->block;
    ov->block = NULL;
    return b;
}

/* The base provider's handle of S (SIO_BASE_HANDLE, "Winsock IOCTLs"),
 * or INVALID_SOCKET. */
static SOCKET base_handle(SOCKET s)
{
    SOCKET base = INVALID_SOCKET;
    DWORD bytes = 0;

    if (WSAIoctl(s, SIO_BASE_HANDLE, NULL, 0, &base, (DWORD)sizeof(base), &bytes, NULL, NULL) != 0
        || bytes != (DWORD)sizeof(base))
        return INVALID_SOCKET;
    return base;
}

int portres_ov_cancel(portres_overlapped *ov)
{
    SOCKET base;
    int err;

    if (portres_ov_reap(ov))
        return 0;
    if (ov->op == OP_TEST) {
        ov_finish(ov, ov->cancel_error, 0);
        return 0;
    }
    /* Cancels the IOCTL issued with this OVERLAPPED on that handle
     * ("CancelIoEx function (ioapiset.h)"); it then completes, usually
     * with ERROR_OPERATION_ABORTED, possibly normally: a later reap says. */
    if (CancelIoEx((HANDLE)ov->s, (LPOVERLAPPED)&ov->ov))
        return 0;
    err = (int)GetLastError();
    if (err == ERROR_NOT_FOUND && ov_status(ov) == (DWORD)STATUS_PENDING) {
        /* Not found although still pending: the socket belongs to a
         * layered service provider, and the I/O is the base provider's
         * (trio resolves SIO_BASE_HANDLE for the same reason).  A layered
         * provider that re-issues the IOCTL with an OVERLAPPED of its own
         * cannot be cancelled from here: the operation then ends when the
         * provider completes it, and freeing waits, then leaks. */
        base = base_handle(ov->s);
        if (base != INVALID_SOCKET && base != ov->s) {
            if (CancelIoEx((HANDLE)base, (LPOVERLAPPED)&ov->ov))
                return 0;
            err = (int)GetLastError();
        }
    }
    /* ERROR_NOT_FOUND: nothing pending any more (same page). */
    return err == ERROR_NOT_FOUND ? 0 : portres_fail(err, "CancelIoEx");
}

int portres_ov_free(portres_overlapped *ov, long grace_ms)
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
                return 1; /* the kernel still owns it: leak, never free */
            /* Short slices: a provider may complete without signalling. */
            slice = (DWORD)(deadline - now < 10 ? deadline - now : 10);
            WaitForSingleObject(ov->event, slice);
        }
    }
    ov_destroy(ov);
    return 0;
}

#endif /* _WIN32 */
