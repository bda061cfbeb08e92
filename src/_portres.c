/*
 * _portres.c - the CPython module portres._portres: argument parsing, the
 * PortReservation type, and OSError raising.  Every OS call is made by a
 * backend (windows.c or linux.c, through portres.h) with the GIL released.
 *
 * The functions mirror the Win32 calls one for one; policy (validation,
 * messages with hints, defaults) lives in the portres package.
 *
 * Modern extension practice: multi-phase init, a heap type, per-module
 * state, Py_mod_gil for free-threaded builds, no private CPython API.
 */
#include "_module.h"

#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#  include <mstcpip.h>
#else
#  include <arpa/inet.h>
#  include <errno.h>
#  include <netinet/in.h>
#endif

static inline module_state *get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* --------------------------------------------------------------- errors */

/* OSError(errno, strerror, CALL[, winerror]): the call names itself in the
 * `filename` slot; the package rewrites the message with a hint. */
PyObject *portres_raise_os_error(int err, const char *call)
{
#ifdef _WIN32
    return PyErr_SetExcFromWindowsErrWithFilename(PyExc_OSError, err, call);
#else
    errno = err;
    return PyErr_SetFromErrnoWithFilename(PyExc_OSError, call);
#endif
}

PyObject *portres_type_error(const char *what, PyObject *obj)
{
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
    if (name) {
        PyErr_Format(PyExc_TypeError, "%s, not %.100U", what, name);
        Py_DECREF(name);
    }
    return NULL;
}

/* ------------------------------------------------------------ converters */

int portres_socket_converter(PyObject *obj, void *out)
{
#ifdef _WIN32
    unsigned long long v;
#else
    long v;
#endif
    if (!PyLong_Check(obj)) {
        portres_type_error("socket must be an int file descriptor", obj);
        return 0;
    }
#ifdef _WIN32
    v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "socket handle out of range");
        }
        return 0;
    }
    if (v == (unsigned long long)INVALID_SOCKET) {
        PyErr_SetString(PyExc_ValueError, "socket is INVALID_SOCKET");
        return 0;
    }
#else
    v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "socket file descriptor out of range");
        }
        return 0;
    }
    if (v < 0 || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "socket file descriptor out of range: %ld", v);
        return 0;
    }
#endif
    *(portres_socket *)out = (portres_socket)v;
    return 1;
}

int portres_token_converter(PyObject *obj, void *out)
{
    unsigned long long v;
    if (!PyLong_Check(obj)) {
        portres_type_error("token must be an int", obj);
        return 0;
    }
    v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "token must be an unsigned 64-bit int");
        }
        return 0;
    }
    if (v == 0) {
        PyErr_SetString(PyExc_ValueError, "token must not be 0");
        return 0;
    }
    *(uint64_t *)out = (uint64_t)v;
    return 1;
}

/* Build a sockaddr from (family, numeric host, port, flowinfo, scope_id).
 * HOST must be an IP literal or "" for the wildcard: the package resolves
 * names before calling. */
static int make_sockaddr(int family, const char *host, unsigned port, unsigned long flowinfo,
                         unsigned long scope_id, struct sockaddr_storage *ss, int *len)
{
    memset(ss, 0, sizeof *ss);
    if (port > 65535) {
        PyErr_Format(PyExc_ValueError, "port must be in 0..65535, not %u", port);
        return -1;
    }
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((unsigned short)port);
        if (*host && inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "not an IPv4 address: %.200s", host);
            return -1;
        }
        *len = (int)sizeof *a;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((unsigned short)port);
        a->sin6_flowinfo = htonl((uint32_t)flowinfo);
        a->sin6_scope_id = (uint32_t)scope_id;
        if (*host && inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "not an IPv6 address: %.200s", host);
            return -1;
        }
        *len = (int)sizeof *a;
    } else {
        PyErr_Format(PyExc_ValueError, "family must be AF_INET or AF_INET6, not %d", family);
        return -1;
    }
    return 0;
}

#define SOCKADDR_KWLIST "family", "host", "port", "flowinfo", "scope_id"

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

static PyGetSetDef PortReservation_getset[] = {
    {"start", PortReservation_get_start, NULL, "First port of the block (host order).", NULL},
    {"count", PortReservation_get_count, NULL, "Number of ports in the block.", NULL},
    {"token", PortReservation_get_token, NULL, "The reservation token (unsigned 64-bit).", NULL},
    {"protocol", PortReservation_get_protocol, NULL, "TCP or UDP (module constants).", NULL},
    {"closed", PortReservation_get_closed, NULL, "True once released.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(PortReservation_bind_doc,
"bind(socket, family, host, port=0, flowinfo=0, scope_id=0) -> int\n\n"
"Bind the unbound socket (a file descriptor / SOCKET) to a free port of the\n"
"block on host, or to `port` when it is a port of the block.  On Windows:\n"
"SIO_ASSOCIATE_PORT_RESERVATION then bind().  Returns the port bound.");

static PyObject *PortReservation_bind(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", SOCKADDR_KWLIST, NULL};
    PortReservationObject *self = (PortReservationObject *)op;
    portres_socket s;
    int family, len, err;
    const char *host;
    unsigned port = 0, bound = 0;
    unsigned long flowinfo = 0, scope_id = 0;
    struct sockaddr_storage ss;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&is|Ikk:bind", kwlist, portres_socket_converter,
                                     &s, &family, &host, &port, &flowinfo, &scope_id))
        return NULL;
    if (make_sockaddr(family, host, port, flowinfo, scope_id, &ss, &len))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_block_bind(self->block, s, (struct sockaddr *)&ss, len, &bound);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "bind");
    return PyLong_FromUnsignedLong(bound);
}

PyDoc_STRVAR(PortReservation_socket_doc,
"socket(family, host, port=0, flowinfo=0, scope_id=0) -> (fd, port)\n\n"
"Create a non-inheritable socket of the block's protocol and bind it in the\n"
"block.  Returns its file descriptor (SOCKET) and port.");

static PyObject *PortReservation_socket(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {SOCKADDR_KWLIST, NULL};
    PortReservationObject *self = (PortReservationObject *)op;
    int family, len, err;
    const char *host;
    unsigned port = 0, bound = 0;
    unsigned long flowinfo = 0, scope_id = 0;
    struct sockaddr_storage ss;
    portres_socket s;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "is|Ikk:socket", kwlist, &family, &host,
                                     &port, &flowinfo, &scope_id))
        return NULL;
    if (make_sockaddr(family, host, port, flowinfo, scope_id, &ss, &len))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_block_socket(self->block, family, (struct sockaddr *)&ss, len, &s, &bound);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "bind");
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
    if (make_sockaddr((int)family, host, 0, 0, 0, &ss, &len))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_block_bind_new(self->block, s, (struct sockaddr *)&ss, len, &bound);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "bind");
    return PyLong_FromUnsignedLong(bound);
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
    Py_BEGIN_ALLOW_THREADS
    err = portres_block_close(self->block);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "WSAIoctl(SIO_RELEASE_PORT_RESERVATION)");
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

static PyType_Spec PortReservation_spec = {
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

/* ------------------------------------------------------ module functions */

PyDoc_STRVAR(acquire_port_reservation_doc,
"acquire_port_reservation(protocol, start, count, overlapped=False)\n\n"
"WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) on a new socket of `protocol` (TCP or\n"
"UDP): reserve `count` ports from `start` (0: the system picks the start).\n"
"Returns a PortReservation, or with overlapped=True an Overlapped whose\n"
"result() is one.  On failure the OSError carries `conflict_port` (the port\n"
"that was taken, when known; else 0).");

static PyObject *acquire_port_reservation(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"protocol", "start", "count", "overlapped", NULL};
    module_state *st = get_state(module);
    int protocol, err, overlapped = 0;
    unsigned start, count, conflict = 0;
    portres_block *block = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iII|p:acquire_port_reservation", kwlist,
                                     &protocol, &start, &count, &overlapped))
        return NULL;
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP) {
        PyErr_Format(PyExc_ValueError, "protocol must be TCP (0) or UDP (1), not %d", protocol);
        return NULL;
    }
    if (count < 1 || count > 65535 || start > 65535 || (start && start + count - 1 > 65535)) {
        PyErr_Format(PyExc_ValueError, "invalid block: start %u, count %u", start, count);
        return NULL;
    }
    if (overlapped)
        return portres_start_overlapped(module, PORTRES_OP_ACQUIRE, (portres_socket)0, 0,
                                        protocol, start, count, NULL);
    Py_BEGIN_ALLOW_THREADS
    err = portres_block_acquire(protocol, start, count, &block, &conflict);
    Py_END_ALLOW_THREADS
    if (err) {
        portres_raise_os_error(err, "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)");
        if (conflict) {
            PyObject *type, *value, *tb, *port;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            port = PyLong_FromUnsignedLong(conflict);
            if (port && value && PyObject_SetAttrString(value, "conflict_port", port) < 0)
                PyErr_Clear();
            Py_XDECREF(port);
            PyErr_Restore(type, value, tb);
        }
        return NULL;
    }
    return portres_new_reservation(st, block);
}

/* associate/release: the same shape, sync or overlapped. */
static PyObject *token_ioctl(PyObject *module, PyObject *args, PyObject *kwargs, int op,
                             const char *format)
{
    static char *kwlist[] = {"socket", "token", "overlapped", "owner", NULL};
    portres_socket s;
    uint64_t token;
    int err, overlapped = 0;
    PyObject *owner = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, portres_socket_converter, &s,
                                     portres_token_converter, &token, &overlapped, &owner))
        return NULL;
    if (overlapped)
        return portres_start_overlapped(module, op, s, token, 0, 0, 0, owner);
    Py_BEGIN_ALLOW_THREADS
    err = op == PORTRES_OP_ASSOCIATE ? portres_associate(s, token) : portres_release(s, token);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, portres_op_call(op));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(associate_port_reservation_doc,
"associate_port_reservation(socket, token, overlapped=False, owner=None)\n\n"
"WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION): the socket's next bind to port 0\n"
"takes a port from the reservation `token`.  Synchronous with the GIL\n"
"released, or with overlapped=True returns an Overlapped (event-signalled);\n"
"`owner` is kept alive while it is pending.");

static PyObject *associate_port_reservation(PyObject *module, PyObject *args, PyObject *kwargs)
{
    return token_ioctl(module, args, kwargs, PORTRES_OP_ASSOCIATE,
                       "O&O&|pO:associate_port_reservation");
}

PyDoc_STRVAR(release_port_reservation_doc,
"release_port_reservation(socket, token, overlapped=False, owner=None)\n\n"
"WSAIoctl(SIO_RELEASE_PORT_RESERVATION): end the runtime reservation `token`\n"
"of this process.  Synchronous, or overlapped as associate_port_reservation.");

static PyObject *release_port_reservation(PyObject *module, PyObject *args, PyObject *kwargs)
{
    return token_ioctl(module, args, kwargs, PORTRES_OP_RELEASE,
                       "O&O&|pO:release_port_reservation");
}

#ifdef __linux__
PyDoc_STRVAR(register_persistent_token_doc,
"register_persistent_token(token, protocol, start, count)\n\n"
"Linux: make a persistent reservation's token (kept by the package) known\n"
"to associate_port_reservation in this process.");

static PyObject *register_persistent_token(PyObject *Py_UNUSED(module), PyObject *args)
{
    uint64_t token;
    int protocol, err;
    unsigned start, count;
    if (!PyArg_ParseTuple(args, "O&iII:register_persistent_token", portres_token_converter,
                          &token, &protocol, &start, &count))
        return NULL;
    err = portres_register_persistent(token, protocol, start, count);
    if (err == EINVAL) {
        PyErr_Format(PyExc_ValueError, "invalid persistent block: protocol %d, start %u, count %u",
                     protocol, start, count);
        return NULL;
    }
    if (err)
        return portres_raise_os_error(err, "register_persistent_token");
    Py_RETURN_NONE;
}

static PyObject *unregister_persistent_token(PyObject *Py_UNUSED(module), PyObject *arg)
{
    uint64_t token;
    if (!portres_token_converter(arg, &token))
        return NULL;
    portres_unregister_persistent(token);
    Py_RETURN_NONE;
}
#endif

#ifdef __linux__
PyDoc_STRVAR(port_sockets_doc,
"port_sockets(protocol, lo, hi) -> list of (family, state, port, uid, inode)\n\n"
"Linux: the kernel's sockets whose local port is in [lo, hi], every state,\n"
"bound-but-inactive TCP sockets included (NETLINK_SOCK_DIAG).");

static PyObject *port_sockets(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned lo, hi;
    portres_port_socket *items = NULL;
    size_t n = 0, i;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "iII:port_sockets", &protocol, &lo, &hi))
        return NULL;
    if ((protocol != PORTRES_TCP && protocol != PORTRES_UDP) || lo > hi || hi > 65535) {
        PyErr_Format(PyExc_ValueError, "invalid arguments: protocol %d, ports %u-%u", protocol,
                     lo, hi);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = portres_port_sockets(protocol, lo, hi, &items, &n);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "NETLINK_SOCK_DIAG");
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(iiIIk)", items[i].family, items[i].state, items[i].port,
                                    items[i].uid, items[i].inode);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, t);     /* steals t; cannot fail */
    }
    free(items);
    return list;
}
#endif

PyDoc_STRVAR(pending_overlapped_doc,
"_pending_overlapped() -> Overlapped\n\n"
"For tests of the wait machinery on Linux, where every real operation\n"
"completes at once: an operation that stays pending until cancelled.");

static PyObject *pending_overlapped(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return portres_start_overlapped(module, -1, (portres_socket)0, 0, 0, 0, 0, NULL);
}

PyDoc_STRVAR(bind_doc,
"bind(socket, family, host, port=0, flowinfo=0, scope_id=0) -> int\n\n"
"bind() that honours an association (plain bind() on Windows, where the\n"
"kernel does it).  Returns the port bound.");

static PyObject *bind_socket(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", SOCKADDR_KWLIST, NULL};
    portres_socket s;
    int family, len, err;
    const char *host;
    unsigned port = 0, bound = 0;
    unsigned long flowinfo = 0, scope_id = 0;
    struct sockaddr_storage ss;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&is|Ikk:bind", kwlist, portres_socket_converter,
                                     &s, &family, &host, &port, &flowinfo, &scope_id))
        return NULL;
    if (make_sockaddr(family, host, port, flowinfo, scope_id, &ss, &len))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_bind(s, (struct sockaddr *)&ss, len, &bound);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "bind");
    return PyLong_FromUnsignedLong(bound);
}

PyDoc_STRVAR(socket_info_doc,
"socket_info(socket) -> (family, type, bound_port)\n\n"
"The socket's address family, type and local port (0 when unbound).");

static PyObject *socket_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    portres_socket s;
    int family = 0, type = 0, err;
    unsigned port = 0;
    if (!portres_socket_converter(arg, &s))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_socket_info(s, &family, &type, &port);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, "getsockname");
    return Py_BuildValue("(iiI)", family, type, port);
}

#ifdef _WIN32
/* ------------------------------------------------- persistent (Windows) */

/* The iphlpapi function a persistent call makes, for messages. */
static const char *persistent_call_name(char op, int protocol)
{
    int tcp = protocol == PORTRES_TCP;
    switch (op) {
    case 'c':
        return tcp ? "CreatePersistentTcpPortReservation" : "CreatePersistentUdpPortReservation";
    case 'l':
        return tcp ? "LookupPersistentTcpPortReservation" : "LookupPersistentUdpPortReservation";
    default:
        return tcp ? "DeletePersistentTcpPortReservation" : "DeletePersistentUdpPortReservation";
    }
}

static int check_protocol(int protocol)
{
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP) {
        PyErr_Format(PyExc_ValueError, "protocol must be TCP (0) or UDP (1), not %d", protocol);
        return -1;
    }
    return 0;
}

/* (protocol, start, count): a block of 1..65535 ports from a port in
 * 1..65535, not past 65535 (persistent reservations have no wildcard). */
static int persistent_args(PyObject *args, const char *format, int *protocol, unsigned *start,
                           unsigned *count)
{
    int p, s, c;
    if (!PyArg_ParseTuple(args, format, &p, &s, &c))
        return -1;
    if (check_protocol(p) < 0)
        return -1;
    if (s < 1 || s > 65535 || c < 1 || c > 65535 || s + c - 1 > 65535) {
        PyErr_Format(PyExc_ValueError,
                     "invalid persistent block: start %d, count %d (start and count must be "
                     "in 1..65535 and the block must not pass 65535)", s, c);
        return -1;
    }
    *protocol = p;
    *start = (unsigned)s;
    *count = (unsigned)c;
    return 0;
}

PyDoc_STRVAR(create_persistent_port_reservation_doc,
"create_persistent_port_reservation(protocol, start, count) -> token\n\n"
"CreatePersistentTcpPortReservation / CreatePersistentUdpPortReservation:\n"
"reserve ports start..start+count-1 system-wide until deleted (survives\n"
"reboots; the token may change at reboot).  Administrator only.  Windows.");

static PyObject *create_persistent_port_reservation(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned start, count;
    uint64_t token = 0;
    if (persistent_args(args, "iii:create_persistent_port_reservation", &protocol, &start,
                        &count) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_persistent_create(protocol, start, count, &token);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, persistent_call_name('c', protocol));
    return PyLong_FromUnsignedLongLong(token);
}

PyDoc_STRVAR(lookup_persistent_port_reservation_doc,
"lookup_persistent_port_reservation(protocol, start, count) -> token\n\n"
"LookupPersistentTcpPortReservation / LookupPersistentUdpPortReservation:\n"
"the token of the persistent reservation of exactly this block.  Windows.");

static PyObject *lookup_persistent_port_reservation(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned start, count;
    uint64_t token = 0;
    if (persistent_args(args, "iii:lookup_persistent_port_reservation", &protocol, &start,
                        &count) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_persistent_lookup(protocol, start, count, &token);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, persistent_call_name('l', protocol));
    return PyLong_FromUnsignedLongLong(token);
}

PyDoc_STRVAR(delete_persistent_port_reservation_doc,
"delete_persistent_port_reservation(protocol, start, count)\n\n"
"DeletePersistentTcpPortReservation / DeletePersistentUdpPortReservation:\n"
"delete the persistent reservation of exactly this block.  Administrator\n"
"only.  Windows.");

static PyObject *delete_persistent_port_reservation(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned start, count;
    if (persistent_args(args, "iii:delete_persistent_port_reservation", &protocol, &start,
                        &count) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_persistent_delete(protocol, start, count);
    Py_END_ALLOW_THREADS
    if (err)
        return portres_raise_os_error(err, persistent_call_name('d', protocol));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(list_persistent_port_reservations_doc,
"list_persistent_port_reservations(protocol) -> [(start, count), ...]\n\n"
"The persistent reservations of `protocol`, sorted by start.  Windows has no\n"
"documented enumeration: the candidates come from the TCP/UDP module's\n"
"persistent store in the registry (an undocumented layout) and each one is\n"
"confirmed with LookupPersistent*PortReservation, so every block listed is\n"
"one lookup and delete accept.  Runtime reservations (e.g. Hyper-V's or\n"
"WinNAT's excluded ranges) are not listed.  Windows.");

static PyObject *list_persistent_port_reservations(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    portres_port_block *blocks = NULL;
    size_t n = 0, i;
    const char *call = NULL;
    PyObject *list, *item;

    if (!PyArg_ParseTuple(args, "i:list_persistent_port_reservations", &protocol))
        return NULL;
    if (check_protocol(protocol) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_persistent_list(protocol, &blocks, &n, &call);
    Py_END_ALLOW_THREADS
    if (err) {
        if (err == ERROR_NOT_ENOUGH_MEMORY && call == NULL)
            return PyErr_NoMemory();
        return portres_raise_os_error(err, call ? call : "list_persistent_port_reservations");
    }
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        item = Py_BuildValue("(II)", blocks[i].start, blocks[i].count);
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, item);  /* steals item; cannot fail */
    }
    portres_persistent_list_free(blocks);
    return list;
}

/* ---------------------------------------------- port owners (Windows) */

PyDoc_STRVAR(win_port_sockets_doc,
"port_sockets(protocol, lo, hi) -> list of (family, state, port, pid, 0)\n\n"
"Windows: the sockets whose local port is in [lo, hi], IPv4 and IPv6, from\n"
"GetExtendedTcpTable (TCP_TABLE_OWNER_PID_ALL: listeners and connections) or\n"
"GetExtendedUdpTable (UDP_TABLE_OWNER_PID).  The tuples have the Linux shape:\n"
"state uses Linux's TCP state numbers (LISTEN 10, ESTABLISHED 1, TIME_WAIT 6,\n"
"...; a MIB_TCP_STATE with no counterpart is 1000 + its value), UDP rows are\n"
"7 (bound); the owner is the PID (0: unknown) and the last field is 0.\n"
"TCP sockets bound but not listening are not in these tables.");

static PyObject *win_port_sockets(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned lo, hi;
    portres_win_socket *items = NULL;
    size_t n = 0, i;
    const char *call = NULL;
    PyObject *list;

    if (!PyArg_ParseTuple(args, "iII:port_sockets", &protocol, &lo, &hi))
        return NULL;
    if ((protocol != PORTRES_TCP && protocol != PORTRES_UDP) || lo > hi || hi > 65535) {
        PyErr_Format(PyExc_ValueError, "invalid arguments: protocol %d, ports %u-%u", protocol,
                     lo, hi);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = portres_win_port_sockets(protocol, lo, hi, &items, &n, &call);
    Py_END_ALLOW_THREADS
    if (err) {
        if (err == ERROR_NOT_ENOUGH_MEMORY && call == NULL)
            return PyErr_NoMemory();
        return portres_raise_os_error(err, call ? call : "port_sockets");
    }
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(iiIkk)", items[i].family, items[i].state, items[i].port,
                                    items[i].pid, 0UL);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, t);     /* steals t; cannot fail */
    }
    portres_win_port_sockets_free(items);
    return list;
}

PyDoc_STRVAR(process_name_doc,
"process_name(pid) -> str | None\n\n"
"Windows: the full path of the process's executable (OpenProcess with\n"
"PROCESS_QUERY_LIMITED_INFORMATION, QueryFullProcessImageNameW), or None\n"
"when it cannot be had (no such process, access denied, PID 0, ...).");

static PyObject *process_name(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long pid;
    char *name = NULL;
    size_t len = 0;
    int err;
    PyObject *result;

    if (!PyLong_Check(arg))
        return portres_type_error("pid must be an int", arg);
    pid = PyLong_AsUnsignedLong(arg);
    if (pid == (unsigned long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "pid must be an unsigned 32-bit int");
        }
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = portres_process_name(pid, &name, &len);
    Py_END_ALLOW_THREADS
    if (err == ERROR_NOT_ENOUGH_MEMORY)
        return PyErr_NoMemory();
    if (err || name == NULL)
        Py_RETURN_NONE;         /* no name is an answer, not an error */
    result = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "replace");
    portres_process_name_free(name);
    return result;
}
#endif /* _WIN32 */

static PyMethodDef module_methods[] = {
    {"acquire_port_reservation", (PyCFunction)(void (*)(void))acquire_port_reservation,
     METH_VARARGS | METH_KEYWORDS, acquire_port_reservation_doc},
    {"associate_port_reservation", (PyCFunction)(void (*)(void))associate_port_reservation,
     METH_VARARGS | METH_KEYWORDS, associate_port_reservation_doc},
    {"release_port_reservation", (PyCFunction)(void (*)(void))release_port_reservation,
     METH_VARARGS | METH_KEYWORDS, release_port_reservation_doc},
    {"_pending_overlapped", pending_overlapped, METH_NOARGS, pending_overlapped_doc},
#ifdef _WIN32
    {"create_persistent_port_reservation", create_persistent_port_reservation, METH_VARARGS,
     create_persistent_port_reservation_doc},
    {"lookup_persistent_port_reservation", lookup_persistent_port_reservation, METH_VARARGS,
     lookup_persistent_port_reservation_doc},
    {"delete_persistent_port_reservation", delete_persistent_port_reservation, METH_VARARGS,
     delete_persistent_port_reservation_doc},
    {"list_persistent_port_reservations", list_persistent_port_reservations, METH_VARARGS,
     list_persistent_port_reservations_doc},
    {"port_sockets", win_port_sockets, METH_VARARGS, win_port_sockets_doc},
    {"process_name", process_name, METH_O, process_name_doc},
#endif
#ifdef __linux__
    {"port_sockets", port_sockets, METH_VARARGS, port_sockets_doc},
    {"register_persistent_token", register_persistent_token, METH_VARARGS,
     register_persistent_token_doc},
    {"unregister_persistent_token", unregister_persistent_token, METH_O,
     "unregister_persistent_token(token)\n\nLinux: forget a persistent token."},
#endif
    {"bind", (PyCFunction)(void (*)(void))bind_socket, METH_VARARGS | METH_KEYWORDS, bind_doc},
    {"socket_info", socket_info, METH_O, socket_info_doc},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------ module */

/* The IOCTL codes do not fit a 32-bit signed long (Windows' long). */
static int add_unsigned_constant(PyObject *module, const char *name, unsigned long value)
{
    PyObject *v = PyLong_FromUnsignedLong(value);
    if (!v)
        return -1;
    if (PyModule_AddObject(module, name, v) < 0) {   /* steals v on success */
        Py_DECREF(v);
        return -1;
    }
    return 0;
}

static int module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    int err;

    Py_BEGIN_ALLOW_THREADS
    err = portres_backend_init();
    Py_END_ALLOW_THREADS
    if (err) {
        portres_raise_os_error(err, "WSAStartup");
        return -1;
    }
    st->PortReservation_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &PortReservation_spec, NULL);
    if (!st->PortReservation_Type)
        return -1;
    if (PyModule_AddType(module, st->PortReservation_Type) < 0)
        return -1;
    st->Overlapped_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &portres_overlapped_spec, NULL);
    if (!st->Overlapped_Type)
        return -1;
    if (PyModule_AddType(module, st->Overlapped_Type) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "TCP", PORTRES_TCP) < 0
        || PyModule_AddIntConstant(module, "UDP", PORTRES_UDP) < 0
        || add_unsigned_constant(module, "SIO_ACQUIRE_PORT_RESERVATION", 0x98000064UL) < 0
        || add_unsigned_constant(module, "SIO_RELEASE_PORT_RESERVATION", 0x98000065UL) < 0
        || add_unsigned_constant(module, "SIO_ASSOCIATE_PORT_RESERVATION", 0x98000066UL) < 0)
        return -1;
#ifdef _WIN32
    if (PyModule_AddStringConstant(module, "BACKEND", "windows") < 0)
        return -1;
#else
    if (PyModule_AddStringConstant(module, "BACKEND", "linux") < 0)
        return -1;
#endif
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(get_state(module)->PortReservation_Type);
    Py_VISIT(get_state(module)->Overlapped_Type);
    return 0;
}

static int module_clear(PyObject *module)
{
    Py_CLEAR(get_state(module)->PortReservation_Type);
    Py_CLEAR(get_state(module)->Overlapped_Type);
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Shared state is the backends' own, guarded by their locks. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"Low-level port reservations: one function per Win32 call.\n"
"Use the portres package; it validates arguments and explains errors.");

struct PyModuleDef portres_module_def = {
    PyModuleDef_HEAD_INIT,
    "portres._portres",
    module_doc,
    sizeof(module_state),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC PyInit__portres(void)
{
    return PyModuleDef_Init(&portres_module_def);
}
