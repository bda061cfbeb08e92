/*
 * _util.h - what every file of the binding (src/_*.c) shares: the module
 * state, the argument converters and validators, sockaddr building and
 * OSError raising.  CPython code only; the backends' interface is
 * portres.h.
 *
 * The binding's files depend on each other in one direction only:
 *   _util.c <- _reservation.c <- _overlapped.c <- _calls.c <- _portres.c
 */
#ifndef PORTRES_UTIL_H
#define PORTRES_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "portres.h"

#ifndef Py_TPFLAGS_IMMUTABLETYPE /* Python 3.9 */
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif
#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION /* Python 3.9: no tp_new slot has the same effect */
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif
#if PY_VERSION_HEX < 0x030A0000 /* Python 3.9 */
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
static inline PyObject *Py_XNewRef(PyObject *o)
{
    Py_XINCREF(o);
    return o;
}
#endif

/* The module's state (_portres.c owns the module). */
typedef struct {
    PyTypeObject *PortReservation_Type;
    PyTypeObject *Overlapped_Type;
} module_state;

/* ---------------------------------------------------------------- errors */

/* TypeError("WHAT, not TYPENAME"). Returns NULL.  Reads the type's
 * __name__: the limited API hides PyTypeObject's fields (tp_name). */
PyObject *portres_type_error(const char *what, PyObject *obj);

/* OSError(errno, strerror, CALL[, winerror]). Returns NULL. */
PyObject *portres_raise_os_error(int err, const char *call);

/* The OSError of a backend failure: ERR with the call the backend recorded
 * (portres.h, "Errors"); FALLBACK only if it recorded none.  A refusal by a
 * rule of portres's (portres_refuse) names OP, the package operation
 * refused ("portres.bind"; FALLBACK when OP is NULL). Returns NULL. */
PyObject *portres_raise_backend_error(int err, const char *fallback, const char *op);

/* Call a backend function with the GIL released, its error record
 * cleared first: PORTRES_CALL(err, portres_bind(...)). */
#define PORTRES_CALL(err, expr)                                           \
    do {                                                                  \
        PyThreadState *portres_save_;                                     \
        portres_error_clear();                                            \
        portres_save_ = PyEval_SaveThread(); /* Py_BEGIN_ALLOW_THREADS */ \
        (err) = (expr);                                                   \
        PyEval_RestoreThread(portres_save_); /* Py_END_ALLOW_THREADS */   \
    } while (0)

/* ------------------------------------------------------------ converters */

/* "O&" converters: a socket descriptor / SOCKET; a non-zero u64 token. */
int portres_socket_converter(PyObject *obj, void *out);
int portres_token_converter(PyObject *obj, void *out);

/* ------------------------------------------------------------ validation
 *
 * The one C place of the block rules (portres.h: the caller validates).
 * Each sets ValueError and returns -1, or returns 0. */

/* PORTRES_TCP or PORTRES_UDP. */
int portres_check_protocol(int protocol);
/* A runtime block: COUNT in 1..65535 from START in 0..65535 (0: the system
 * picks), not past 65535. */
int portres_check_block(unsigned start, unsigned count);
/* A persistent block: START and COUNT in 1..65535, not past 65535
 * (MESSAGE_PROTOCOL: the message names the protocol too). */
int portres_check_persistent_block(int protocol, long start, long count, int message_protocol);
/* A port range [LO, HI] within 0..65535, with its protocol. */
int portres_check_port_range(int protocol, unsigned lo, unsigned hi);

/* -------------------------------------------------------------- sockaddr */

/* Build a sockaddr from (family, numeric host, port, flowinfo, scope_id).
 * HOST must be an IP literal or "" for the wildcard: the package resolves
 * names before calling.  Returns 0, or -1 with ValueError set. */
int portres_make_sockaddr(int family, const char *host, unsigned port, unsigned long flowinfo,
                          unsigned long scope_id, struct sockaddr_storage *ss, int *len);

#define PORTRES_SOCKADDR_KWLIST "family", "host", "port", "flowinfo", "scope_id"

/* ------------------------------------------------ types (one file each) */

/* _reservation.c: a PortReservation owning BLOCK (freed on failure). */
extern PyType_Spec portres_reservation_spec;
PyObject *portres_new_reservation(module_state *st, portres_block *block);

/* _overlapped.c: the Overlapped type, and starting one OP. */
extern PyType_Spec portres_overlapped_spec;
PyObject *portres_start_overlapped(PyObject *module, int op, portres_socket s, uint64_t token,
                                   int protocol, unsigned start, unsigned count, PyObject *owner);
/* The test operation of portres_ov_start_pending (portres.h). */
PyObject *portres_start_pending_overlapped(PyObject *module, int cancel_error);
/* The IOCTL each operation stands for, for messages (on Linux, the
 * package function: no Windows call is named there). */
const char *portres_op_call(int op);
/* The package function each operation is, for a refusal by portres's own
 * rule (portres.h, "Errors"): "portres.associate"... */
const char *portres_op_name(int op);

/* _calls.c: the module's functions, one per backend call. */
extern PyMethodDef portres_module_functions[];

#endif /* PORTRES_UTIL_H */
