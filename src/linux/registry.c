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
/* Two lists of blocks, both under registry_lock and doubly linked so a
 * block leaves either in O(1): the registry (live blocks, found by token
 * through by_token) and the unlisted list (being built or closed: fork()
 * must find their descriptors, no token may). */
enum { LISTED_NONE, LISTED_REGISTRY, LISTED_UNLISTED };
static portres_block *registry;
static portres_block *unlisted;

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

/* Put B at the head of the list WHERE; registry_lock held. */
static void list_push(portres_block *b, int where)
{
    portres_block **head = where == LISTED_REGISTRY ? &registry : &unlisted;
    b->prev = NULL;
    b->next = *head;
    if (*head)
        (*head)->prev = b;
    *head = b;
    b->listed = where;
}

/* Take B off whichever list it is on; registry_lock held.  Returns the list
 * it was on (LISTED_NONE: none). */
static int list_remove(portres_block *b)
{
    int where = b->listed;
    if (where == LISTED_NONE)
        return where;
    if (b->prev)
        b->prev->next = b->next;
    else
        *(where == LISTED_REGISTRY ? &registry : &unlisted) = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->next = b->prev = NULL;
    b->listed = LISTED_NONE;
    return where;
}

/* ------------------------------------------------------------- by token
 *
 * Live blocks by token: open addressing with linear probing, at most half
 * full, deletion by backward shift (no tombstones).  Tokens are already
 * uniformly mixed (new_token), so their low bits index it. */
static portres_block **by_token;
static size_t by_token_cap, by_token_n; /* capacity: 0 or a power of 2 */

portres_block *find_block(uint64_t token)
{
    size_t mask = by_token_cap - 1, i;
    if (!by_token_cap)
        return NULL;
    for (i = (size_t)token & mask; by_token[i]; i = (i + 1) & mask)
        if (by_token[i]->token == token)
            return by_token[i];
    return NULL;
}

static void by_token_put(portres_block **table, size_t cap, portres_block *b)
{
    size_t i = (size_t)b->token & (cap - 1);
    while (table[i])
        i = (i + 1) & (cap - 1);
    table[i] = b;
}

/* Room for one more; 0, or ENOMEM (nothing changed). */
static int by_token_reserve(void)
{
    size_t cap, i;
    portres_block **t;
    if ((by_token_n + 1) * 2 <= by_token_cap)
        return 0;
    cap = by_token_cap ? by_token_cap * 2 : 64;
    if (!(t = calloc(cap, sizeof *t)))
        return portres_fail(ENOMEM, "calloc");
    for (i = 0; i < by_token_cap; i++)
        if (by_token[i])
            by_token_put(t, cap, by_token[i]);
    free(by_token);
    by_token = t;
    by_token_cap = cap;
    return 0;
}

static void by_token_remove(const portres_block *b)
{
    size_t mask = by_token_cap - 1, i, j, home;
    if (!by_token_cap)
        return;
    for (i = (size_t)b->token & mask; by_token[i] != b; i = (i + 1) & mask)
        if (!by_token[i])
            return; /* not there */
    /* Backward shift: move up each later entry of the run whose home slot
     * is not between the hole and it. */
    for (j = (i + 1) & mask; by_token[j]; j = (j + 1) & mask) {
        home = (size_t)by_token[j]->token & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            by_token[i] = by_token[j];
            i = j;
        }
    }
    by_token[i] = NULL;
    by_token_n--;
}

/* B is about to own descriptors but is not findable by token (being built):
 * list it where fork() finds it, so a child closes its placeholders too. */
void list_unlisted(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    list_push(b, LISTED_UNLISTED);
    pthread_mutex_unlock(&registry_lock);
}

/* B owns no descriptor any more (a failed acquire, a closed block): off
 * the unlisted list. */
void unlist(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    if (b->listed == LISTED_UNLISTED)
        list_remove(b);
    pthread_mutex_unlock(&registry_lock);
}

/* B is built: from the unlisted list to the registry, findable by its
 * token.  0, or ENOMEM (B stays unlisted; the caller closes it). */
int register_block(portres_block *b)
{
    int err;
    pthread_mutex_lock(&registry_lock);
    /* Tokens never repeat within a process (new_token), and a forked
     * child, rekeyed, starts with no block: no check against the others. */
    if (!(err = by_token_reserve())) {
        list_remove(b);
        list_push(b, LISTED_REGISTRY);
        by_token_put(by_token, by_token_cap, b);
        by_token_n++;
        marker_add(b); /* plain stores once the marker exists (marker.c) */
    }
    pthread_mutex_unlock(&registry_lock);
    return err;
}

/* --------------------------------------------------------- associations
 *
 * By (dev, ino) in a chained hash table that doubles at load 1; each is
 * also on its runtime block's list, so closing a block drops its own
 * associations without looking at anyone else's. */
static struct association **assoc_table;
static size_t assoc_cap, n_associations; /* capacity: 0 or a power of 2 */
static size_t prune_mark = 64;

static size_t assoc_hash(dev_t dev, ino_t ino)
{
    uint64_t z = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;
    z ^= z >> 29;
    return (size_t)(z * 0xbf58476d1ce4e5b9ULL >> 17);
}

struct association *find_association(dev_t dev, ino_t ino)
{
    struct association *a;
    if (!assoc_cap)
        return NULL;
    for (a = assoc_table[assoc_hash(dev, ino) & (assoc_cap - 1)]; a; a = a->hnext)
        if (a->ino == ino && a->dev == dev)
            return a;
    return NULL;
}

/* A joins / leaves the list of the block it names (none: persistent). */
static void block_list_add(struct association *a)
{
    a->bprev = NULL;
    a->bnext = NULL;
    if (!a->block)
        return;
    a->bnext = a->block->assoc;
    if (a->bnext)
        a->bnext->bprev = a;
    a->block->assoc = a;
}

static void block_list_remove(struct association *a)
{
    if (!a->block)
        return;
    if (a->bprev)
        a->bprev->bnext = a->bnext;
    else
        a->block->assoc = a->bnext;
    if (a->bnext)
        a->bnext->bprev = a->bprev;
}

/* Unlink A from its chain and its block's list, and free it. */
void forget_association(struct association *a)
{
    struct association **pp = &assoc_table[assoc_hash(a->dev, a->ino) & (assoc_cap - 1)];
    while (*pp != a)
        pp = &(*pp)->hnext;
    *pp = a->hnext;
    block_list_remove(a);
    n_associations--;
    free(a);
}

/* Drop the associations of B (closed); registry_lock held. */
static void drop_associations(portres_block *b)
{
    while (b->assoc)
        forget_association(b->assoc);
}

/* Unlink B from the registry and close its placeholders.  Called with
 * registry_lock held; returns with it released.  Lock order: registry, then
 * block.  Once unlinked, no thread can find B by token; a thread already
 * inside B holds its lock, which is waited for here.  While its descriptors
 * are being closed B is on the unlisted list, where fork() still finds it:
 * a child made meanwhile closes what is left.
 *
 * OWNED: the caller holds B (its PortReservation), so B outlives this call
 * and B is taken off the unlisted list at the end.  A caller that found B
 * by token (portres_release) does not hold it: once B's lock is released,
 * its owner may free B at any moment, so B is left on the unlisted list,
 * closed, and its owner's own close (always run before the free) takes it
 * off there, under registry_lock and B's lock. */
void close_block_registry_held(portres_block *b, int owned)
{
    int listed = b->listed == LISTED_REGISTRY;

    if (listed) {
        list_remove(b);
        by_token_remove(b);
        marker_remove(b);
        list_push(b, LISTED_UNLISTED);
    }
    drop_associations(b);
    pthread_mutex_lock(&b->lock);
    if (b->closed && b->listed == LISTED_UNLISTED)
        list_remove(b); /* closed by another thread, which left it listed */
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
    if (listed && owned)
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
        b->next = b->prev = NULL;
        b->listed = LISTED_NONE;
        b->assoc = NULL; /* freed with the table below */
        pthread_mutex_unlock(&b->lock);
    }
}

/* In the child: every association goes with the blocks. */
static void drop_all_associations(void)
{
    size_t i;
    struct association *a, *next;
    for (i = 0; i < assoc_cap; i++) {
        for (a = assoc_table[i]; a; a = next) {
            next = a->hnext;
            free(a);
        }
        assoc_table[i] = NULL;
    }
    n_associations = 0;
    prune_mark = 64;
}

static void atfork_child(void)
{
    drop_all(registry);
    drop_all(unlisted);
    registry = NULL;
    unlisted = NULL;
    if (by_token_cap)
        memset(by_token, 0, by_token_cap * sizeof *by_token);
    by_token_n = 0;
    drop_all_associations();
    key_tokens(); /* the child's tokens owe nothing to its parent's */
    marker_atfork_child();
    bpf_atfork_child();
    pthread_mutex_unlock(&registry_lock);
}

int portres_block_close(portres_block *b)
{
    pthread_mutex_lock(&registry_lock);
    close_block_registry_held(b, 1);
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

static int cmp_ino(const void *a, const void *b)
{
    ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
    return x < y ? -1 : x > y;
}

/* Drop the associations of sockets that were closed without a bind: no
 * descriptor of this process refers to their inode any more.  A pass reads
 * every descriptor of the process, so the next one waits for as many new
 * associations as this one read descriptors and kept associations (at
 * least 64): O(1) amortised per association, however many descriptors the
 * process holds.  registry_lock held. */
static void prune_associations(void)
{
    DIR *d = opendir("/proc/self/fd");
    ino_t *live = NULL;
    size_t n_live = 0, cap_live = 0, n_fds = 0, i, cost;
    struct association *a, *next;
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d))) {
        char link[64];
        unsigned long long ino;
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        n_fds++;
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
    for (i = 0; i < assoc_cap; i++) {
        for (a = assoc_table[i]; a; a = next) {
            next = a->hnext;
            if (!n_live || !bsearch(&a->ino, live, n_live, sizeof *live, cmp_ino))
                forget_association(a);
        }
    }
out:
    closedir(d);
    free(live);
    cost = n_fds > n_associations ? n_fds : n_associations;
    prune_mark = n_associations + (cost > 64 ? cost : 64);
}

/* Room for one more association; 0, or ENOMEM (nothing changed). */
static int assoc_reserve(void)
{
    size_t cap, i;
    struct association **t, *a, *next;
    if (n_associations < assoc_cap)
        return 0;
    cap = assoc_cap ? assoc_cap * 2 : 64;
    if (!(t = calloc(cap, sizeof *t)))
        return portres_fail(ENOMEM, "calloc");
    for (i = 0; i < assoc_cap; i++) {
        for (a = assoc_table[i]; a; a = next) {
            size_t h = assoc_hash(a->dev, a->ino) & (cap - 1);
            next = a->hnext;
            a->hnext = t[h];
            t[h] = a;
        }
    }
    free(assoc_table);
    assoc_table = t;
    assoc_cap = cap;
    return 0;
}

/* Record (or replace) the association of the socket (DEV, INO) with BLOCK,
 * or with the persistent range when BLOCK is NULL; registry_lock held. */
int record_association(dev_t dev, ino_t ino, portres_block *block, unsigned range_start,
                       unsigned range_count)
{
    struct association *a = find_association(dev, ino);
    size_t h;
    if (a) { /* replaced, perhaps by another block's: no memory needed */
        block_list_remove(a);
        a->block = block;
        a->range_start = range_start;
        a->range_count = range_count;
        block_list_add(a);
        return 0;
    }
    if (n_associations >= prune_mark)
        prune_associations();
    if (assoc_reserve())
        return ENOMEM;
    if (!(a = calloc(1, sizeof *a)))
        return portres_fail(ENOMEM, "calloc");
    a->dev = dev;
    a->ino = ino;
    a->block = block;
    a->range_start = range_start;
    a->range_count = range_count;
    h = assoc_hash(dev, ino) & (assoc_cap - 1);
    a->hnext = assoc_table[h];
    assoc_table[h] = a;
    block_list_add(a);
    n_associations++;
    return 0;
}

#endif /* __linux__ */
