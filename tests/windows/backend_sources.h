/*
 * backend_sources.h - the Windows backend's sources, compiled into a test
 * program after its seams are #defined (one list for every program).
 */
#include "../../src/windows.c"
