/*
 * windows/overlapped.c - the IOCTLs in overlapped mode, and thread-pool waits.
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
    int op;       /* enum portres_op */
    int protocol;
    volatile LONG done; /* the result below is recorded */
    int error;
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
    case PORTRES_OP_ACQUIRE:
        return PORTRES_CALL_ACQUIRE;
    case PORTRES_OP_ASSOCIATE:
        return PORTRES_CALL_ASSOCIATE;
    default:
        return PORTRES_CALL_RELEASE;
    }
}

/* Record the result of a finished operation and signal the event. */
static void ov_finish(portres_overlapped *ov, int err)
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

int portres_ov_reap(portres_overlapped *ov)
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

int portres_ov_start(int op, portres_socket s, uint64_t token, int protocol, unsigned start,
                     unsigned count, portres_overlapped **out)
{
    portres_overlapped *ov;
    DWORD code, cb_in, cb_out;
    void *in, *outbuf;
    int type = 0, ipproto = 0, err;

    if (out == NULL)
        return portres_fail(WSAEFAULT, "WSAIoctl");
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
        return portres_fail(WSAEINVAL, "WSAIoctl");
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
        ov_finish(ov, 0); /* completed at once */
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

int portres_ov_start_pending(portres_overlapped **out)
{
    /* A test hook of the Linux backend; real IOCTLs pend here. */
    if (out != NULL)
        *out = NULL;
    return portres_fail(ERROR_NOT_SUPPORTED, "portres_ov_start_pending");
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

int portres_ov_cancel(portres_overlapped *ov)
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

/* Thread-pool wait: calls CB(CTX) once when the event is signalled. */
struct portres_wait {
    HANDLE wait;
    void (*cb)(void *);
    void *ctx;
};

static VOID CALLBACK portres_wait_callback(PVOID param, BOOLEAN timed_out)
{
    struct portres_wait *w = (struct portres_wait *)param;

    (void)timed_out; /* INFINITE: never a timeout */
    w->cb(w->ctx);
}

int portres_ov_register_wait(portres_overlapped *ov, void (*cb)(void *), void *ctx,
                             void **wait_handle)
{
    struct portres_wait *w;
    int err;

    if (wait_handle == NULL || cb == NULL)
        return portres_fail(ERROR_INVALID_PARAMETER, "RegisterWaitForSingleObject");
    *wait_handle = NULL;
    w = (struct portres_wait *)calloc(1, sizeof(*w));
    if (w == NULL)
        return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
    w->cb = cb;
    w->ctx = ctx;
    /* "RegisterWaitForSingleObject function (winbase.h)": with
     * WT_EXECUTEONLYONCE the callback runs once, on a pool thread. */
    if (!RegisterWaitForSingleObject(&w->wait, ov->event, portres_wait_callback, w, INFINITE,
                                     WT_EXECUTEONLYONCE)) {
        err = PORTRES_FAIL_LAST("RegisterWaitForSingleObject");
        free(w);
        return err;
    }
    *wait_handle = w;
    return 0;
}

int portres_ov_unregister_wait(void *wait_handle)
{
    struct portres_wait *w = (struct portres_wait *)wait_handle;

    if (w == NULL)
        return 0;
    /* INVALID_HANDLE_VALUE: return only once a running callback has
     * returned ("UnregisterWaitEx function" in the Synchronization docs). */
    if (!UnregisterWaitEx(w->wait, INVALID_HANDLE_VALUE))
        return PORTRES_FAIL_LAST("UnregisterWaitEx"); /* W may still be used: leak it */
    free(w);
    return 0;
}

#endif /* _WIN32 */
