/*
 * backend_sources.h - the Windows backend's sources (src/error.c and
 * every src/windows/ file), compiled into a test program after its seams are
 * #defined: one list for every program of tests/windows/.
 */
#include "../../src/error.c"
#include "../../src/windows/ioctl.c"
#include "../../src/windows/overlapped.c"
#include "../../src/windows/persistent.c"
#include "../../src/windows/owners.c"
