/*
 * linux/registry.c - the process-wide state: tokens, live blocks, associations
 * (all under registry_lock; no persistent tokens: those are the package's),
 * closing a block, fork(),
 * one-time setup.
 */
#ifdef __linux__

#include "linux.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>

pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
portres_block *registry;
struct association *associations;
size_t n_associations;
static size_t cap_associations;

int have_ipv6 = -1;
int bindv6only_default;

static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int portres_backend_init(void)
{
    int v = 0;
    pthread_once(&atfork_once, register_atfork);
    if (have_ipv6 < 0) {
        int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0)
            close(fd);
        bindv6only_default = read_proc_ints("/proc/sys/net/ipv6/bindv6only", &v, 1) ? v : 0;
        have_ipv6 = fd >= 0;
    }
    return 0;
}

uint64_t new_token(void)
{
    uint64_t t = 0;
    while (t == 0) {
        if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t) {
            static uint64_t counter;
            t = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&t ^ ++counter;
        }
    }
    return t;
}

void register_block(portres_block *b)
{
    portres_block *p;
    pthread_mutex_lock(&registry_lock);
    for (;;) { /* tokens are unique among live reservations */
        for (p = registry; p && p->token != b->token; p = p->next)
            ;
        if (!p)
            break;
        b->token = new_token();
    }
    b->next = registry;
    registry = b;
    pthread_mutex_unlock(&registry_lock);
}

/* Find the association of the socket (DEV, INO); registry_lock held. */
size_t find_association(dev_t dev, ino_t ino)
{
    size_t i;
    for (i = 0; i < n_associations; i++)
        if (associations[i].dev == dev && associations[i].ino == ino)
            break;
    return i;
}

/* Remove the associations of TOKEN; registry_lock held. */
static void drop_associations(uint64_t token)
{
    size_t i = 0;
    while (i < n_associations) {
        if (associations[i].token == token)
            associations[i] = associations[--n_associations];
        else
            i++;
    }
}

/* Unlink B from the registry and close its placeholders.  Called with
 * registry_lock held; returns with it released.  Lock order: registry, then
 * block.  Once unlinked, no thread can find B by token; a thread already
 * inside B holds its lock, which is waited for here. */
void close_block_registry_held(portres_block *b)
{
    portres_block **pp;

    for (pp = &registry; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    drop_associations(b->token);
    pthread_mutex_lock(&b->lock);
    pthread_mutex_unlock(&registry_lock);
    if (!b->closed) {
        close_fds(b->fds, b->count);
        if (b->fds4)
            close_fds(b->fds4, b->count);
        reclaim_close(b);
        __atomic_store_n(&b->closed, 1, __ATOMIC_RELEASE);
        if (b->protocol == PORTRES_UDP)
            udp_block_unref();
    }
    pthread_mutex_unlock(&b->lock);
}

/* ----------------------------------------------------------------- fork
 *
 * A runtime reservation belongs to the process that acquired it, as on
 * Windows.  A child made by fork() gets copies of the placeholder
 * descriptors; kept, they would hold the ports after the parent releases
 * them, and a UDP placeholder copy left in a port's reuseport group after a
 * layout switch would swallow datagrams.  So the child closes its copies:
 * in the child every reservation is closed.  The locks are taken around
 * fork() so that the child never inherits one held by another thread.
 */
static void atfork_prepare(void)
{
    portres_block *b;
    pthread_mutex_lock(&registry_lock);
    for (b = registry; b; b = b->next)
        pthread_mutex_lock(&b->lock);
    bpf_atfork_prepare();
}

static void atfork_parent(void)
{
    portres_block *b;
    bpf_atfork_parent();
    for (b = registry; b; b = b->next)
        pthread_mutex_unlock(&b->lock);
    pthread_mutex_unlock(&registry_lock);
}

static void atfork_child(void)
{
    portres_block *b, *next;
    for (b = registry; b; b = next) {
        next = b->next;
        if (!b->closed) {
            close_fds(b->fds, b->count);
            if (b->fds4)
                close_fds(b->fds4, b->count);
            reclaim_close(b);
            b->closed = 1;
        }
        b->next = NULL;
        pthread_mutex_unlock(&b->lock);
    }
    registry = NULL;
    n_associations = 0;
    bpf_atfork_child();
    pthread_mutex_unlock(&registry_lock);
}

int portres_block_close(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    close_block_registry_held(b);
    return 0;
}

void portres_block_free(portres_block *b)
{
    if (!b)
        return;
    portres_block_close(b);
    pthread_mutex_destroy(&b->lock);
    free(b->fds);
    free(b->fds4);
    free(b->state);
    free(b->cookies);
    free(b);
}

/* Record (or replace) the association of the socket (DEV, INO);
 * registry_lock held. */
static size_t prune_mark = 64;

static int cmp_ino(const void *a, const void *b)
{
    ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
    return x < y ? -1 : x > y;
}

/* Drop the associations of sockets that were closed without a bind: no
 * descriptor of this process refers to their inode any more.  Run when the
 * table has doubled since the last pass, so it costs O(1) amortised.
 * registry_lock held. */
static void prune_associations(void)
{
    DIR *d = opendir("/proc/self/fd");
    ino_t *live = NULL;
    size_t n_live = 0, cap_live = 0, i = 0;
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d))) {
        char link[64];
        unsigned long long ino;
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (sscanf(link, "socket:[%llu]", &ino) != 1)
            continue;
        if (n_live == cap_live) {
            size_t cap = cap_live ? cap_live * 2 : 256;
            ino_t *p = realloc(live, cap * sizeof *p);
            if (!p)
                goto out; /* keep everything rather than drop a live one */
            live = p;
            cap_live = cap;
        }
        live[n_live++] = (ino_t)ino;
    }
    qsort(live, n_live, sizeof *live, cmp_ino);
    while (i < n_associations) {
        if (!n_live || !bsearch(&associations[i].ino, live, n_live, sizeof *live, cmp_ino))
            associations[i] = associations[--n_associations];
        else
            i++;
    }
out:
    closedir(d);
    free(live);
}

int record_association(dev_t dev, ino_t ino, uint64_t token, unsigned range_start,
                       unsigned range_count)
{
    size_t i = find_association(dev, ino);
    if (i == n_associations && n_associations >= prune_mark) {
        prune_associations();
        prune_mark = n_associations * 2 > 64 ? n_associations * 2 : 64;
        i = find_association(dev, ino);
    }
    if (i == n_associations) {
        if (n_associations == cap_associations) {
            size_t cap = cap_associations ? cap_associations * 2 : 16;
            struct association *a = realloc(associations, cap * sizeof *a);
            if (!a)
                return portres_fail(ENOMEM, "realloc");
            associations = a;
            cap_associations = cap;
        }
        n_associations++;
    }
    associations[i].dev = dev;
    associations[i].ino = ino;
    associations[i].token = token;
    associations[i].range_start = range_start;
    associations[i].range_count = range_count;
    return 0;
}

#endif /* __linux__ */
