/*
 * _util.c - the binding's shared helpers: OSError raising, the argument
 * converters, the block rules, sockaddr building.
 */
#include "_util.h"

#include <string.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#endif

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

PyObject *portres_raise_backend_error(int err, const char *fallback, const char *op)
{
    const char *call = portres_error_call();
    if (call == portres_refused)
        call = op ? op : fallback;
    return portres_raise_os_error(err, call ? call : fallback);
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
    switch (portres_socket_from_u64(v, (portres_socket *)out)) {
    case 0:
        return 1;
    case WSAENOTSOCK:
        PyErr_SetString(PyExc_ValueError, "socket is INVALID_SOCKET");
        return 0;
    default: /* a 32-bit SOCKET (x86) cannot hold it: never truncate */
        PyErr_Format(PyExc_OverflowError, "socket handle %llu does not fit a %d-bit SOCKET", v,
                     (int)(sizeof(SOCKET) * 8));
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

/* ------------------------------------------------------------ validation */

static int valid_protocol(int protocol)
{
    return protocol == PORTRES_TCP || protocol == PORTRES_UDP;
}

int portres_check_protocol(int protocol)
{
    if (!valid_protocol(protocol)) {
        PyErr_Format(PyExc_ValueError, "protocol must be TCP (0) or UDP (1), not %d", protocol);
        return -1;
    }
    return 0;
}

int portres_check_block(unsigned start, unsigned count)
{
    if (count < 1 || count > 65535 || start > 65535 || (start && start + count - 1 > 65535)) {
        PyErr_Format(PyExc_ValueError, "invalid block: start %u, count %u", start, count);
        return -1;
    }
    return 0;
}

int portres_check_persistent_block(int protocol, long start, long count, int message_protocol)
{
    if (start >= 1 && start <= 65535 && count >= 1 && count <= 65535 && start + count - 1 <= 65535
        && (valid_protocol(protocol) || !message_protocol))
        return 0;
    if (message_protocol)
        PyErr_Format(PyExc_ValueError,
                     "invalid persistent block: protocol %d, start %lu, count %lu", protocol,
                     (unsigned long)start, (unsigned long)count);
    else
        PyErr_Format(PyExc_ValueError,
                     "invalid persistent block: start %ld, count %ld (start and count must be "
                     "in 1..65535 and the block must not pass 65535)",
                     start, count);
    return -1;
}

int portres_check_port_range(int protocol, unsigned lo, unsigned hi)
{
    if (!valid_protocol(protocol) || lo > hi || hi > 65535) {
        PyErr_Format(PyExc_ValueError, "invalid arguments: protocol %d, ports %u-%u", protocol, lo,
                     hi);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- sockaddr */

int portres_make_sockaddr(int family, const char *host, unsigned port, unsigned long flowinfo,
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
