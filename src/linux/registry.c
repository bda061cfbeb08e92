/*
 * linux/registry.c - the process-wide state: tokens, live blocks, associations
 * (all under registry_lock; no persistent tokens: those are the package's),
 * the runtime marker's lines (marker.c), closing a block, fork(), one-time
 * setup.
 */
#ifdef __linux__

#include "linux.h"
#include "marker.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>

pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
portres_block *registry;
portres_block *unlisted;
struct association *associations;
size_t n_associations;
static size_t cap_associations;

int have_ipv6 = -1;

static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);
static void key_tokens(void);
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Once per process (pthread_once: threads may acquire their first blocks at
 * once).  No sysctl is read here: what shapes a block is read when the
 * block is made, and every IPV6_V6ONLY portres relies on is set explicitly,
 * so net.ipv6.bindv6only never matters. */
static void init_once_fn(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        close(fd);
    __atomic_store_n(&have_ipv6, fd >= 0, __ATOMIC_RELEASE);
    key_tokens();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int portres_backend_init(void)
{
    pthread_once(&init_once, init_once_fn);
    return 0;
}

/* Tokens: a keyed bijection (the splitmix64 finalizer) of a counter, so
 * no two tokens of a process are equal and none costs a system call; the
 * key comes from getrandom() once (at init), and again in a forked child, whose
 * tokens are then unrelated to its parent's.  A token means nothing
 * outside its process (the registry is the process's), so it need not be
 * secret; it only must not repeat, nor look like another process's. */
static uint64_t token_key, token_counter;

static void key_tokens(void)
{
    uint64_t k = 0;
    if (getrandom(&k, sizeof k, 0) != (ssize_t)sizeof k)
        k = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&k ^ (uint64_t)time(NULL);
    token_key = k;
    token_counter = 0;
}

uint64_t new_token(void)
{
    uint64_t z;
    do { /* keyed by portres_backend_init(), before any block */
        z = token_key
            + 0x9e3779b97f4a7c15ULL * (__atomic_add_fetch(&token_counter, 1, __ATOMIC_RELAXED));
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
    } while (z == 0);
    return z;
}

/* Unlink B from the list at *HEAD, if it is there; registry_lock held. */
static int unlink_from(portres_block **head, portres_block *b)
{
    portres_block **pp;
    for (pp = head; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            b->next = NULL;
            return 1;
        }
    }
    return 0;
}

/* B is about to own descriptors but is not findable by token (being built):
 * list it where fork() finds it, so a child closes its placeholders too. */
void list_unlisted(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    b->next = unlisted;
    unlisted = b;
    pthread_mutex_unlock(&registry_lock);
}

/* B owns no descriptor any more (a failed acquire): off the unlisted list. */
void unlist(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    unlink_from(&unlisted, b);
    pthread_mutex_unlock(&registry_lock);
}

/* B is built: from the unlisted list to the registry, under a unique token. */
void register_block(portres_block *b)
{
    portres_block *p;
    pthread_mutex_lock(&registry_lock);
    unlink_from(&unlisted, b);
    for (;;) { /* tokens are unique among live reservations */
        for (p = registry; p && p->token != b->token; p = p->next)
            ;
        if (!p)
            break;
        b->token = new_token();
    }
    b->next = registry;
    registry = b;
    marker_add(b); /* plain stores once the marker exists (marker.c) */
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
 * inside B holds its lock, which is waited for here.  While its descriptors
 * are being closed B is on the unlisted list, where fork() still finds it:
 * a child made meanwhile closes what is left. */
void close_block_registry_held(portres_block *b)
{
    int listed = unlink_from(&registry, b);

    if (listed) {
        marker_remove(b);
        b->next = unlisted;
        unlisted = b;
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
    if (listed)
        unlist(b);
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
 *
 * That covers the blocks being built and being closed as well (the unlisted
 * list): every step that creates, closes or moves one of a block's
 * descriptors runs under the block's lock (acquire.c), so at fork() each
 * descriptor is either recorded in the block, where the child finds and
 * closes it, or not made yet.  A block under construction is left to leak
 * in the child: the thread building it does not exist there.
 */
static void lock_all(portres_block *list)
{
    for (; list; list = list->next)
        pthread_mutex_lock(&list->lock);
}

static void unlock_all(portres_block *list)
{
    for (; list; list = list->next)
        pthread_mutex_unlock(&list->lock);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    lock_all(registry);
    lock_all(unlisted);
    bpf_atfork_prepare();
}

static void atfork_parent(void)
{
    bpf_atfork_parent();
    unlock_all(unlisted);
    unlock_all(registry);
    pthread_mutex_unlock(&registry_lock);
}

/* In the child: close every descriptor of the blocks on LIST. */
static void drop_all(portres_block *list)
{
    portres_block *b, *next;
    for (b = list; b; b = next) {
        next = b->next;
        if (!b->closed) {
            close_fds(b->fds, b->count);
            if (b->fds4)
                close_fds(b->fds4, b->count);
            close_fd(&b->spare);
            reclaim_close(b);
            b->closed = 1;
        }
        b->next = NULL;
        pthread_mutex_unlock(&b->lock);
    }
}

static void atfork_child(void)
{
    drop_all(registry);
    drop_all(unlisted);
    registry = NULL;
    unlisted = NULL;
    n_associations = 0;
    key_tokens(); /* the child's tokens owe nothing to its parent's */
    marker_atfork_child();
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
