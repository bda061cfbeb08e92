/*
 * _portres.c - the CPython module portres._portres: its definition, state
 * and initialisation.  The types live in _reservation.c and _overlapped.c,
 * the functions in _calls.c; every OS call is made by a backend
 * (src/windows/ or src/linux/, through portres.h) with the GIL released.
 *
 * Modern extension practice: multi-phase init, heap types, per-module
 * state, Py_mod_gil for free-threaded builds, no private CPython API.
 */
#include "_util.h"

static inline module_state *get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------ module */

/* The IOCTL codes do not fit a 32-bit signed long (Windows' long). */
static int add_unsigned_constant(PyObject *module, const char *name, unsigned long value)
{
    PyObject *v = PyLong_FromUnsignedLong(value);
    if (!v)
        return -1;
    if (PyModule_AddObject(module, name, v) < 0) { /* steals v on success */
        Py_DECREF(v);
        return -1;
    }
    return 0;
}

static int module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    int err;

    PORTRES_CALL(err, portres_backend_init());
    if (err) {
        portres_raise_backend_error(err, "portres_backend_init", NULL);
        return -1;
    }
    st->PortReservation_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &portres_reservation_spec, NULL);
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
    if (PyModule_AddStringConstant(module, "BACKEND", "windows") < 0
        || PyModule_AddIntConstant(module, "MIB_STATE_OTHER", PORTRES_MIB_STATE_OTHER) < 0)
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

PyDoc_STRVAR(module_doc, "Low-level port reservations: one function per Win32 call.\n"
                         "Use the portres package; it validates arguments and explains errors.");

struct PyModuleDef portres_module_def = {
    PyModuleDef_HEAD_INIT,
    "portres._portres",
    module_doc,
    sizeof(module_state),
    portres_module_functions,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC PyInit__portres(void)
{
    return PyModuleDef_Init(&portres_module_def);
}
