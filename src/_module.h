/*
 * _module.h - what the binding's files (_portres.c, _overlapped.c) share:
 * the module state and the argument/error helpers.  CPython code only.
 */
#ifndef PORTRES_MODULE_H
#define PORTRES_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "portres.h"

#ifndef Py_TPFLAGS_IMMUTABLETYPE           /* Python 3.9 */
#  define Py_TPFLAGS_IMMUTABLETYPE 0
#endif
#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION  /* Python 3.9: no tp_new slot has the same effect */
#  define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif
#if PY_VERSION_HEX < 0x030A0000   /* Python 3.9 */
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
static inline PyObject *Py_XNewRef(PyObject *o) { Py_XINCREF(o); return o; }
#endif

typedef struct {
    PyTypeObject *PortReservation_Type;
    PyTypeObject *Overlapped_Type;
} module_state;

extern struct PyModuleDef portres_module_def;

/* TypeError("WHAT, not TYPENAME"). Returns NULL.  Reads the type's
 * __name__: the limited API hides PyTypeObject's fields (tp_name). */
PyObject *portres_type_error(const char *what, PyObject *obj);

/* OSError(errno, strerror, CALL[, winerror]). Returns NULL. */
PyObject *portres_raise_os_error(int err, const char *call);

/* "O&" converters: a socket descriptor / SOCKET; a non-zero u64 token. */
int portres_socket_converter(PyObject *obj, void *out);
int portres_token_converter(PyObject *obj, void *out);

/* A PortReservation owning BLOCK (freed on failure). */
PyObject *portres_new_reservation(module_state *st, portres_block *block);

/* The Overlapped type (_overlapped.c). */
extern PyType_Spec portres_overlapped_spec;
PyObject *portres_new_overlapped(module_state *st, portres_overlapped *ov, int op,
                                 PyObject *owner);
PyObject *portres_start_overlapped(PyObject *module, int op, portres_socket s, uint64_t token,
                                   int protocol, unsigned start, unsigned count, PyObject *owner);

/* The IOCTL each operation issues, for messages. */
const char *portres_op_call(int op);

#endif
