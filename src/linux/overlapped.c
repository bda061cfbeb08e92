/*
 * linux/overlapped.c - the overlapped shape of the IOCTLs on Linux.
 */
#ifdef __linux__

#include "linux.h"

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

/* ------------------------------------------------- overlapped operations
 *
 * Every operation completes at once on Linux; the object keeps the Windows
 * shape (an event signalled at completion) so that event-loop integration
 * is the same code on both platforms.  The event is an eventfd that is
 * written once and never read: it stays readable, like a manual-reset
 * event, for every waiter.
 */

struct portres_overlapped {
    int efd;
    int op;
    int done;
    int error;
    const char *call;     /* the failed call, with ERROR */
    int cancel_error;     /* the result a cancel gives (the test operation) */
    portres_block *block; /* ACQUIRE result until taken */
};

static int ov_new(int op, portres_overlapped **out)
{
    portres_overlapped *ov = calloc(1, sizeof *ov);
    if (!ov)
        return portres_fail(ENOMEM, "calloc");
    ov->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ov->efd < 0) {
        int err = lx_fail("eventfd");
        free(ov);
        return err;
    }
    ov->op = op;
    ov->cancel_error = ECANCELED;
    *out = ov;
    return 0;
}

static void ov_complete(portres_overlapped *ov, int error, const char *call)
{
    uint64_t one = 1;
    ov->error = error;
    ov->call = call;
    __atomic_store_n(&ov->done, 1, __ATOMIC_RELEASE);
    /* Cannot fail: the counter is far from overflowing. */
    if (write(ov->efd, &one, sizeof one) != (ssize_t)sizeof one)
        if (!ov->error) {
            ov->error = EIO;
            ov->call = "write(eventfd)";
        }
}

int portres_ov_start(int op, portres_socket s, uint64_t token, int protocol, unsigned start,
                     unsigned count, portres_overlapped **out)
{
    portres_overlapped *ov;
    portres_block *block = NULL;
    unsigned conflict = 0;
    int err;

    *out = NULL;
    switch (op) {
    case PORTRES_OP_ACQUIRE:
        err = portres_block_acquire(protocol, start, count, &block, &conflict);
        break;
    case PORTRES_OP_ASSOCIATE:
        err = portres_associate(s, token);
        break;
    case PORTRES_OP_RELEASE:
        err = portres_release(s, token);
        break;
    case PORTRES_OP_ASSOCIATE_RANGE:
        err = portres_associate_range(s, protocol, start, count);
        break;
    default:
        return portres_refuse(EINVAL);
    }
    if (err) /* an immediate failure, as WSAIoctl's non-pending error */
        return err;
    if ((err = ov_new(op, &ov))) {
        portres_block_free(block);
        return err;
    }
    ov->block = block;
    ov_complete(ov, 0, NULL);
    *out = ov;
    return 0;
}

int portres_ov_start_pending(int cancel_error, portres_overlapped **out)
{
    int err;
    *out = NULL;
    err = ov_new(-1, out);
    if (err == 0 && cancel_error >= 0)
        (*out)->cancel_error = cancel_error;
    return err;
}

intptr_t portres_ov_event(const portres_overlapped *ov)
{
    return ov->efd;
}

int portres_ov_wait_event(const portres_overlapped *ov, long timeout_ms)
{
    struct pollfd p = {ov->efd, POLLIN, 0};
    int n =
        poll(&p, 1, timeout_ms < 0 ? -1 : (timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms));
    if (n > 0)
        return PORTRES_WAIT_SIGNALLED;
    if (n == 0)
        return PORTRES_WAIT_TIMEOUT;
    return errno == EINTR ? PORTRES_WAIT_INTERRUPTED : lx_fail("poll");
}

int portres_ov_reap(portres_overlapped *ov)
{
    return __atomic_load_n(&ov->done, __ATOMIC_ACQUIRE);
}

int portres_ov_error(const portres_overlapped *ov)
{
    return ov->error ? portres_fail(ov->error, ov->call) : 0;
}

portres_block *portres_ov_take_block(portres_overlapped *ov)
{
    portres_block *b = ov->block;
    ov->block = NULL;
    return b;
}

int portres_ov_cancel(portres_overlapped *ov)
{
    if (!portres_ov_reap(ov))
        ov_complete(ov, ov->cancel_error, ov->cancel_error ? "cancel" : NULL);
    return 0;
}

int portres_ov_free(portres_overlapped *ov, long grace_ms)
{
    (void)grace_ms;
    if (!ov)
        return 0;
    portres_ov_cancel(ov);
    close(ov->efd);
    portres_block_free(ov->block);
    free(ov);
    return 0;
}

#endif /* __linux__ */
