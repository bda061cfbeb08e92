/*
 * _overlapped.c - the Overlapped type: one IOCTL issued in overlapped mode,
 * completion signalled through an event.
 *
 * Like CPython's Modules/overlapped.c, the object never frees what the
 * kernel may still write to: the backend owns the OVERLAPPED, its event and
 * the buffers, and on dealloc a pending operation is cancelled and reaped;
 * if the kernel does not let go, the memory is leaked with a
 * ResourceWarning.  Every wait releases the GIL and wakes for signals
 * (Ctrl+C): on an interrupted wait the operation is cancelled and reaped.
 *
 * Free-threaded builds: a lock serialises reaping, cancelling, taking the
 * result and (un)registering a wait; waits on the event run in any number
 * of threads at once.  A thread that must block for the lock detaches its
 * thread state first (ov_lock()), and no Python code runs under the lock
 * but the making of the result: no reference is dropped there.
 */
#include "_util.h"

#include <errno.h>
#include <math.h>

enum { OV_PENDING, OV_DONE };

/* How long a cancelled operation gets to complete before we stop waiting
 * for it (a dealloc, a timeout, an interrupted wait). */
#define CANCEL_GRACE_MS 2000
/* Waits run in slices so that signals are checked at least this often (on
 * Windows a console Ctrl+C does not interrupt a wait). */
#define WAIT_SLICE_MS 50

typedef struct {
    PyObject_HEAD
    portres_overlapped *ov;
    PyThread_type_lock lock;
    int op;
    int state;
    PyObject *owner;       /* the socket, kept alive while pending */
    PyObject *reservation; /* ACQUIRE: the PortReservation, once made */
} OverlappedObject;

/* The error of an operation a cancel aborted ("CancelIoEx function
 * (ioapiset.h)": ERROR_OPERATION_ABORTED; the Linux backend's ECANCELED). */
#ifdef _WIN32
#define OV_ABORTED ERROR_OPERATION_ABORTED
#else
#define OV_ABORTED ECANCELED
#endif

const char *portres_op_call(int op)
{
    switch (op) {
#ifdef _WIN32
    case PORTRES_OP_ACQUIRE:
        return "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)";
    case PORTRES_OP_ASSOCIATE:
        return "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)";
    case PORTRES_OP_RELEASE:
        return "WSAIoctl(SIO_RELEASE_PORT_RESERVATION)";
#else
    case PORTRES_OP_ACQUIRE:
        return "acquire_port_reservation";
    case PORTRES_OP_ASSOCIATE:
        return "associate_port_reservation";
    case PORTRES_OP_RELEASE:
        return "release_port_reservation";
    case PORTRES_OP_ASSOCIATE_RANGE:
        return "associate_range";
#endif
    default:
        return "overlapped operation";
    }
}

const char *portres_op_name(int op)
{
    switch (op) {
    case PORTRES_OP_ACQUIRE:
        return "portres.acquire";
    case PORTRES_OP_ASSOCIATE:
    case PORTRES_OP_ASSOCIATE_RANGE:
        return "portres.associate";
    case PORTRES_OP_RELEASE:
        return "portres.release";
    default:
        return "portres_ov_start";
    }
}

/* What a failure is called when the backend recorded no call (portres.h,
 * "Errors"): each platform's own. */
#ifdef _WIN32
#define CALL_WAIT "WaitForSingleObject"
#define CALL_CANCEL "CancelIoEx"
#else
#define CALL_WAIT "poll"
#define CALL_CANCEL "cancel"
#endif

/* Take SELF's lock.  Blocking for it with the thread state attached would
 * stall every stop-the-world pause of a free-threaded build (its GC) while
 * the holder runs Python code, and every other thread with the GIL: so a
 * thread that has to wait detaches first. */
static void ov_lock(OverlappedObject *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

/* Release SELF's lock, then drop *RELEASED (an owner reaped under it):
 * the decref may run a finalizer, which must not find the lock held. */
static void ov_unlock(OverlappedObject *self, PyObject **released)
{
    PyThread_release_lock(self->lock);
    Py_CLEAR(*released);
}

/* Reap if pending; returns whether done.  Lock held by the caller; the
 * owner kept alive while pending moves to *RELEASED (see ov_unlock()). */
static int reap_locked(OverlappedObject *self, PyObject **released)
{
    if (self->state == OV_PENDING && portres_ov_reap(self->ov)) {
        self->state = OV_DONE;
        *released = self->owner;
        self->owner = NULL;
    }
    return self->state == OV_DONE;
}

static int reap(OverlappedObject *self)
{
    int done;
    PyObject *released = NULL;
    ov_lock(self);
    done = reap_locked(self, &released);
    ov_unlock(self, &released);
    return done;
}

/* Wait for completion up to TIMEOUT_MS (< 0: forever), GIL released, in
 * slices with signal checks.  Returns 1 done, 0 not done, -1 with an
 * exception set (a signal handler raised, e.g. KeyboardInterrupt). */
static int wait_done(OverlappedObject *self, long long timeout_ms, int check_signals)
{
    long long remaining = timeout_ms;
    if (reap(self))
        return 1;
    while (remaining != 0) {
        long slice = (remaining < 0 || remaining > WAIT_SLICE_MS) ? WAIT_SLICE_MS : (long)remaining;
        int rc;
        PORTRES_CALL(rc, portres_ov_wait_event(self->ov, slice));
        if (rc > 0) {
            portres_raise_backend_error(rc, CALL_WAIT, NULL);
            return -1;
        }
        if (reap(self))
            return 1;
        if (check_signals && PyErr_CheckSignals() < 0)
            return -1;
        if (remaining > 0)
            remaining = remaining > slice ? remaining - slice : 0;
    }
    /* The wait timed out: a provider may have completed without signalling
     * the event (seen under Wine), so ask before calling it a timeout. */
    return reap(self);
}

/* Cancel and give the kernel CANCEL_GRACE_MS to complete; no signal
 * checks (we are often already handling one).  Returns whether done. */
static int cancel_and_reap(OverlappedObject *self)
{
    int err = 0, done;
    PyObject *released = NULL;
    ov_lock(self);
    done = reap_locked(self, &released);
    if (!done)
        err = portres_ov_cancel(self->ov);
    ov_unlock(self, &released);
    if (done)
        return 1;
    if (err) /* nothing to wait for if the cancel itself failed */
        return 0;
    {
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        done = wait_done(self, CANCEL_GRACE_MS, 0);
        if (done < 0) {
            PyErr_Clear();
            done = 0;
        }
        PyErr_Restore(exc_type, exc_value, exc_tb);
    }
    return done;
}

static int timeout_converter(PyObject *obj, void *out)
{
    double t;
    if (obj == Py_None) {
        *(long long *)out = -1;
        return 1;
    }
    if (PyBool_Check(obj) || !(PyLong_Check(obj) || PyFloat_Check(obj))) {
        portres_type_error("timeout must be None or a number of seconds", obj);
        return 0;
    }
    t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred())
        return 0;
    if (isnan(t) || t < 0) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be None or a non-negative number of seconds, not %R", obj);
        return 0;
    }
    /* Round up so a small positive timeout still waits. */
    *(long long *)out = t > 9e15 ? -1 : (long long)ceil(t * 1000.0);
    return 1;
}

/* ------------------------------------------------------------ methods */

static PyObject *Overlapped_done(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(reap((OverlappedObject *)op));
}

static PyObject *Overlapped_wait(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    OverlappedObject *self = (OverlappedObject *)op;
    long long timeout_ms = -1;
    int done;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O&:wait", kwlist, timeout_converter,
                                     &timeout_ms))
        return NULL;
    done = wait_done(self, timeout_ms, 1);
    if (done < 0) {
        cancel_and_reap(self);
        return NULL;
    }
    return PyBool_FromLong(done);
}

static PyObject *result_locked_value(OverlappedObject *self)
{
    module_state *st = PyType_GetModuleState(Py_TYPE((PyObject *)self));
    int err;
    portres_error_clear();
    err = portres_ov_error(self->ov);
    if (err)
        return portres_raise_backend_error(err, portres_op_call(self->op),
                                           portres_op_name(self->op));
    if (self->op == PORTRES_OP_ACQUIRE) {
        if (!self->reservation) {
            portres_block *block = portres_ov_take_block(self->ov);
            if (!block) {
                PyErr_SetString(PyExc_RuntimeError, "the reservation was already taken");
                return NULL;
            }
            self->reservation = portres_new_reservation(st, block);
            if (!self->reservation)
                return NULL;
        }
        return Py_NewRef(self->reservation);
    }
    Py_RETURN_NONE;
}

static PyObject *Overlapped_result(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    OverlappedObject *self = (OverlappedObject *)op;
    long long timeout_ms = -1;
    int done;
    PyObject *res;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O&:result", kwlist, timeout_converter,
                                     &timeout_ms))
        return NULL;
    done = wait_done(self, timeout_ms, 1);
    if (done < 0) { /* interrupted: cancel and reap, then propagate */
        cancel_and_reap(self);
        return NULL;
    }
    if (!done) {
        /* "CancelIoEx function (ioapiset.h)": the operation may still
         * complete normally.  Only an abort, or no answer within the
         * grace, is a timeout; a result reaped meanwhile (a success, or a
         * failure of its own) is the operation's and is returned. */
        if (!cancel_and_reap(self)) {
            PyErr_Format(PyExc_TimeoutError,
                         "%s did not complete in time; it was cancelled but the kernel has not "
                         "let go yet",
                         portres_op_call(self->op));
            return NULL;
        }
        if (portres_ov_error(self->ov) == OV_ABORTED) {
            PyErr_Format(PyExc_TimeoutError, "%s did not complete in time; it was cancelled",
                         portres_op_call(self->op));
            return NULL;
        }
    }
    ov_lock(self);
    res = result_locked_value(self);
    PyThread_release_lock(self->lock);
    return res;
}

static PyObject *Overlapped_cancel(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    OverlappedObject *self = (OverlappedObject *)op;
    int err = 0;
    PyObject *released = NULL;
    ov_lock(self);
    portres_error_clear();
    if (!reap_locked(self, &released))
        err = portres_ov_cancel(self->ov);
    ov_unlock(self, &released);
    if (err)
        return portres_raise_backend_error(err, CALL_CANCEL, NULL);
    Py_RETURN_NONE;
}

static PyObject *Overlapped_get_event(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromLongLong((long long)portres_ov_event(((OverlappedObject *)op)->ov));
}

static PyObject *Overlapped_get_pending(PyObject *op, void *Py_UNUSED(c))
{
    return PyBool_FromLong(!reap((OverlappedObject *)op));
}

static int Overlapped_traverse(PyObject *op, visitproc visit, void *arg)
{
    OverlappedObject *self = (OverlappedObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->reservation);
    /* owner (the socket) is not visited: it must stay alive while the kernel
     * may use it, even inside a reference cycle. */
    return 0;
}

static int Overlapped_clear(PyObject *op)
{
    OverlappedObject *self = (OverlappedObject *)op;
    Py_CLEAR(self->reservation);
    return 0;
}

static void Overlapped_dealloc(PyObject *op)
{
    OverlappedObject *self = (OverlappedObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->ov) {
        int leaked;
        Py_BEGIN_ALLOW_THREADS
        leaked = portres_ov_free(self->ov, CANCEL_GRACE_MS);
        Py_END_ALLOW_THREADS
        self->ov = NULL;
        if (leaked) {
            PyObject *exc_type, *exc_value, *exc_tb;
            PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
            if (PyErr_WarnEx(PyExc_ResourceWarning,
                             "portres: an overlapped operation was still pending in the kernel "
                             "after CancelIoEx; its OVERLAPPED and buffers were leaked rather "
                             "than freed",
                             1)
                < 0)
                PyErr_WriteUnraisable(op);
            PyErr_Restore(exc_type, exc_value, exc_tb);
            /* The socket must outlive the kernel's use of it, too. */
            self->owner = NULL;
        }
    }
    Py_XDECREF(self->owner);
    Overlapped_clear(op);
    if (self->lock)
        PyThread_free_lock(self->lock);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(op);
    Py_DECREF(tp);
}

static PyObject *Overlapped_repr(PyObject *op)
{
    OverlappedObject *self = (OverlappedObject *)op;
    return PyUnicode_FromFormat("<portres._portres.Overlapped %s %s event=%lld>",
                                portres_op_call(self->op), reap(self) ? "done" : "pending",
                                (long long)portres_ov_event(self->ov));
}

static PyMethodDef Overlapped_methods[] = {
    {"done", Overlapped_done, METH_NOARGS,
     "done() -> bool\n\nWhether the operation has completed (reaps it without waiting)."},
    {"wait", (PyCFunction)(void (*)(void))Overlapped_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None) -> bool\n\nWait for completion (GIL released; Ctrl+C cancels the "
     "operation and raises).  Returns whether it completed."},
    {"result", (PyCFunction)(void (*)(void))Overlapped_result, METH_VARARGS | METH_KEYWORDS,
     "result(timeout=None)\n\nWait, then return the operation's result (a PortReservation for "
     "ACQUIRE, else None) or raise its OSError.  On timeout the operation is cancelled and "
     "reaped, and TimeoutError is raised."},
    {"cancel", Overlapped_cancel, METH_NOARGS,
     "cancel()\n\nCancelIoEx on a pending operation; no-op once done.  Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Overlapped_getset[] = {
    {"event", Overlapped_get_event, NULL,
     "The completion event: a manual-reset event HANDLE (Windows) or an eventfd (Linux).", NULL},
    {"pending", Overlapped_get_pending, NULL, "True while the kernel owns the operation.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Overlapped_slots[] = {
    {Py_tp_dealloc, Overlapped_dealloc},
    {Py_tp_traverse, Overlapped_traverse},
    {Py_tp_clear, Overlapped_clear},
    {Py_tp_repr, Overlapped_repr},
    {Py_tp_methods, Overlapped_methods},
    {Py_tp_getset, Overlapped_getset},
    {Py_tp_doc,
     (void *)"An IOCTL in flight in overlapped mode, completion signalled through an event."},
    {0, NULL},
};

PyType_Spec portres_overlapped_spec = {
    "portres._portres.Overlapped",
    sizeof(OverlappedObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    Overlapped_slots,
};

static PyObject *new_overlapped(module_state *st, portres_overlapped *ov, int op, PyObject *owner)
{
    OverlappedObject *self = PyObject_GC_New(OverlappedObject, st->Overlapped_Type);
    if (!self) {
        portres_ov_free(ov, CANCEL_GRACE_MS);
        return NULL;
    }
    self->ov = ov;
    self->op = op;
    self->state = OV_PENDING;
    self->owner = Py_XNewRef(owner);
    self->reservation = NULL;
    self->lock = PyThread_allocate_lock();
    if (!self->lock) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    PyObject_GC_Track((PyObject *)self);
    return (PyObject *)self;
}

PyObject *portres_start_overlapped(PyObject *module, int op, portres_socket s, uint64_t token,
                                   int protocol, unsigned start, unsigned count, PyObject *owner)
{
    module_state *st = PyModule_GetState(module);
    portres_overlapped *ov = NULL;
    int err;
    PORTRES_CALL(err, portres_ov_start(op, s, token, protocol, start, count, &ov));
    if (err)
        return portres_raise_backend_error(err, portres_op_call(op), portres_op_name(op));
    return new_overlapped(st, ov, op, owner);
}

PyObject *portres_start_pending_overlapped(PyObject *module, int cancel_error)
{
    module_state *st = PyModule_GetState(module);
    portres_overlapped *ov = NULL;
    int err;
    PORTRES_CALL(err, portres_ov_start_pending(cancel_error, &ov));
    if (err)
        return portres_raise_backend_error(err, portres_op_call(-1), portres_op_name(-1));
    return new_overlapped(st, ov, -1, NULL);
}
