/*
 * check.h - the pass/fail reporting both Windows test programs
 * (test_windows.c, test_kernel_model.c) print their results with: one
 * "ok  " or "FAIL" line per check, counted for the summary main() prints.
 * Included once by each program, after <stdarg.h> and <stdio.h>.
 */
#ifndef PORTRES_TESTS_WINDOWS_CHECK_H
#define PORTRES_TESTS_WINDOWS_CHECK_H

static int n_passed, n_failed;

static void check(int ok, const char *what, const char *detail_fmt, ...)
{
    printf("%s - %s", ok ? "ok  " : "FAIL", what);
    if (!ok && detail_fmt != NULL) {
        va_list ap;
        printf(" (");
        va_start(ap, detail_fmt);
        vprintf(detail_fmt, ap);
        va_end(ap);
        printf(")");
    }
    printf("\n");
    fflush(stdout);
    if (ok)
        n_passed++;
    else
        n_failed++;
}

#endif
