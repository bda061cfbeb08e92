/*
 * pyconfig.h - a minimal Windows pyconfig.h, for compile-only checks
 * (-fsyntax-only) of the binding with mingw-w64 against the installed
 * CPython headers, which are platform-neutral except for this file.
 * Modelled on CPython's PC/pyconfig.h (the one shipped with Windows
 * Pythons): the macros that change what Python.h declares or how.
 * Put this directory first on the include path.  Not for linking.
 */
#ifndef Py_CONFIG_H
#define Py_CONFIG_H

#ifndef _WIN32
#error "tests/windows/pyconfig.h is for Windows targets (mingw-w64) only"
#endif

/* Platform: MS_WIN32 covers Win32 and Win64, MS_WIN64 only Win64. */
#define MS_WIN32
#define MS_WINDOWS
#ifdef _WIN64
#define MS_WIN64
#endif
#define NT_THREADS  /* pythread.h: Win32 TLS keys, no pthreads */
#define WITH_THREAD /* obsolete since 3.7, harmless before */

/* Extensions import the core from pythonXY.dll: PyAPI_FUNC/PyAPI_DATA
 * become __declspec(dllimport), PyMODINIT_FUNC __declspec(dllexport). */
#define Py_ENABLE_SHARED 1
#define MS_COREDLL
#define HAVE_DECLSPEC_DLL

/* LLP64 (Win64) / ILP32 (Win32): long stays 32 bits on both. */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_FLOAT 4
#define SIZEOF_DOUBLE 8
#define SIZEOF_WCHAR_T 2
#define SIZEOF__BOOL 1
#define SIZEOF_OFF_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_TIME_T 8 /* 64-bit time_t in the UCRT */
#define SIZEOF_PID_T SIZEOF_INT
#ifdef _WIN64
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_HKEY 8
#else
#define SIZEOF_VOID_P 4
#define SIZEOF_SIZE_T 4
#define SIZEOF_HKEY 4
#endif
#define LONG_BIT 32
#define WORD_BIT 32
#define PY_LONG_LONG long long /* PC/pyconfig.h, GCC branch */
#define HAVE_SSIZE_T 1         /* mingw-w64's corecrt.h defines ssize_t */
#define HAVE_LARGEFILE_SUPPORT
#define PLATFORM "win32"
#define COMPILER "[gcc]"

/* The headers PC/pyconfig.h says exist (Python.h/pyport.h include
 * some of them), and those it pulls in for every extension. */
#define HAVE_IO_H
#define HAVE_STDDEF_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_WCHAR_H 1
#define HAVE_ERRNO_H 1
#define HAVE_FCNTL_H 1
#define HAVE_SIGNAL_H 1
#define HAVE_PROCESS_H 1
#include <io.h>
#include <stdio.h>
#include <float.h>
#define HAVE_COPYSIGN 1
#define HAVE_DECL_ISINF 1
#define HAVE_DECL_ISNAN 1
#define HAVE_DYNAMIC_LOADING
#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1
#define Py_SOCKET_FD_CAN_BE_GE_FD_SETSIZE /* SOCKETs are handles */

#endif /* Py_CONFIG_H */
