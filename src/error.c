/*
 * error.c - the record of the call that failed (portres.h, "Errors"): one
 * per thread, like errno and GetLastError(), so that no backend function
 * needs an extra out-parameter and two threads never see each other's.
 */
#include "portres.h"

#if defined(_MSC_VER)
#define PORTRES_THREAD_LOCAL __declspec(thread)
#else
#define PORTRES_THREAD_LOCAL _Thread_local
#endif

static PORTRES_THREAD_LOCAL const char *failed_call;

/* Compared by address: the one record that names no call. */
const char portres_refused[] = "refused by portres";

int portres_refuse(int code)
{
    failed_call = portres_refused;
    return code;
}

int portres_fail(int code, const char *call)
{
    failed_call = call;
    return code;
}

const char *portres_error_call(void)
{
    return failed_call;
}

void portres_error_clear(void)
{
    failed_call = NULL;
}
