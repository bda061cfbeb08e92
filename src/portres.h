/*
 * portres.h - the interface between the CPython binding (_portres.c) and the
 * per-platform backends (windows.c, linux.c).
 *
 * Everything declared here is plain C: no Python object is touched, so the
 * binding calls these functions with the GIL released, and the Windows test
 * program (tests/windows/) links the Windows backend without Python at all.
 *
 * Every function returns 0 on success or an OS error code: a Winsock/Win32
 * error (WSAGetLastError()/GetLastError()) on Windows, an errno on Linux.
 * Arguments are validated by the caller (the Python layer) before any call.
 * All ports cross this interface in host byte order; the backends convert.
 */
#ifndef PORTRES_H
#define PORTRES_H

#include <stdint.h>
#include <stddef.h>

#ifdef _WIN32
#  include <winsock2.h>
#  include <ws2tcpip.h>
typedef SOCKET portres_socket;
#else
#  include <sys/socket.h>
typedef int portres_socket;
#endif

enum portres_protocol { PORTRES_TCP = 0, PORTRES_UDP = 1 };

/* A runtime reservation held by this process.  On Windows: the acquiring
 * socket plus the token SIO_ACQUIRE_PORT_RESERVATION returned.  On Linux:
 * one placeholder socket per port. */
typedef struct portres_block portres_block;

typedef struct {
    unsigned start;       /* first port, host order */
    unsigned count;       /* number of ports */
    uint64_t token;       /* never 0 for a live reservation */
    int protocol;         /* enum portres_protocol */
} portres_block_info;

/* Reserve COUNT ports starting at START (0: the system picks the start).
 * On success *out owns the reservation until portres_block_free().  On
 * failure *conflict_port names the port that could not be taken when the
 * backend knows it (Linux), else 0. */
int portres_block_acquire(int protocol, unsigned start, unsigned count,
                          portres_block **out, unsigned *conflict_port);
void portres_block_get_info(const portres_block *b, portres_block_info *info);

/* Bind S (unbound, matching the block's protocol) to a free port of the
 * block on ADDR, whose port must be 0.  Windows: SIO_ASSOCIATE_PORT_RESERVATION
 * then bind().  *port receives the port bound (host order). */
int portres_block_bind(portres_block *b, portres_socket s,
                       const struct sockaddr *addr, int addrlen,
                       unsigned *port);

/* Create a socket of FAMILY for the block's protocol and bind it in the block
 * on ADDR (port 0).  The socket is not inheritable. */
int portres_block_socket(portres_block *b, int family,
                         const struct sockaddr *addr, int addrlen,
                         portres_socket *out, unsigned *port);

/* Release the reservation (SIO_RELEASE_PORT_RESERVATION, then close the
 * acquiring socket; on Linux close the placeholders).  Idempotent; B stays
 * allocated (later calls on it fail) so that a thread still using it never
 * touches freed memory.  Returns the first error met. */
int portres_block_close(portres_block *b);
int portres_block_closed(const portres_block *b);

/* Close if needed, then free.  Only when no other thread can use B. */
void portres_block_free(portres_block *b);

/* The raw calls, one for one with the IOCTLs. */
int portres_associate(portres_socket s, uint64_t token);
int portres_release(portres_socket s, uint64_t token);

/* bind() that honours an association made by portres_associate (Linux keeps
 * associations itself; on Windows this is plain bind()). */
int portres_bind(portres_socket s, const struct sockaddr *addr, int addrlen,
                 unsigned *port);

/* What the binding checks before an association: the socket's family, type
 * (SOCK_STREAM/SOCK_DGRAM) and, if bound, its local port (0 if unbound). */
int portres_socket_info(portres_socket s, int *family, int *type,
                        unsigned *bound_port);

/* One-time process setup (WSAStartup on Windows).  Idempotent. */
int portres_backend_init(void);

#endif /* PORTRES_H */
