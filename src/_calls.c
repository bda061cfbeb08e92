/*
 * _calls.c - the module's functions: one per backend call (portres.h),
 * mirroring the Win32 calls one for one.  Arguments are parsed and
 * validated here (_util.c has the rules), the backend is called with the
 * GIL released, and a failure raises OSError naming the call the backend
 * recorded.  Policy (messages with hints, defaults) lives in the portres
 * package.
 */
#include "_util.h"

#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <errno.h>
#endif

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
    module_state *st = PyModule_GetState(module);
    int protocol, err, overlapped = 0;
    unsigned start, count, conflict = 0;
    portres_block *block = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iII|p:acquire_port_reservation", kwlist,
                                     &protocol, &start, &count, &overlapped))
        return NULL;
    if (portres_check_protocol(protocol) < 0 || portres_check_block(start, count) < 0)
        return NULL;
    if (overlapped)
        return portres_start_overlapped(module, PORTRES_OP_ACQUIRE, (portres_socket)0, 0, protocol,
                                        start, count, NULL);
    PORTRES_CALL(err, portres_block_acquire(protocol, start, count, &block, &conflict));
    if (err) {
        portres_raise_backend_error(err, portres_op_call(PORTRES_OP_ACQUIRE), "portres.acquire");
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
    PORTRES_CALL(err, op == PORTRES_OP_ASSOCIATE ? portres_associate(s, token)
                                                 : portres_release(s, token));
    if (err)
        return portres_raise_backend_error(err, portres_op_call(op), portres_op_name(op));
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
PyDoc_STRVAR(associate_range_doc,
             "associate_range(socket, protocol, start, count, overlapped=False, owner=None)\n\n"
             "Linux: the socket's next bind() through this module takes a port of the\n"
             "persistent block [start, start+count) of `protocol`, if the kernel's\n"
             "ip_local_reserved_ports still holds all of it then (else ENOENT).  The\n"
             "package resolves persistent tokens to blocks; no token is kept here.\n"
             "With overlapped=True returns an Overlapped (already complete, as every\n"
             "Linux operation); `owner` as for associate_port_reservation.");

static PyObject *associate_range(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", "protocol", "start", "count", "overlapped", "owner", NULL};
    portres_socket s;
    int protocol, err, overlapped = 0;
    long start, count;
    PyObject *owner = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&ill|pO:associate_range", kwlist,
                                     portres_socket_converter, &s, &protocol, &start, &count,
                                     &overlapped, &owner))
        return NULL;
    if (portres_check_persistent_block(protocol, start, count, 1) < 0)
        return NULL;
    if (overlapped)
        return portres_start_overlapped(module, PORTRES_OP_ASSOCIATE_RANGE, s, 0, protocol,
                                        (unsigned)start, (unsigned)count, owner);
    /* Inspects the socket (getsockname, getsockopt, fstat): GIL released,
     * as for every backend call. */
    PORTRES_CALL(err, portres_associate_range(s, protocol, (unsigned)start, (unsigned)count));
    if (err)
        return portres_raise_backend_error(err, "associate_range", "portres.associate");
    Py_RETURN_NONE;
}
#endif

#ifdef __linux__
PyDoc_STRVAR(
    port_sockets_doc,
    "port_sockets(protocol, lo, hi, detail=False) -> list of (family, state, port, uid, inode)\n\n"
    "With detail true, each tuple also has (local address bytes, remote address\n"
    "bytes, remote port), network order, 4 or 16 bytes by family.\n"
    "Linux: the kernel's sockets whose local port is in [lo, hi], every state,\n"
    "bound-but-inactive TCP sockets included (NETLINK_SOCK_DIAG).");

static PyObject *port_sockets(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned lo, hi;
    portres_port_socket *items = NULL;
    size_t n = 0, i;
    PyObject *list;
    int detail = 0;
    if (!PyArg_ParseTuple(args, "iII|p:port_sockets", &protocol, &lo, &hi, &detail))
        return NULL;
    if (portres_check_port_range(protocol, lo, hi) < 0)
        return NULL;
    PORTRES_CALL(err, portres_port_sockets(protocol, lo, hi, &items, &n));
    if (err)
        return portres_raise_backend_error(err, "port_sockets", NULL);
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *t;
        Py_ssize_t alen = items[i].family == AF_INET ? 4 : 16;
        if (detail)
            t = Py_BuildValue("(iiIIky#y#I)", items[i].family, items[i].state, items[i].port,
                              items[i].uid, items[i].inode, (const char *)items[i].local, alen,
                              (const char *)items[i].remote, alen, items[i].remote_port);
        else
            t = Py_BuildValue("(iiIIk)", items[i].family, items[i].state, items[i].port,
                              items[i].uid, items[i].inode);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, t); /* steals t; cannot fail */
    }
    portres_port_sockets_free(items);
    return list;
}
#endif

PyDoc_STRVAR(pending_overlapped_doc,
             "_pending_overlapped(on_cancel=None) -> Overlapped\n\n"
             "For tests of the wait machinery, where no real operation stays pending:\n"
             "an operation that stays pending until cancelled, then completes with\n"
             "ON_CANCEL: None for the platform's abort (ECANCELED,\n"
             "ERROR_OPERATION_ABORTED), 0 for a success (an operation that outran\n"
             "the cancel), or that error code.  No IOCTL is issued.");

static PyObject *pending_overlapped(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"on_cancel", NULL};
    PyObject *on_cancel = Py_None;
    long code = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:_pending_overlapped", kwlist, &on_cancel))
        return NULL;
    if (on_cancel != Py_None) {
        if (PyBool_Check(on_cancel) || !PyLong_Check(on_cancel))
            return portres_type_error("on_cancel must be None or an int error code", on_cancel);
        code = PyLong_AsLong(on_cancel);
        if (code == -1 && PyErr_Occurred())
            return NULL;
        if (code < 0 || code > 0x7FFFFFFFL) {
            PyErr_Format(PyExc_ValueError, "on_cancel must be a non-negative error code, not %ld",
                         code);
            return NULL;
        }
    }
    return portres_start_pending_overlapped(module, (int)code);
}

#ifdef __linux__
PyDoc_STRVAR(reserved_ports_doc,
             "reserved_ports() -> list of (first, last)\n\n"
             "Linux: net.ipv4.ip_local_reserved_ports of this network namespace, as sorted\n"
             "runs of consecutive ports (inclusive); [] where the kernel has no such sysctl.");

static PyObject *reserved_ports(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    portres_port_run *runs = NULL;
    size_t n = 0, i;
    int err;
    PyObject *list;

    PORTRES_CALL(err, portres_reserved_ports(&runs, &n));
    if (err)
        return portres_raise_backend_error(err, "open", NULL);
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(II)", runs[i].first, runs[i].last);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, t); /* steals t; cannot fail */
    }
    free(runs);
    return list;
}
#endif

PyDoc_STRVAR(bind_doc, "bind(socket, family, host, port=0, flowinfo=0, scope_id=0) -> int\n\n"
                       "bind() that honours an association (plain bind() on Windows, where the\n"
                       "kernel does it).  Returns the port bound.");

static PyObject *bind_socket(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", PORTRES_SOCKADDR_KWLIST, NULL};
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
    PORTRES_CALL(err, portres_bind(s, (struct sockaddr *)&ss, len, &bound));
    if (err)
        return portres_raise_backend_error(err, "bind", "portres.bind");
    return PyLong_FromUnsignedLong(bound);
}

PyDoc_STRVAR(socket_info_doc, "socket_info(socket) -> (family, type, bound_port)\n\n"
                              "The socket's address family, type and local port (0 when unbound).");

static PyObject *socket_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    portres_socket s;
    int family = 0, type = 0, err;
    unsigned port = 0;
    if (!portres_socket_converter(arg, &s))
        return NULL;
    PORTRES_CALL(err, portres_socket_info(s, &family, &type, &port));
    if (err)
        return portres_raise_backend_error(err, "getsockname", NULL);
    return Py_BuildValue("(iiI)", family, type, port);
}

#ifdef _WIN32
/* ------------------------------------------------- persistent (Windows) */

/* A calloc of the backend failed (it records the call "calloc"). */
static int out_of_memory(int err)
{
    const char *call = portres_error_call();
    return err == ERROR_NOT_ENOUGH_MEMORY && call && strcmp(call, "calloc") == 0;
}

/* (protocol, start, count): a block of 1..65535 ports from a port in
 * 1..65535, not past 65535 (persistent reservations have no wildcard). */
static int persistent_args(PyObject *args, const char *format, int *protocol, unsigned *start,
                           unsigned *count)
{
    int p, s, c;
    if (!PyArg_ParseTuple(args, format, &p, &s, &c))
        return -1;
    if (portres_check_protocol(p) < 0 || portres_check_persistent_block(p, s, c, 0) < 0)
        return -1;
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
    if (persistent_args(args, "iii:create_persistent_port_reservation", &protocol, &start, &count)
        < 0)
        return NULL;
    PORTRES_CALL(err, portres_persistent_create(protocol, start, count, &token));
    if (err)
        return portres_raise_backend_error(err, "create_persistent_port_reservation",
                                           "portres.create_persistent");
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
    if (persistent_args(args, "iii:lookup_persistent_port_reservation", &protocol, &start, &count)
        < 0)
        return NULL;
    PORTRES_CALL(err, portres_persistent_lookup(protocol, start, count, &token));
    if (err)
        return portres_raise_backend_error(err, "lookup_persistent_port_reservation",
                                           "portres.lookup_persistent");
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
    if (persistent_args(args, "iii:delete_persistent_port_reservation", &protocol, &start, &count)
        < 0)
        return NULL;
    PORTRES_CALL(err, portres_persistent_delete(protocol, start, count));
    if (err)
        return portres_raise_backend_error(err, "delete_persistent_port_reservation",
                                           "portres.delete_persistent");
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
    PyObject *list, *item;

    if (!PyArg_ParseTuple(args, "i:list_persistent_port_reservations", &protocol))
        return NULL;
    if (portres_check_protocol(protocol) < 0)
        return NULL;
    PORTRES_CALL(err, portres_persistent_list(protocol, &blocks, &n));
    if (err) {
        if (out_of_memory(err))
            return PyErr_NoMemory();
        return portres_raise_backend_error(err, "list_persistent_port_reservations",
                                           "portres.list_persistent");
    }
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        item = Py_BuildValue("(II)", blocks[i].start, blocks[i].count);
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, item); /* steals item; cannot fail */
    }
    portres_persistent_list_free(blocks);
    return list;
}

/* ---------------------------------------------- port owners (Windows) */

PyDoc_STRVAR(
    port_sockets_doc,
    "port_sockets(protocol, lo, hi, detail=False) -> list of (family, state, port, pid, 0)\n\n"
    "With detail true, each tuple also has (local address bytes, remote address\n"
    "bytes, remote port), network order, 4 or 16 bytes by family.\n"
    "Windows: the sockets whose local port is in [lo, hi], IPv4 and IPv6, from\n"
    "GetExtendedTcpTable (TCP_TABLE_OWNER_PID_ALL: listeners and connections) or\n"
    "GetExtendedUdpTable (UDP_TABLE_OWNER_PID).  The tuples have the Linux shape:\n"
    "state uses Linux's TCP state numbers (LISTEN 10, ESTABLISHED 1, TIME_WAIT 6,\n"
    "...; a MIB_TCP_STATE with no counterpart is 1000 + its value), UDP rows are\n"
    "7 (bound); the owner is the PID (0: unknown) and the last field is 0.\n"
    "TCP sockets bound but not listening are not in these tables.");

static PyObject *port_sockets(PyObject *Py_UNUSED(module), PyObject *args)
{
    int protocol, err;
    unsigned lo, hi;
    portres_port_socket *items = NULL;
    size_t n = 0, i;
    PyObject *list;

    int detail = 0;
    if (!PyArg_ParseTuple(args, "iII|p:port_sockets", &protocol, &lo, &hi, &detail))
        return NULL;
    if (portres_check_port_range(protocol, lo, hi) < 0)
        return NULL;
    PORTRES_CALL(err, portres_port_sockets(protocol, lo, hi, &items, &n));
    if (err) {
        if (out_of_memory(err))
            return PyErr_NoMemory();
        return portres_raise_backend_error(err, "port_sockets", NULL);
    }
    list = PyList_New((Py_ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *t;
        Py_ssize_t alen = items[i].family == AF_INET ? 4 : 16;
        if (detail)
            t = Py_BuildValue("(iiIkky#y#I)", items[i].family, items[i].state, items[i].port,
                              items[i].pid, 0UL, (const char *)items[i].local, alen,
                              (const char *)items[i].remote, alen, items[i].remote_port);
        else
            t = Py_BuildValue("(iiIkk)", items[i].family, items[i].state, items[i].port,
                              items[i].pid, 0UL);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SetItem(list, (Py_ssize_t)i, t); /* steals t; cannot fail */
    }
    portres_port_sockets_free(items);
    return list;
}

PyDoc_STRVAR(windows_build_doc,
             "windows_build() -> (major, minor, build)\n\n"
             "Windows: the version of the running system (RtlGetVersion), whatever\n"
             "the process's manifest makes GetVersionExW and sys.getwindowsversion()\n"
             "report (6.2, build 9200, without a Windows 10 manifest).");

static PyObject *windows_build(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    unsigned long major = 0, minor = 0, build = 0;
    int err;
    PORTRES_CALL(err, portres_windows_build(&major, &minor, &build));
    if (err)
        return portres_raise_backend_error(err, "RtlGetVersion", NULL);
    return Py_BuildValue("(kkk)", major, minor, build);
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
    PORTRES_CALL(err, portres_process_name(pid, &name, &len));
    if (err == ERROR_NOT_ENOUGH_MEMORY)
        return PyErr_NoMemory();
    if (err || name == NULL)
        Py_RETURN_NONE; /* no name is an answer, not an error */
    result = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "replace");
    portres_process_name_free(name);
    return result;
}
#endif /* _WIN32 */

PyMethodDef portres_module_functions[] = {
    {"acquire_port_reservation", (PyCFunction)(void (*)(void))acquire_port_reservation,
     METH_VARARGS | METH_KEYWORDS, acquire_port_reservation_doc},
    {"associate_port_reservation", (PyCFunction)(void (*)(void))associate_port_reservation,
     METH_VARARGS | METH_KEYWORDS, associate_port_reservation_doc},
    {"release_port_reservation", (PyCFunction)(void (*)(void))release_port_reservation,
     METH_VARARGS | METH_KEYWORDS, release_port_reservation_doc},
    {"_pending_overlapped", (PyCFunction)(void (*)(void))pending_overlapped,
     METH_VARARGS | METH_KEYWORDS, pending_overlapped_doc},
#ifdef _WIN32
    {"create_persistent_port_reservation", create_persistent_port_reservation, METH_VARARGS,
     create_persistent_port_reservation_doc},
    {"lookup_persistent_port_reservation", lookup_persistent_port_reservation, METH_VARARGS,
     lookup_persistent_port_reservation_doc},
    {"delete_persistent_port_reservation", delete_persistent_port_reservation, METH_VARARGS,
     delete_persistent_port_reservation_doc},
    {"list_persistent_port_reservations", list_persistent_port_reservations, METH_VARARGS,
     list_persistent_port_reservations_doc},
    {"port_sockets", port_sockets, METH_VARARGS, port_sockets_doc},
    {"process_name", process_name, METH_O, process_name_doc},
    {"windows_build", windows_build, METH_NOARGS, windows_build_doc},
#endif
#ifdef __linux__
    {"associate_range", (PyCFunction)(void (*)(void))associate_range, METH_VARARGS | METH_KEYWORDS,
     associate_range_doc},
    {"port_sockets", port_sockets, METH_VARARGS, port_sockets_doc},
    {"reserved_ports", reserved_ports, METH_NOARGS, reserved_ports_doc},
#endif
    {"bind", (PyCFunction)(void (*)(void))bind_socket, METH_VARARGS | METH_KEYWORDS, bind_doc},
    {"socket_info", socket_info, METH_O, socket_info_doc},
    {NULL, NULL, 0, NULL},
};
