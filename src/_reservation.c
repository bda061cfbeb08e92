/*
 * _reservation.c - the PortReservation type: a runtime reservation held by
 * this process (a portres_block of the backend).
 */
#include "_util.h"

#include <string.h>

/* ------------------------------------------------------ PortReservation */

typedef struct {
    PyObject_HEAD
    portres_block *block;
    portres_block_info info;
} PortReservationObject;

static void PortReservation_dealloc(PyObject *op)
{
    PortReservationObject *self = (PortReservationObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    if (self->block) {
        Py_BEGIN_ALLOW_THREADS
        portres_block_free(self->block);
        Py_END_ALLOW_THREADS
        self->block = NULL;
    }
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(op);
    Py_DECREF(tp);
}

static PyObject *PortReservation_get_start(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(((PortReservationObject *)op)->info.start);
}

static PyObject *PortReservation_get_count(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(((PortReservationObject *)op)->info.count);
}

static PyObject *PortReservation_get_token(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(((PortReservationObject *)op)->info.token);
}

static PyObject *PortReservation_get_protocol(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromLong(((PortReservationObject *)op)->info.protocol);
}

static PyObject *PortReservation_get_closed(PyObject *op, void *Py_UNUSED(c))
{
    return PyBool_FromLong(portres_block_closed(((PortReservationObject *)op)->block));
}

#ifdef __linux__
static PyObject *PortReservation_get_owner(PyObject *op, void *c);
#endif

static PyGetSetDef PortReservation_getset[] = {
    {"start", PortReservation_get_start, NULL, "First port of the block (host order).", NULL},
    {"count", PortReservation_get_count, NULL, "Number of ports in the block.", NULL},
    {"token", PortReservation_get_token, NULL, "The reservation token (unsigned 64-bit).", NULL},
    {"protocol", PortReservation_get_protocol, NULL, "TCP or UDP (module constants).", NULL},
    {"closed", PortReservation_get_closed, NULL, "True once released.", NULL},
#ifdef __linux__
    {"_owner", PortReservation_get_owner, NULL,
     "Linux: the uid owning the placeholders (-1 once closed).", NULL},
#endif
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(PortReservation_bind_doc,
             "bind(socket, family, host, port=0, flowinfo=0, scope_id=0) -> int\n\n"
             "Bind the unbound socket (a file descriptor / SOCKET) to a free port of the\n"
             "block on host, or to `port` when it is a port of the block.  On Windows:\n"
             "SIO_ASSOCIATE_PORT_RESERVATION then bind().  Returns the port bound.");

static PyObject *PortReservation_bind(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", PORTRES_SOCKADDR_KWLIST, NULL};
    PortReservationObject *self = (PortReservationObject *)op;
    portres_socket s;
    int family, len, err;
    const char *host;
    unsigned port = 0, bound = 0;
    unsigned long flowinfo = 0, scope_id = 0;
    struct sockaddr_storage ss;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&is|Ikk:bind", kwlist,
                                     portres_socket_converter, &s, &family, &host, &port, &flowinfo,
                                     &scope_id))
        return NULL;
    if (portres_make_sockaddr(family, host, port, flowinfo, scope_id, &ss, &len))
        return NULL;
    PORTRES_CALL(err, portres_block_bind(self->block, s, (struct sockaddr *)&ss, len, &bound));
    if (err)
        return portres_raise_backend_error(err, "bind", "Reservation.bind");
    return PyLong_FromUnsignedLong(bound);
}

PyDoc_STRVAR(PortReservation_socket_doc,
             "socket(family, host, port=0, flowinfo=0, scope_id=0) -> (fd, port)\n\n"
             "Create a non-inheritable socket of the block's protocol and bind it in the\n"
             "block.  Returns its file descriptor (SOCKET) and port.");

static PyObject *PortReservation_socket(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {PORTRES_SOCKADDR_KWLIST, NULL};
    PortReservationObject *self = (PortReservationObject *)op;
    int family, len, err;
    const char *host;
    unsigned port = 0, bound = 0;
    unsigned long flowinfo = 0, scope_id = 0;
    struct sockaddr_storage ss;
    portres_socket s;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "is|Ikk:socket", kwlist, &family, &host, &port,
                                     &flowinfo, &scope_id))
        return NULL;
    if (portres_make_sockaddr(family, host, port, flowinfo, scope_id, &ss, &len))
        return NULL;
    PORTRES_CALL(
        err, portres_block_socket(self->block, family, (struct sockaddr *)&ss, len, &s, &bound));
    if (err)
        return portres_raise_backend_error(err, "bind", "Reservation.socket");
#ifdef _WIN32
    return Py_BuildValue("(KI)", (unsigned long long)s, bound);
#else
    return Py_BuildValue("(iI)", s, bound);
#endif
}

#ifdef __linux__
PyDoc_STRVAR(PortReservation_bind_new_doc,
             "_bind_new(fd, family, host) -> int\n\n"
             "Linux, the fast path of the package's Reservation.socket(): bind FD, a socket\n"
             "the package has just created (unbound, of the block's protocol and FAMILY,\n"
             "no option set), in the block on HOST (an IP literal, or \"\").  The package\n"
             "closes the socket if this fails.  Returns the port bound.");

static PyObject *PortReservation_bind_new(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PortReservationObject *self = (PortReservationObject *)op;
    portres_socket s;
    long family;
    const char *host;
    Py_ssize_t hostlen;
    int len, err;
    unsigned bound = 0;
    struct sockaddr_storage ss;

    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "_bind_new() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!portres_socket_converter(args[0], &s))
        return NULL;
    family = PyLong_AsLong(args[1]);
    if (family == -1 && PyErr_Occurred())
        return NULL;
    if (!PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "host must be a str");
        return NULL;
    }
    host = PyUnicode_AsUTF8AndSize(args[2], &hostlen);
    if (!host)
        return NULL;
    if (strlen(host) != (size_t)hostlen) {
        PyErr_SetString(PyExc_ValueError, "host must not contain NUL");
        return NULL;
    }
    if (family < 0 || family > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "family must be AF_INET or AF_INET6, not %ld", family);
        return NULL;
    }
    if (portres_make_sockaddr((int)family, host, 0, 0, 0, &ss, &len))
        return NULL;
    PORTRES_CALL(err, portres_block_bind_new(self->block, s, (struct sockaddr *)&ss, len, &bound));
    if (err)
        return portres_raise_backend_error(err, "bind", "Reservation.socket");
    return PyLong_FromUnsignedLong(bound);
}

PyDoc_STRVAR(PortReservation_set_owner_doc,
             "_set_owner(uid)\n\n"
             "Linux, privilege drop: give the block's placeholder sockets to UID (fchown),\n"
             "so that sockets of UID bind from the block after the process drops to it.");

static PyObject *PortReservation_set_owner(PyObject *op, PyObject *arg)
{
    PortReservationObject *self = (PortReservationObject *)op;
    unsigned long uid = PyLong_AsUnsignedLong(arg);
    int err;
    if (uid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (uid > 0xFFFFFFFEul) { /* (uid_t)-1 means "unchanged" to fchown() */
        PyErr_Format(PyExc_ValueError, "uid must be in 0..4294967294, not %lu", uid);
        return NULL;
    }
    PORTRES_CALL(err, portres_block_set_owner(self->block, (unsigned)uid));
    if (err)
        return portres_raise_backend_error(err, "fchown", "portres.acquire(owner=)");
    Py_RETURN_NONE;
}

static PyObject *PortReservation_get_owner(PyObject *op, void *Py_UNUSED(c))
{
    PortReservationObject *self = (PortReservationObject *)op;
    long uid;
    Py_BEGIN_ALLOW_THREADS
    uid = portres_block_owner(self->block);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(uid);
}
#endif

PyDoc_STRVAR(PortReservation_close_doc,
             "close()\n\n"
             "Release the reservation (SIO_RELEASE_PORT_RESERVATION and closesocket of\n"
             "the acquiring socket on Windows).  Idempotent.");

static PyObject *PortReservation_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PortReservationObject *self = (PortReservationObject *)op;
    int err;
    PORTRES_CALL(err, portres_block_close(self->block));
    if (err)
        return portres_raise_backend_error(err, portres_op_call(PORTRES_OP_RELEASE),
                                           "Reservation.close");
    Py_RETURN_NONE;
}

static PyMethodDef PortReservation_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))PortReservation_bind, METH_VARARGS | METH_KEYWORDS,
     PortReservation_bind_doc},
    {"socket", (PyCFunction)(void (*)(void))PortReservation_socket, METH_VARARGS | METH_KEYWORDS,
     PortReservation_socket_doc},
    {"close", PortReservation_close, METH_NOARGS, PortReservation_close_doc},
#ifdef __linux__
    {"_bind_new", (PyCFunction)(void (*)(void))PortReservation_bind_new, METH_FASTCALL,
     PortReservation_bind_new_doc},
    {"_set_owner", PortReservation_set_owner, METH_O, PortReservation_set_owner_doc},
#endif
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(PortReservation_doc,
             "A runtime port reservation held by this process (SIO_ACQUIRE_PORT_RESERVATION).\n"
             "Created by acquire_port_reservation(); released by close() or when collected.");

static PyType_Slot PortReservation_slots[] = {
    {Py_tp_dealloc, PortReservation_dealloc},
    {Py_tp_getset, PortReservation_getset},
    {Py_tp_methods, PortReservation_methods},
    {Py_tp_doc, (void *)PortReservation_doc},
    {0, NULL},
};

PyType_Spec portres_reservation_spec = {
    "portres._portres.PortReservation",
    sizeof(PortReservationObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    PortReservation_slots,
};

PyObject *portres_new_reservation(module_state *st, portres_block *block)
{
    PortReservationObject *obj = PyObject_New(PortReservationObject, st->PortReservation_Type);
    if (!obj) {
        Py_BEGIN_ALLOW_THREADS
        portres_block_free(block);
        Py_END_ALLOW_THREADS
        return NULL;
    }
    obj->block = block;
    portres_block_get_info(block, &obj->info);
    return (PyObject *)obj;
}
