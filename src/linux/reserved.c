/*
 * linux/reserved.c - the one parser of net.ipv4.ip_local_reserved_ports.
 */
#ifdef __linux__

#include "linux.h"

#include <stdlib.h>

/* Ports the kernel keeps out of autobind (net.ipv4.ip_local_reserved_ports):
 * a wildcard block never takes them, as Windows never hands out excluded
 * ports.  Returns a 65536-bit map or NULL when there is none. */
unsigned char *reserved_port_map(int *err)
{
    char *buf = NULL, *p;
    unsigned char *map;
    *err = read_proc_file("/proc/sys/net/ipv4/ip_local_reserved_ports", &buf);
    if (*err == ENOENT) /* a kernel without the sysctl: nothing reserved */
        *err = 0;
    if (*err || !buf)
        return NULL;
    map = calloc(65536 / 8, 1);
    if (!map) {
        free(buf);
        *err = portres_fail(ENOMEM, "calloc");
        return NULL;
    }
    for (p = buf; *p;) {
        char *end;
        unsigned long lo = strtoul(p, &end, 10), hi = lo;
        if (end == p)
            break;
        p = end;
        if (*p == '-') {
            hi = strtoul(p + 1, &end, 10);
            p = end;
        }
        for (; lo <= hi && lo < 65536; lo++)
            map[lo / 8] |= (unsigned char)(1u << (lo % 8));
        while (*p == ',' || *p == '\n' || *p == ' ')
            p++;
    }
    free(buf);
    return map;
}

int in_map(const unsigned char *map, unsigned port)
{
    return map && (map[port / 8] >> (port % 8)) & 1;
}

void set_in_map(unsigned char *map, unsigned port)
{
    map[port / 8] |= (unsigned char)(1u << (port % 8));
}

int portres_reserved_ports(portres_port_run **out, size_t *n)
{
    portres_port_run *runs = NULL;
    size_t len = 0, cap = 0;
    unsigned port = 0;
    int err;
    unsigned char *map = reserved_port_map(&err);

    *out = NULL;
    *n = 0;
    if (err)
        return err;
    while (map && port < 65536) {
        unsigned first;
        if (!in_map(map, port)) {
            port++;
            continue;
        }
        for (first = port; port < 65536 && in_map(map, port); port++)
            ;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            portres_port_run *p = realloc(runs, ncap * sizeof *p);
            if (!p) {
                free(runs);
                free(map);
                return portres_fail(ENOMEM, "realloc");
            }
            runs = p;
            cap = ncap;
        }
        runs[len].first = first;
        runs[len].last = port - 1;
        len++;
    }
    free(map);
    *out = runs;
    *n = len;
    return 0;
}

#endif /* __linux__ */
