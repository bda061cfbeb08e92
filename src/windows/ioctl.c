/*
 * windows/ioctl.c - WSAStartup, the three port-reservation IOCTLs (synchronous) and
 * runtime blocks: the one place where WSAIoctl(SIO_*_PORT_RESERVATION)
 * is issued synchronously.
 */
#ifdef _WIN32

#include "windows.h"

PORTRES_STATIC_ASSERT(range_size, sizeof(INET_PORT_RANGE) == 4);
PORTRES_STATIC_ASSERT(range_start, offsetof(INET_PORT_RANGE, StartPort) == 0);
PORTRES_STATIC_ASSERT(range_count, offsetof(INET_PORT_RANGE, NumberOfPorts) == 2);
PORTRES_STATIC_ASSERT(token_size, sizeof(INET_PORT_RESERVATION_TOKEN) == 8);
PORTRES_STATIC_ASSERT(instance_size, sizeof(INET_PORT_RESERVATION_INSTANCE) == 16);
/* "Token": the ULONG64 in C (anonymous member), the struct in C++;
 * offset 8 either way. */
PORTRES_STATIC_ASSERT(instance_token, offsetof(INET_PORT_RESERVATION_INSTANCE, Token) == 8);
PORTRES_STATIC_ASSERT(our_instance_size, sizeof(portres_reservation_instance) == 16);
PORTRES_STATIC_ASSERT(our_instance_token, offsetof(portres_reservation_instance, Token) == 8);
PORTRES_STATIC_ASSERT(code_acquire, (DWORD)SIO_ACQUIRE_PORT_RESERVATION == 0x98000064UL);
PORTRES_STATIC_ASSERT(code_release, (DWORD)SIO_RELEASE_PORT_RESERVATION == 0x98000065UL);
PORTRES_STATIC_ASSERT(code_associate, (DWORD)SIO_ASSOCIATE_PORT_RESERVATION == 0x98000066UL);

int protocol_type(int protocol, int *type, int *ipproto)
{
    switch (protocol) {
    case PORTRES_TCP:
        *type = SOCK_STREAM;
        *ipproto = IPPROTO_TCP;
        return 0;
    case PORTRES_UDP:
        *type = SOCK_DGRAM;
        *ipproto = IPPROTO_UDP;
        return 0;
    default:
        return portres_refuse(WSAEINVAL); /* no socket made */
    }
}

/* Port of a sockaddr returned by getsockname(), in host order. */
unsigned sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* ------------------------------------------------------------------------
 * One-time setup.
 */
static INIT_ONCE portres_init_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK portres_init_callback(PINIT_ONCE once, PVOID param, PVOID *context)
{
    int *result = (int *)param;
    WSADATA wsa;
    int err;

    (void)once;
    (void)context;
    err = WSAStartup(MAKEWORD(2, 2), &wsa);
    if (err == 0 && (LOBYTE(wsa.wVersion) != 2 || HIBYTE(wsa.wVersion) != 2)) {
        /* "WSAStartup function (winsock2.h)": wVersion may be lower than asked;
         * if it is not acceptable, call WSACleanup. */
        WSACleanup();
        err = WSAVERNOTSUPPORTED;
    }
    *result = err ? portres_fail(err, "WSAStartup") : 0;
    /* FALSE on failure, so that a later call tries again. */
    return err == 0;
}

int portres_backend_init(void)
{
    int result = 0;

    if (!InitOnceExecuteOnce(&portres_init_once, portres_init_callback, &result, NULL)) {
        /* The callback failed and stored its error; fall back on
         * GetLastError() should InitOnceExecuteOnce fail by itself. */
        return result ? result : PORTRES_FAIL_LAST("InitOnceExecuteOnce");
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The raw IOCTLs, synchronous (lpOverlapped and lpCompletionRoutine NULL).
 * They block even on a non-blocking socket [ACQ]/[ASC]/[REL] Remarks.
 */
int portres_associate(portres_socket s, uint64_t token)
{
    INET_PORT_RESERVATION_TOKEN in;
    DWORD returned = 0;

    in.Token = token;
    /* In: INET_PORT_RESERVATION_TOKEN; out: NULL, 0 [ASC]. */
    if (WSAIoctl(s, SIO_ASSOCIATE_PORT_RESERVATION, &in, (DWORD)sizeof(in), NULL, 0, &returned,
                 NULL, NULL)
        == SOCKET_ERROR)
        return PORTRES_FAIL_WSA(PORTRES_CALL_ASSOCIATE);
    return 0;
}

static int release_raw(SOCKET s, uint64_t token)
{
    INET_PORT_RESERVATION_TOKEN in;
    DWORD returned = 0;

    in.Token = token;
    /* In: INET_PORT_RESERVATION_TOKEN; out: NULL, 0 [REL]. */
    if (WSAIoctl(s, SIO_RELEASE_PORT_RESERVATION, &in, (DWORD)sizeof(in), NULL, 0, &returned, NULL,
                 NULL)
        == SOCKET_ERROR)
        return PORTRES_FAIL_WSA(PORTRES_CALL_RELEASE);
    return 0;
}

static void block_close_locked(portres_block *b, int release, int *err);

/* The blocks of this process (portres_block.prev/next).  Lock order: this
 * lock, then a block's. */
static SRWLOCK registry_lock = SRWLOCK_INIT;
static portres_block *registry;

void block_released(uint64_t token)
{
    portres_block *b;
    int ignored = 0;

    /* The reservation is gone: a block of this process holding the token
     * is closed as close() would (without a second release), so that it
     * reads closed and its acquiring socket is not left open. */
    AcquireSRWLockShared(&registry_lock);
    for (b = registry; b != NULL; b = b->next) {
        if (b->token == token && !portres_block_closed(b)) {
            AcquireSRWLockExclusive(&b->lock);
            block_close_locked(b, 0, &ignored);
            ReleaseSRWLockExclusive(&b->lock);
            break;
        }
    }
    ReleaseSRWLockShared(&registry_lock);
}

int portres_release(portres_socket s, uint64_t token)
{
    int err = release_raw(s, token);

    if (err == 0)
        block_released(token);
    return err;
}

int portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen, unsigned *port)
{
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);

    if (bind(s, addr, addrlen) == SOCKET_ERROR)
        return PORTRES_FAIL_WSA("bind");
    if (port != NULL) {
        memset(&ss, 0, sizeof(ss));
        if (getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR)
            return PORTRES_FAIL_WSA("getsockname");
        *port = sockaddr_port(&ss);
    }
    return 0;
}

int portres_socket_info(portres_socket s, int *family, int *type, unsigned *bound_port)
{
    WSAPROTOCOL_INFOW info;
    struct sockaddr_storage ss;
    int sock_type = 0;
    int len;

    len = (int)sizeof(info);
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) == SOCKET_ERROR)
        return PORTRES_FAIL_WSA("getsockopt(SO_PROTOCOL_INFOW)");
    len = (int)sizeof(sock_type);
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&sock_type, &len) == SOCKET_ERROR)
        return PORTRES_FAIL_WSA("getsockopt(SO_TYPE)");

    len = (int)sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR) {
        int err = WSAGetLastError();
        /* WSAEINVAL: "not been bound to an address with bind" [GSN]. */
        if (err != WSAEINVAL)
            return portres_fail(err, "getsockname");
        if (bound_port != NULL)
            *bound_port = 0;
    } else if (bound_port != NULL) {
        *bound_port = sockaddr_port(&ss);
    }
    if (family != NULL)
        *family = info.iAddressFamily;
    if (type != NULL)
        *type = sock_type;
    return 0;
}

/* ------------------------------------------------------------------------
 * Runtime reservations.
 */
/* Fill B, allocated by the caller, from a successful acquisition on S. */
void block_init(portres_block *b, SOCKET s, const portres_reservation_instance *inst, int protocol)
{
    b->sock = s;
    b->token = inst->Token.Token;
    /* The output range is in the same byte order as the input: the [ACQ]
     * sample prints htons(portRes.Reservation.StartPort). */
    b->start = ntohs(inst->Reservation.StartPort);
    b->count = inst->Reservation.NumberOfPorts;
    b->protocol = protocol;
    InitializeSRWLock(&b->lock);
    b->closed = 0;
    AcquireSRWLockExclusive(&registry_lock);
    b->prev = NULL;
    b->next = registry;
    if (registry != NULL)
        registry->prev = b;
    registry = b;
    b->registered = 1;
    ReleaseSRWLockExclusive(&registry_lock);
}

/* Arguments of an acquisition: the caller validates (src/_util.c); this
 * only guards the USHORT casts.  Also maps the protocol to a socket type. */
int acquire_args(int protocol, unsigned start, unsigned count, int *type, int *ipproto)
{
    if (start > 65535u || count == 0 || count > 65535u || (start != 0 && start + count - 1 > 65535u)
        || protocol_type(protocol, type, ipproto))
        return portres_refuse(WSAEINVAL);
    return 0;
}

int portres_block_acquire(int protocol, unsigned start, unsigned count, portres_block **out,
                          unsigned *conflict_port)
{
    portres_block *b;
    INET_PORT_RANGE range;
    portres_reservation_instance inst;
    DWORD returned = 0;
    int type = 0, ipproto = 0, err;
    SOCKET s;

    /* Windows does not say which port was in the way. */
    if (conflict_port != NULL)
        *conflict_port = 0;
    if (out == NULL)
        return portres_refuse(WSAEFAULT);
    *out = NULL;
    err = acquire_args(protocol, start, count, &type, &ipproto);
    if (err)
        return err;
    err = portres_backend_init();
    if (err)
        return err;

    /* Allocate before any system call: nothing to undo if this fails. */
    b = (portres_block *)calloc(1, sizeof(*b));
    if (b == NULL)
        return portres_fail(ERROR_NOT_ENOUGH_MEMORY, "calloc");

    s = WSASocketW(AF_INET, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
    if (s == INVALID_SOCKET) {
        err = PORTRES_FAIL_WSA("WSASocketW");
        free(b);
        return err;
    }

    /* StartPort in network byte order, NumberOfPorts in host order: the
     * [ACQ] sample fills them with htons(start) and the plain count. */
    range.StartPort = htons((u_short)start);
    range.NumberOfPorts = (USHORT)count;
    memset(&inst, 0, sizeof(inst));
    if (WSAIoctl(s, SIO_ACQUIRE_PORT_RESERVATION, &range, (DWORD)sizeof(range), &inst,
                 (DWORD)sizeof(inst), &returned, NULL, NULL)
        == SOCKET_ERROR) {
        err = PORTRES_FAIL_WSA(PORTRES_CALL_ACQUIRE); /* before closesocket() */
        closesocket(s);
        free(b);
        return err;
    }
    if (returned < (DWORD)sizeof(inst) || inst.Token.Token == INVALID_PORT_RESERVATION_TOKEN) {
        /* Success with fewer bytes than an INET_PORT_RESERVATION_INSTANCE
         * [INS], or without a token, would be a provider bug; closing the
         * socket ends whatever it reserved [ACQ] Remarks. */
        closesocket(s);
        free(b);
        return portres_fail(ERROR_INVALID_DATA, PORTRES_CALL_ACQUIRE);
    }

    block_init(b, s, &inst, protocol);
    *out = b;
    return 0;
}

void portres_block_get_info(const portres_block *b, portres_block_info *info)
{
    *info = PORTRES_BLOCK_INFO_OF(b);
}

int portres_block_closed(const portres_block *b)
{
    /* An interlocked no-op: a full-barrier read of the flag.  B is never
     * really const (it comes from calloc). */
    return InterlockedCompareExchange(&((portres_block *)b)->closed, 0, 0) != 0;
}

/* Associate + bind, with the block's lock held shared. */
static int block_bind_locked(portres_block *b, SOCKET s, const struct sockaddr *addr, int addrlen,
                             unsigned *port)
{
    int err;

    if (b->closed)
        return portres_refuse(PORTRES_ERROR_CLOSED);
    /* The association must precede bind(); bind() then takes a port of
     * the block, or fails when none is left [ASC]. */
    err = portres_associate(s, b->token);
    if (err)
        return err;
    return portres_bind(s, addr, addrlen, port);
}

int portres_block_bind(portres_block *b, portres_socket s, const struct sockaddr *addr, int addrlen,
                       unsigned *port)
{
    int err;

    AcquireSRWLockShared(&b->lock);
    err = block_bind_locked(b, s, addr, addrlen, port);
    ReleaseSRWLockShared(&b->lock);
    return err;
}

int portres_block_socket(portres_block *b, int family, const struct sockaddr *addr, int addrlen,
                         portres_socket *out, unsigned *port)
{
    int type = 0, ipproto = 0, err;
    SOCKET s;

    if (out == NULL)
        return portres_refuse(WSAEFAULT);
    *out = INVALID_SOCKET;
    if (addr == NULL || addr->sa_family != family)
        return portres_refuse(WSAEAFNOSUPPORT);
    if (portres_block_closed(b))
        return portres_refuse(PORTRES_ERROR_CLOSED);
    err = protocol_type(b->protocol, &type, &ipproto);
    if (err)
        return err;
    s = WSASocketW(family, type, ipproto, NULL, 0, PORTRES_WSA_FLAGS);
    if (s == INVALID_SOCKET)
        return PORTRES_FAIL_WSA("WSASocketW");
    if (family == AF_INET6) {
        /* The documented default of res.socket(AF_INET6) is dual-stack on
         * both platforms; Windows' own default is IPv6-only. */
        DWORD off = 0;
        if (setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&off, sizeof off)) {
            err = PORTRES_FAIL_WSA("setsockopt(IPV6_V6ONLY)");
            closesocket(s);
            return err;
        }
    }
    err = portres_block_bind(b, s, addr, addrlen, port);
    if (err) {
        closesocket(s);
        return err;
    }
    *out = s;
    return 0;
}

/* Close B, its lock held exclusive.  RELEASE: issue the release first
 * (not when the reservation was already released by token). */
static void block_close_locked(portres_block *b, int release, int *err)
{
    if (b->closed)
        return;
    /* Release explicitly, from the acquiring socket and process [REL];
     * closing the socket ends the reservation too [ACQ] Remarks, so close
     * even when the release fails. */
    if (release)
        *err = release_raw(b->sock, b->token);
    if (closesocket(b->sock) == SOCKET_ERROR && *err == 0)
        *err = PORTRES_FAIL_WSA("closesocket");
    b->sock = INVALID_SOCKET;
    InterlockedExchange(&b->closed, 1);
}

int portres_block_close(portres_block *b)
{
    int err = 0;

    if (b == NULL)
        return 0;
    AcquireSRWLockExclusive(&b->lock);
    block_close_locked(b, 1, &err);
    ReleaseSRWLockExclusive(&b->lock);
    return err;
}

void portres_block_free(portres_block *b)
{
    if (b == NULL)
        return;
    portres_block_close(b);
    if (b->registered) {
        AcquireSRWLockExclusive(&registry_lock);
        if (b->prev != NULL)
            b->prev->next = b->next;
        else
            registry = b->next;
        if (b->next != NULL)
            b->next->prev = b->prev;
        ReleaseSRWLockExclusive(&registry_lock);
    }
    /* An SRWLOCK needs no destruction. */
    free(b);
}

/* ------------------------------------------------------------------------
 * The true Windows version and SOCKET values.
 */
typedef LONG(WINAPI *rtl_get_version_fn)(PRTL_OSVERSIONINFOW);

int portres_windows_build(unsigned long *major, unsigned long *minor, unsigned long *build)
{
    RTL_OSVERSIONINFOW info;
    rtl_get_version_fn get = NULL;
    HMODULE ntdll;
    FARPROC p;
    LONG status;

    /* "RtlGetVersion function (wdm.h)": the version of the running system,
     * whatever the application's manifest declares.  GetVersionExW reports
     * 6.2 (build 9200) to an application without a Windows 10
     * compatibility manifest ("GetVersionExW function (sysinfoapi.h)",
     * Remarks), and python.exe's manifest is not the only one that loads
     * this module.  ntdll is loaded in every process; the function is
     * looked up rather than linked, as ntdll.lib is a DDK library. */
    ntdll = GetModuleHandleW(L"ntdll.dll");
    if (ntdll == NULL)
        return PORTRES_FAIL_LAST("GetModuleHandleW");
    p = GetProcAddress(ntdll, "RtlGetVersion");
    if (p == NULL)
        return PORTRES_FAIL_LAST("GetProcAddress(RtlGetVersion)");
    memcpy(&get, &p, sizeof(get));
    memset(&info, 0, sizeof(info));
    info.dwOSVersionInfoSize = (DWORD)sizeof(info);
    status = get(&info);
    if (status < 0) /* "always returns STATUS_SUCCESS", but an NTSTATUS */
        return portres_fail(ERROR_INVALID_DATA, "RtlGetVersion");
    *major = info.dwMajorVersion;
    *minor = info.dwMinorVersion;
    *build = info.dwBuildNumber;
    return 0;
}

int portres_socket_from_u64(unsigned long long v, portres_socket *out)
{
    /* SOCKET is a UINT_PTR: 32 bits on x86, where a larger value would be
     * truncated into another handle.  INVALID_SOCKET is its largest value
     * (~0). */
    if (v > (unsigned long long)INVALID_SOCKET)
        return ERROR_ARITHMETIC_OVERFLOW;
    if ((SOCKET)v == INVALID_SOCKET)
        return WSAENOTSOCK;
    *out = (SOCKET)v;
    return 0;
}

#endif /* _WIN32 */
