/*
 * windows/owners.c - who holds a port: the TCP and UDP endpoint tables with owning
 * PIDs, and the image name of a PID.
 */
#ifdef _WIN32

#include "windows.h"

/* ------------------------------------------------------------------------
 * Who holds a port: the TCP and UDP endpoint tables with owning PIDs, and
 * the image name of a PID.
 *
 * GetExtendedTcpTable with TCP_TABLE_OWNER_PID_ALL returns, for AF_INET, a
 * MIB_TCPTABLE_OWNER_PID, for AF_INET6 a MIB_TCP6TABLE_OWNER_PID [GTT]
 * Remarks; GetExtendedUdpTable with UDP_TABLE_OWNER_PID a
 * MIB_UDPTABLE_OWNER_PID / MIB_UDP6TABLE_OWNER_PID [GUT].  Every
 * dwLocalPort is "the local port number in network byte order" in a DWORD
 * ([T4R], [T6R], [U4R], [U6R]): the port's two bytes, high byte first, are
 * the DWORD's low-addressed 16 bits (its low-order half on the
 * little-endian machines Windows runs on), so the port is ntohs() of the
 * DWORD's low 16 bits; the other two bytes are never read.  Rows are
 * reached through the headers' own table types, never by hand-computed
 * offsets: "any access ... should assume padding may exist" [T4T].
 *
 * Sizes [GTT]/[GUT]: "If this value is set too small,
 * ERROR_INSUFFICIENT_BUFFER is returned ... and this field will contain the
 * correct size".  The table can grow between that answer and the next
 * call, so each retry asks for the size returned plus a margin, and the
 * loop gives up (ERROR_INSUFFICIENT_BUFFER) after PORTRES_TABLE_ATTEMPTS
 * calls rather than spin on a table that keeps growing.  A successful
 * answer is checked against the buffer before any row is read: a
 * dwNumEntries the buffer cannot hold gives ERROR_INVALID_DATA.
 */
#define PORTRES_TABLE_FIRST (16u * 1024u)
#define PORTRES_TABLE_MAX (256u * 1024u * 1024u)
#define PORTRES_TABLE_ATTEMPTS 8

int portres_tcp_state_from_mib(unsigned long mib_state)
{
    /* [STA] values -> include/net/tcp_states.h (TCP_ESTABLISHED 1,
     * TCP_SYN_SENT 2, TCP_SYN_RECV 3, TCP_FIN_WAIT1 4, TCP_FIN_WAIT2 5,
     * TCP_TIME_WAIT 6, TCP_CLOSE 7, TCP_CLOSE_WAIT 8, TCP_LAST_ACK 9,
     * TCP_LISTEN 10, TCP_CLOSING 11).  DELETE_TCB, a connection being torn
     * down, has no Linux counterpart: CLOSE. */
    switch (mib_state) {
    case 1:
        return 7; /* MIB_TCP_STATE_CLOSED */
    case 2:
        return 10; /* MIB_TCP_STATE_LISTEN */
    case 3:
        return 2; /* MIB_TCP_STATE_SYN_SENT */
    case 4:
        return 3; /* MIB_TCP_STATE_SYN_RCVD */
    case 5:
        return 1; /* MIB_TCP_STATE_ESTAB */
    case 6:
        return 4; /* MIB_TCP_STATE_FIN_WAIT1 */
    case 7:
        return 5; /* MIB_TCP_STATE_FIN_WAIT2 */
    case 8:
        return 8; /* MIB_TCP_STATE_CLOSE_WAIT */
    case 9:
        return 11; /* MIB_TCP_STATE_CLOSING */
    case 10:
        return 9; /* MIB_TCP_STATE_LAST_ACK */
    case 11:
        return 6; /* MIB_TCP_STATE_TIME_WAIT */
    case 12:
        return 7; /* MIB_TCP_STATE_DELETE_TCB */
    default:
        /* Unknown to [STA] (e.g. a newer Windows' state): passed on, marked. */
        return mib_state < 1000ul ? PORTRES_MIB_STATE_OTHER + (int)mib_state
                                  : PORTRES_MIB_STATE_OTHER;
    }
}

/* The port of a table row: network order in the DWORD's first two bytes. */
static unsigned table_port(DWORD local_port)
{
    return ntohs((u_short)(local_port & 0xFFFFu));
}

/* One table of PROTOCOL and FAMILY into a new buffer *TABLE of *SIZE
 * bytes.  Returns 0 or the function's error. */
static int fetch_table(int protocol, ULONG family, void **table, DWORD *size)
{
    DWORD cap = PORTRES_TABLE_FIRST, want, rc;
    void *buf;
    int attempt;

    *table = NULL;
    *size = 0;
    for (attempt = 0; attempt < PORTRES_TABLE_ATTEMPTS; attempt++) {
        buf = calloc(1, cap);
        if (buf == NULL)
            return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
        want = cap;
        /* bOrder FALSE: no sorting needed; Reserved 0 [GTT]/[GUT]. */
        if (protocol == PORTRES_TCP)
            rc = GetExtendedTcpTable(buf, &want, FALSE, family, TCP_TABLE_OWNER_PID_ALL, 0);
        else
            rc = GetExtendedUdpTable(buf, &want, FALSE, family, UDP_TABLE_OWNER_PID, 0);
        if (rc == NO_ERROR) {
            *table = buf;
            *size = cap; /* what we own, whatever WANT says now */
            return 0;
        }
        free(buf);
        if (rc != ERROR_INSUFFICIENT_BUFFER)
            return (int)rc;
        /* WANT is the size now; ask for a quarter more, for the rows that
         * may appear before the next call.  A WANT that does not exceed
         * what was given (not documented) still makes the buffer grow. */
        if (want <= cap)
            want = cap * 2; /* cap <= 320 MB: no overflow */
        if (want > PORTRES_TABLE_MAX || want + want / 4 > PORTRES_TABLE_MAX)
            return ERROR_INSUFFICIENT_BUFFER;
        cap = want + want / 4;
    }
    return ERROR_INSUFFICIENT_BUFFER;
}

/* Append to a growing array (calloc + copy: no realloc, so that the Wine
 * test's heap accounting sees every block). */
static int append_socket(portres_port_socket **arr, size_t *len, size_t *cap, int family, int state,
                         unsigned port, unsigned long pid, const void *local, const void *remote,
                         DWORD remote_port)
{
    size_t alen = family == AF_INET ? 4 : 16;

    portres_port_socket *bigger;

    if (*len == *cap) {
        size_t ncap = *cap ? 2 * *cap : 16;
        bigger = (portres_port_socket *)calloc(ncap, sizeof(*bigger));
        if (bigger == NULL)
            return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
        if (*len)
            memcpy(bigger, *arr, *len * sizeof(**arr));
        free(*arr);
        *arr = bigger;
        *cap = ncap;
    }
    (*arr)[*len].family = family;
    (*arr)[*len].state = state;
    (*arr)[*len].port = port;
    (*arr)[*len].pid = pid;
    /* calloc zeroed the rest: the addresses, network order as the rows keep them */
    memcpy((*arr)[*len].local, local, alen);
    if (remote != NULL) {
        memcpy((*arr)[*len].remote, remote, alen);
        (*arr)[*len].remote_port = table_port(remote_port);
    }
    (*len)++;
    return 0;
}

/* Does a table of SIZE bytes hold its dwNumEntries rows of ROW bytes
 * after an offset of FIRST? */
static int table_fits(DWORD entries, size_t first, size_t row, DWORD size)
{
    if (size < first)
        return 0;
    return (size_t)entries <= ((size_t)size - first) / row;
}

#define PORTRES_TABLE_FITS(type, t, size) \
    table_fits((t)->dwNumEntries, offsetof(type, table), sizeof((t)->table[0]), (size))

/* The rows of one table whose port is in [LO, HI], appended to ARR. */
static int parse_table(int protocol, int family, const void *table, DWORD size, unsigned lo,
                       unsigned hi, portres_port_socket **arr, size_t *len, size_t *cap)
{
    DWORD i;
    unsigned port;
    int err = 0;

    /* UDP rows: no state; 7 (TCP_CLOSE) is "bound", as on Linux. */
    if (protocol == PORTRES_TCP && family == AF_INET) {
        const MIB_TCPTABLE_OWNER_PID *t = (const MIB_TCPTABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_TCPTABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET,
                                    portres_tcp_state_from_mib(t->table[i].dwState), port,
                                    t->table[i].dwOwningPid, &t->table[i].dwLocalAddr,
                                    &t->table[i].dwRemoteAddr, t->table[i].dwRemotePort);
        }
    } else if (protocol == PORTRES_TCP) {
        const MIB_TCP6TABLE_OWNER_PID *t = (const MIB_TCP6TABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_TCP6TABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET6,
                                    portres_tcp_state_from_mib(t->table[i].dwState), port,
                                    t->table[i].dwOwningPid, t->table[i].ucLocalAddr,
                                    t->table[i].ucRemoteAddr, t->table[i].dwRemotePort);
        }
    } else if (family == AF_INET) {
        const MIB_UDPTABLE_OWNER_PID *t = (const MIB_UDPTABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_UDPTABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET, 7, port, t->table[i].dwOwningPid,
                                    &t->table[i].dwLocalAddr, NULL, 0);
        }
    } else {
        const MIB_UDP6TABLE_OWNER_PID *t = (const MIB_UDP6TABLE_OWNER_PID *)table;
        if (!PORTRES_TABLE_FITS(MIB_UDP6TABLE_OWNER_PID, t, size))
            return ERROR_INVALID_DATA;
        for (i = 0; i < t->dwNumEntries && !err; i++) {
            port = table_port(t->table[i].dwLocalPort);
            if (port >= lo && port <= hi)
                err = append_socket(arr, len, cap, AF_INET6, 7, port, t->table[i].dwOwningPid,
                                    t->table[i].ucLocalAddr, NULL, 0);
        }
    }
    return err;
}

int portres_port_sockets(int protocol, unsigned lo, unsigned hi, portres_port_socket **out,
                         size_t *n)
{
    static const int families[2] = {AF_INET, AF_INET6};
    portres_port_socket *arr = NULL;
    size_t len = 0, cap = 0;
    void *table;
    DWORD size;
    int f, err = 0;

    const char *call = protocol == PORTRES_TCP ? "GetExtendedTcpTable" : "GetExtendedUdpTable";

    if (out == NULL || n == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER); /* no table read */
    *out = NULL;
    *n = 0;
    if ((protocol != PORTRES_TCP && protocol != PORTRES_UDP) || lo > hi || hi > 65535u)
        return portres_refuse(ERROR_INVALID_PARAMETER); /* no table read */

    for (f = 0; f < 2 && !err; f++) {
        err = fetch_table(protocol, (ULONG)families[f], &table, &size);
        if (err)
            break;
        err = parse_table(protocol, families[f], table, size, lo, hi, &arr, &len, &cap);
        free(table);
    }
    if (err) {
        free(arr);
        /* calloc failures are recorded where they happen */
        return err == ERROR_NOT_ENOUGH_MEMORY ? err : portres_fail(err, call);
    }
    *out = arr;
    *n = len;
    return 0;
}

void portres_port_sockets_free(portres_port_socket *sockets)
{
    free(sockets);
}

/* [QPI]: lpdwSize is "the size of the lpExeName buffer, in characters" on
 * input and the length written, without the NUL, on success.  A path
 * longer than MAX_PATH (long paths enabled) retries with the largest
 * Win32 path, 32767 characters. */
#define PORTRES_LONG_PATH 32768u

int portres_process_name(unsigned long pid, char **utf8, size_t *len)
{
    WCHAR small[MAX_PATH + 1];
    WCHAR *wide = small, *big = NULL;
    DWORD wlen;
    HANDLE h;
    char *buf;
    int err = 0, n;

    if (utf8 == NULL || len == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    *utf8 = NULL;
    *len = 0;
    /* [OPR]: NULL on failure, GetLastError() says why (ERROR_ACCESS_DENIED,
     * ERROR_INVALID_PARAMETER for PID 0 or one that does not exist).
     * PROCESS_QUERY_LIMITED_INFORMATION is all [QPI] needs, and is granted
     * for more processes than PROCESS_QUERY_INFORMATION. */
    h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
    if (h == NULL)
        return PORTRES_FAIL_LAST("OpenProcess");
    wlen = (DWORD)(sizeof(small) / sizeof(small[0]));
    if (!QueryFullProcessImageNameW(h, 0, wide, &wlen)) {
        err = (int)GetLastError();
        if (err == ERROR_INSUFFICIENT_BUFFER) {
            big = (WCHAR *)calloc(PORTRES_LONG_PATH, sizeof(WCHAR));
            if (big == NULL) {
                err = portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
            } else {
                wide = big;
                wlen = PORTRES_LONG_PATH;
                err = QueryFullProcessImageNameW(h, 0, wide, &wlen) ? 0 : (int)GetLastError();
            }
        }
    }
    CloseHandle(h);
    if (err == 0 && (wlen == 0 || wlen >= PORTRES_LONG_PATH))
        err = ERROR_INVALID_DATA; /* no name, or not NUL-terminated */
    if (err) {
        free(big);
        /* calloc failures are recorded where they happen */
        return err == ERROR_NOT_ENOUGH_MEMORY ? err
                                              : portres_fail(err, "QueryFullProcessImageNameW");
    }
    /* [W2M]: with a length (no NUL counted) it returns the bytes needed,
     * then the bytes written.  Flags 0, not WC_ERR_INVALID_CHARS: a name
     * holding an unpaired surrogate (NTFS allows it) is converted with a
     * replacement character instead of failing. */
    n = WideCharToMultiByte(CP_UTF8, 0, wide, (int)wlen, NULL, 0, NULL, NULL);
    if (n <= 0) {
        err = (int)GetLastError();
        free(big);
        return portres_fail(err ? err : ERROR_INVALID_DATA, "WideCharToMultiByte");
    }
    buf = (char *)calloc((size_t)n + 1, 1);
    if (buf == NULL) {
        free(big);
        return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
    }
    if (WideCharToMultiByte(CP_UTF8, 0, wide, (int)wlen, buf, n, NULL, NULL) != n) {
        err = (int)GetLastError();
        free(buf);
        free(big);
        return portres_fail(err ? err : ERROR_INVALID_DATA, "WideCharToMultiByte");
    }
    free(big);
    *utf8 = buf;
    *len = (size_t)n;
    return 0;
}

void portres_process_name_free(char *utf8)
{
    free(utf8);
}

#endif /* _WIN32 */
