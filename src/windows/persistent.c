/*
 * windows/persistent.c - persistent reservations (iphlpapi), one call each, and their
 * listing.
 */
#ifdef _WIN32

#include "windows.h"

/* ------------------------------------------------------------------------
 * Persistent reservations (iphlpapi), one call each.
 *
 * All six functions take StartPort "in network byte order" and
 * NumberOfPorts as a plain count: the [CPT] and [DPT] samples pass
 * htons(start) and (USHORT)count.  They return the result itself, NO_ERROR
 * or a Win32 error code ([CPT], [LPT], [DPT] "Return value"), so
 * GetLastError() is never read here.  Create and Delete need an elevated
 * administrator, else ERROR_ACCESS_DENIED ([CPT], [DPT] Remarks); Lookup
 * documents no such error.  Tokens are ULONG64, "may change each time the
 * system is restarted" [CPT] Remarks.
 */
/* The function a persistent call makes: OP 'c'reate, 'l'ookup, 'd'elete. */
static const char *persistent_call(char op, int protocol)
{
    int tcp = protocol == PORTRES_TCP;

    switch (op) {
    case 'c':
        return tcp ? "CreatePersistentTcpPortReservation" : "CreatePersistentUdpPortReservation";
    case 'l':
        return tcp ? "LookupPersistentTcpPortReservation" : "LookupPersistentUdpPortReservation";
    default:
        return tcp ? "DeletePersistentTcpPortReservation" : "DeletePersistentUdpPortReservation";
    }
}

/* The ranges the functions accept; the binding has checked them already
 * (src/_util.c), this guards the USHORT casts. */
static int persistent_args(int protocol, unsigned start, unsigned count)
{
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP)
        return ERROR_INVALID_PARAMETER;
    /* What the functions themselves refuse with ERROR_INVALID_PARAMETER
     * ([CPT]: a zero StartPort or NumberOfPorts, or a block past the last
     * port), refused before the call; also guards the USHORT casts. */
    if (start == 0 || start > 65535u || count == 0 || count > 65535u || start + count - 1 > 65535u)
        return ERROR_INVALID_PARAMETER;
    return 0;
}

int portres_persistent_create(int protocol, unsigned start, unsigned count, uint64_t *token)
{
    ULONG64 tok = 0;
    ULONG err;

    if (token == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    *token = 0;
    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return portres_refuse((int)err); /* bad arguments: nothing was called */
    /* [CPT], [CPU]: StartPort network order, NumberOfPorts host order,
     * Token [out] PULONG64. */
    if (protocol == PORTRES_TCP)
        err = CreatePersistentTcpPortReservation(htons((u_short)start), (USHORT)count, &tok);
    else
        err = CreatePersistentUdpPortReservation(htons((u_short)start), (USHORT)count, &tok);
    if (err != NO_ERROR)
        return portres_fail((int)err, persistent_call('c', protocol));
    /* Passed through as is: the reservation exists now, whatever the token
     * looks like ("a unique opaque ULONG64 token" [CPT]). */
    *token = tok;
    return 0;
}

int portres_persistent_lookup(int protocol, unsigned start, unsigned count, uint64_t *token)
{
    ULONG64 tok = 0;
    ULONG err;

    if (token == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    *token = 0;
    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return portres_refuse((int)err); /* bad arguments: nothing was called */
    /* [LPT], [LPU]: START and COUNT must match those of the creation;
     * ERROR_NOT_FOUND otherwise. */
    if (protocol == PORTRES_TCP)
        err = LookupPersistentTcpPortReservation(htons((u_short)start), (USHORT)count, &tok);
    else
        err = LookupPersistentUdpPortReservation(htons((u_short)start), (USHORT)count, &tok);
    if (err != NO_ERROR)
        return portres_fail((int)err, persistent_call('l', protocol));
    *token = tok;
    return 0;
}

int portres_persistent_delete(int protocol, unsigned start, unsigned count)
{
    ULONG err;

    err = (ULONG)persistent_args(protocol, start, count);
    if (err)
        return portres_refuse((int)err); /* bad arguments: nothing was called */
    /* [DPT], [DPU]: no token; ERROR_NOT_FOUND if no such block. */
    if (protocol == PORTRES_TCP)
        err = DeletePersistentTcpPortReservation(htons((u_short)start), (USHORT)count);
    else
        err = DeletePersistentUdpPortReservation(htons((u_short)start), (USHORT)count);
    return err == NO_ERROR ? 0 : portres_fail((int)err, persistent_call('d', protocol));
}

/* ------------------------------------------------------------------------
 * Listing persistent reservations.
 *
 * Windows documents no enumeration: iphlpapi has Create, Delete and Lookup
 * (by exact block) only, and the public tools we found (Docker, WSL and
 * Hyper-V users' scripts, skytable, serverengine, node-portscanner) all
 * parse `netsh int ipv4 show excludedportrange`.  Persistent reservations
 * are "recorded in a persistent store for the TCP module" [CPT] Remarks
 * (the UDP module for UDP [CPU]).  Administrators' notes (BigFix forum
 * and fixlet 27007 on excluded port ranges) locate that store in the
 * registry, one key per protocol, shared by IPv4 and IPv6:
 *
 *   HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{TCP module id}\29
 *   HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{UDP module id}\5
 *
 * (the ids eb004a03-/eb004a02-9b1a-11d4-9123-0050047759bc are
 * NPI_MS_TCP_MODULEID / NPI_MS_UDP_MODULEID, as in Wine's NSI code), with
 * one value per block named by the 8 hex digits of its INET_PORT_RANGE
 * bytes: StartPort in network order, then NumberOfPorts little-endian
 * ("cc570100": start 0xcc57 = 52311, 1 port).
 *
 * That layout is not documented, so it only supplies candidates: each is
 * confirmed with the documented Lookup*PortReservation, and only the blocks
 * it finds are listed.  So: every entry is a block lookup/delete accept
 * (never a false one); runtime reservations (SIO_ACQUIRE_PORT_RESERVATION)
 * are not in the store, and other excluded ranges netsh shows (those of
 * Hyper-V/WinNAT, without its "*" mark) appear only if Lookup confirms
 * them; should a Windows version keep the store elsewhere, the list comes
 * out incomplete (empty), never wrong.  No key: no persistent reservation
 * was ever made, an empty list.  Read-only: the key is opened with
 * KEY_QUERY_VALUE, all RegEnumValueW needs [REV].
 */
static const WCHAR persistent_key_tcp[] = L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
                                          L"{eb004a03-9b1a-11d4-9123-0050047759bc}\\29";
static const WCHAR persistent_key_udp[] = L"SYSTEM\\CurrentControlSet\\Control\\Nsi\\"
                                          L"{eb004a02-9b1a-11d4-9123-0050047759bc}\\5";

static int hex_digit(WCHAR c)
{
    if (c >= L'0' && c <= L'9')
        return c - L'0';
    if (c >= L'a' && c <= L'f')
        return c - L'a' + 10;
    if (c >= L'A' && c <= L'F')
        return c - L'A' + 10;
    return -1;
}

/* A value name of the store -> the block; 0 if it is not one. */
static int persistent_parse_name(const WCHAR *name, DWORD len, unsigned *start, unsigned *count)
{
    unsigned char b[4];
    int i, hi, lo;

    if (len != 8)
        return 0;
    for (i = 0; i < 4; i++) {
        hi = hex_digit(name[2 * i]);
        lo = hex_digit(name[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    *start = (unsigned)b[0] << 8 | b[1]; /* StartPort: network order */
    *count = b[2] | (unsigned)b[3] << 8; /* NumberOfPorts: little-endian */
    return 1;
}

static int block_compare(const void *a, const void *b)
{
    const portres_port_block *x = (const portres_port_block *)a;
    const portres_port_block *y = (const portres_port_block *)b;

    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->count != y->count)
        return x->count < y->count ? -1 : 1;
    return 0;
}

/* The blocks of a listing, growing (calloc + copy: no realloc, so that the
 * Wine test's heap accounting sees every block). */
typedef struct {
    portres_port_block *arr;
    size_t len, cap;
} block_list;

static int block_list_add(block_list *l, unsigned start, unsigned count)
{
    portres_port_block *bigger;

    if (l->len == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        bigger = (portres_port_block *)calloc(cap, sizeof(*bigger));
        if (bigger == NULL)
            return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");
        if (l->len)
            memcpy(bigger, l->arr, l->len * sizeof(*l->arr));
        free(l->arr);
        l->arr = bigger;
        l->cap = cap;
    }
    l->arr[l->len].start = start;
    l->arr[l->len].count = count;
    l->len++;
    return 0;
}

/* Step 1: open the store of PROTOCOL.  *KEY is NULL (and 0 returned) when
 * it does not exist: no persistent reservation was ever made. */
static int store_open(int protocol, HKEY *key)
{
    LONG rc;

    *key = NULL;
    /* [ROK]: returns ERROR_SUCCESS or the error code.  KEY_WOW64_64KEY:
     * the native view from a 32-bit process too ("Accessing an Alternate
     * Registry View"; SYSTEM is not redirected anyway). */
    rc = RegOpenKeyExW(HKEY_LOCAL_MACHINE,
                       protocol == PORTRES_TCP ? persistent_key_tcp : persistent_key_udp, 0,
                       KEY_QUERY_VALUE | KEY_WOW64_64KEY, key);
    if (rc == ERROR_FILE_NOT_FOUND) {
        *key = NULL;
        return 0;
    }
    if (rc != ERROR_SUCCESS) {
        *key = NULL;
        return portres_fail((int)rc, "RegOpenKeyExW");
    }
    return 0;
}

/* Step 2: every value of the store that names a block Lookup confirms. */
static int store_read(HKEY key, int protocol, block_list *l)
{
    WCHAR name[16];
    DWORD index, name_len;
    unsigned start, count;
    uint64_t token;
    LONG rc;
    int err;

    for (index = 0;; index++) {
        /* [REV]: in, the buffer size in characters; out, the length
         * without the terminating null.  Values come in no order. */
        name_len = (DWORD)(sizeof(name) / sizeof(name[0]));
        rc = RegEnumValueW(key, index, name, &name_len, NULL, NULL, NULL, NULL);
        if (rc == ERROR_NO_MORE_ITEMS)
            return 0;
        if (rc == ERROR_MORE_DATA)
            continue; /* a longer name [REV]: not a block */
        if (rc != ERROR_SUCCESS)
            return portres_fail((int)rc, "RegEnumValueW");
        if (!persistent_parse_name(name, name_len, &start, &count)
            || persistent_args(protocol, start, count) != 0)
            continue;
        err = portres_persistent_lookup(protocol, start, count, &token);
        if (err == ERROR_NOT_FOUND)
            continue; /* not (or no longer) a persistent block */
        if (err)
            return err; /* recorded by the lookup */
        if ((err = block_list_add(l, start, count)))
            return err;
    }
}

/* Step 3: sorted, without duplicates; an empty list is NULL. */
static void block_list_finish(block_list *l)
{
    size_t i, j;

    if (l->len > 1)
        qsort(l->arr, l->len, sizeof(*l->arr), block_compare);
    for (i = j = 0; i < l->len; i++) /* drop duplicates, if any */
        if (j == 0 || block_compare(&l->arr[j - 1], &l->arr[i]) != 0)
            l->arr[j++] = l->arr[i];
    l->len = j;
    if (j == 0) {
        free(l->arr);
        l->arr = NULL;
    }
}

int portres_persistent_list(int protocol, portres_port_block **blocks, size_t *n)
{
    block_list l = {NULL, 0, 0};
    HKEY key;
    int err;

    if (blocks == NULL || n == NULL)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    *blocks = NULL;
    *n = 0;
    if (protocol != PORTRES_TCP && protocol != PORTRES_UDP)
        return portres_refuse(ERROR_INVALID_PARAMETER);
    if ((err = store_open(protocol, &key)) || key == NULL)
        return err;
    err = store_read(key, protocol, &l);
    RegCloseKey(key);
    if (err) {
        free(l.arr);
        return err;
    }
    block_list_finish(&l);
    *blocks = l.arr;
    *n = l.len;
    return 0;
}

void portres_persistent_list_free(portres_port_block *blocks)
{
    free(blocks);
}

#endif /* _WIN32 */
