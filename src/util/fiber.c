/* fiber.c: fibers on carrier threads (fiber.h), with ucontext.
 *
 * Each carrier takes, under the scheduler's mutex, a fiber made ready
 * again (first: finishing work goes before starting more) or a queued task
 * for a new fiber, switches to it, and back on the carrier does what the
 * fiber asked for when it left its stack: let go of the waker's mutex
 * (sl_fiber_park) or, when its task ended, keep its stack for the next
 * task. A fiber switches back to whichever carrier it runs on, which is
 * why the carrier is found through a function that reads the thread's
 * pointer afresh (a compiler may keep a thread-local address across the
 * switch, and the fiber may be on another thread after it).
 *
 * Under AddressSanitizer every switch is announced to it, so that it knows
 * which stack is in use (its fake stacks and the bounds of the stack a
 * fiber leaves). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "../sluice.h"
#include "fiber.h"

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_ASAN 1
#endif
#endif
#ifdef FIBER_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define STACKS_KEPT 64 /* stacks of ended fibers kept for reuse */
/* A kept stack keeps at most this much of its top in memory: a task that
 * went deeper (a deeply nested JSON document) has the pages below given
 * back when it ends. */
#define STACK_KEEP (256 * 1024)

enum { F_RUN, F_PARKED, F_DONE };

struct sl_fiber {
    ucontext_t ctx;
    sl_fibers *fs;
    sl_fiber_task *task;
    sl_fiber *next; /* on the ready list, or the list of kept stacks */
    char *map;      /* the mapping: a guard page, then the stack */
    size_t maplen;
    int state;
    pthread_mutex_t *unlock; /* what its carrier lets go of once it left */
    const sl_log_ctx *log;   /* its log context while it is parked */
#ifdef FIBER_ASAN
    void *fake;              /* its fake stack while it is switched out */
    const void *from_bottom; /* the stack of the carrier it runs on */
    size_t from_size;
#endif
};

struct sl_fibers {
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    sl_fiber_task *tq[2], *tq_tail[2]; /* tasks waiting for a fiber: [0] first */
    sl_fiber *rq, *rq_tail;            /* fibers ready to run again */
    sl_fiber *kept;                    /* stacks kept for reuse */
    int nkept, nfibers, max, running, parked, queued, quit;
    size_t stack, page;
    pthread_t *threads;
    int nthreads;
};

/* A carrier: its own context, and the fiber it runs. */
struct carrier {
    ucontext_t ctx;
    sl_fiber *cur;
#ifdef FIBER_ASAN
    void *fake;
#endif
};

static __thread struct carrier *carrier_tls;

__attribute__((noinline)) static struct carrier *carrier_get(void) {
    struct carrier *c;
    __atomic_load(&carrier_tls, &c, __ATOMIC_RELAXED);
    __asm__ volatile("" ::: "memory");
    return c;
}

sl_fiber *sl_fiber_self(void) {
    struct carrier *c = carrier_get();
    return c ? c->cur : NULL;
}

/* --- The lock check (SL_LOCK_CHECK builds, linked with --wrap) ------------ */

#ifdef SL_LOCK_CHECK
static __thread int locks_held;
int __real_pthread_mutex_lock(pthread_mutex_t *m);
int __real_pthread_mutex_trylock(pthread_mutex_t *m);
int __real_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_lock(pthread_mutex_t *m) {
    int rc = __real_pthread_mutex_lock(m);
    if (rc == 0) locks_held++;
    return rc;
}
int __wrap_pthread_mutex_trylock(pthread_mutex_t *m) {
    int rc = __real_pthread_mutex_trylock(m);
    if (rc == 0) locks_held++;
    return rc;
}
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m) {
    int rc = __real_pthread_mutex_unlock(m);
    if (rc == 0) locks_held--;
    return rc;
}
__attribute__((noinline)) static int locks_now(void) {
    __asm__ volatile("" ::: "memory");
    return locks_held;
}
static void lock_check(int allowed, const char *where) {
    if (locks_now() == allowed) return;
    fprintf(stderr, "fiber: %s with %d mutexes held (%d allowed)\n", where, locks_now(), allowed);
    abort();
}
#else
static void lock_check(int allowed, const char *where) {
    (void)allowed, (void)where;
}
#endif

/* --- Switching ------------------------------------------------------------ */

static void fiber_entry(void);

/* getcontext returns twice (the second time, nobody here resumes it: the
 * context is only a template for makecontext), so it stays out of callers
 * with locals a second return could clobber. */
__attribute__((noinline)) static int ctx_template(ucontext_t *u) {
    return getcontext(u);
}

static void fiber_free(sl_fiber *f) {
    munmap(f->map, f->maplen);
    free(f);
}

/* Makes f (a kept fiber, or NULL for a new mapping) ready to start t; NULL
 * when no stack can be had. Outside fs->mu: it makes system calls. */
static sl_fiber *fiber_prepare(sl_fibers *fs, sl_fiber *f, sl_fiber_task *t) {
    if (f) {
#ifdef FIBER_ASAN
        /* The task before ended without returning from its first frame. */
        ASAN_UNPOISON_MEMORY_REGION(f->map + fs->page, fs->stack);
#endif
    } else {
        f = calloc(1, sizeof *f);
        if (!f) return NULL;
        f->maplen = fs->stack + fs->page;
        f->map = mmap(NULL, f->maplen, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (f->map == MAP_FAILED || mprotect(f->map, fs->page, PROT_NONE) != 0) {
            if (f->map != MAP_FAILED) munmap(f->map, f->maplen);
            free(f);
            return NULL;
        }
        f->fs = fs;
    }
    if (ctx_template(&f->ctx) != 0) {
        fiber_free(f);
        return NULL;
    }
    f->ctx.uc_stack.ss_sp = f->map + fs->page;
    f->ctx.uc_stack.ss_size = fs->stack;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, fiber_entry, 0);
    f->task = t;
    f->state = F_RUN;
    f->log = NULL;
    f->next = NULL;
    return f;
}

/* Gives back the pages of f's stack below its top STACK_KEEP bytes when
 * the task that ended wrote to them: the page just below the kept part is
 * zero (never touched, or given back) unless a frame was there. */
static void stack_trim(sl_fibers *fs, sl_fiber *f) {
    if (fs->stack <= STACK_KEEP + fs->page) return;
    char *base = f->map + fs->page;
    char *mark = base + fs->stack - STACK_KEEP - fs->page;
#ifdef FIBER_ASAN
    ASAN_UNPOISON_MEMORY_REGION(base, fs->stack); /* dead frames' redzones */
#endif
    const uint64_t *w = (const uint64_t *)mark;
    for (size_t i = 0; i < fs->page / sizeof *w; i++)
        if (w[i] != 0) {
            madvise(base, (size_t)(mark + fs->page - base), MADV_DONTNEED);
            return;
        }
}

/* Runs f on this carrier until it parks or ends. */
static void switch_in(struct carrier *c, sl_fiber *f) {
    c->cur = f;
    sl_log_ctx_set(f->log);
#ifdef FIBER_ASAN
    __sanitizer_start_switch_fiber(&c->fake, f->map + f->fs->page, f->fs->stack);
#endif
    swapcontext(&c->ctx, &f->ctx);
#ifdef FIBER_ASAN
    __sanitizer_finish_switch_fiber(c->fake, NULL, NULL);
#endif
    c->cur = NULL;
    sl_log_ctx_set(NULL);
}

static void fiber_entry(void) {
    sl_fiber *f = carrier_get()->cur;
#ifdef FIBER_ASAN
    __sanitizer_finish_switch_fiber(NULL, &f->from_bottom, &f->from_size);
#endif
    f->task->fn(f->task);
    lock_check(0, "a task ended");
    f->state = F_DONE;
    struct carrier *c = carrier_get(); /* maybe not the one it started on */
#ifdef FIBER_ASAN
    __sanitizer_start_switch_fiber(NULL, f->from_bottom, f->from_size);
#endif
    setcontext(&c->ctx);
    abort(); /* setcontext does not return */
}

void sl_fiber_park(pthread_mutex_t *mu) {
    struct carrier *c = carrier_get();
    sl_fiber *f = c->cur;
    lock_check(1, "a fiber parked");
    f->unlock = mu;
    f->state = F_PARKED;
    f->log = sl_log_ctx_get();
#ifdef FIBER_ASAN
    __sanitizer_start_switch_fiber(&f->fake, f->from_bottom, f->from_size);
#endif
    swapcontext(&f->ctx, &c->ctx);
#ifdef FIBER_ASAN
    __sanitizer_finish_switch_fiber(f->fake, &f->from_bottom, &f->from_size);
#endif
}

void sl_fiber_ready(sl_fiber *f) {
    sl_fibers *fs = f->fs;
    pthread_mutex_lock(&fs->mu);
    f->state = F_RUN;
    f->next = NULL;
    if (fs->rq_tail)
        fs->rq_tail->next = f;
    else
        fs->rq = f;
    fs->rq_tail = f;
    fs->parked--;
    pthread_cond_signal(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
}

/* --- Carriers ------------------------------------------------------------- */

/* Each pass takes, under fs->mu, a fiber made ready again or a task (with
 * a kept stack, if any, and a place among the max fibers counted at once);
 * the system calls (a new mapping, the context) and the switch happen
 * outside it. */

static void *carrier_main(void *arg) {
    sl_thread_name("sl-pool");
    sl_fibers *fs = arg;
    struct carrier c = {0};
    __atomic_store(&carrier_tls, &(struct carrier *){&c}, __ATOMIC_RELAXED);
    pthread_mutex_lock(&fs->mu);
    for (;;) {
        sl_fiber *f = NULL;
        sl_fiber_task *t = NULL;
        if (fs->rq) {
            f = fs->rq;
            fs->rq = f->next;
            if (!fs->rq) fs->rq_tail = NULL;
        } else if ((fs->tq[0] || fs->tq[1]) && fs->nfibers < fs->max) {
            int k = fs->tq[0] ? 0 : 1;
            t = fs->tq[k];
            fs->tq[k] = t->next;
            if (!fs->tq[k]) fs->tq_tail[k] = NULL;
            fs->queued--;
            fs->nfibers++; /* its fiber's, counted now against max */
            if ((f = fs->kept)) {
                fs->kept = f->next;
                fs->nkept--;
            }
        } else if (fs->quit && !fs->tq[0] && !fs->tq[1] && fs->nfibers == 0) {
            break;
        } else {
            pthread_cond_wait(&fs->cv, &fs->mu);
            continue;
        }
        fs->running++;
        pthread_mutex_unlock(&fs->mu);
        if (t && !(f = fiber_prepare(fs, f, t))) {
            /* No stack to be had: the task runs here, holding the thread
             * through its waits, as a thread pool's would. */
            t->fn(t);
            pthread_mutex_lock(&fs->mu);
            fs->running--;
            fs->nfibers--;
            if (fs->quit) pthread_cond_broadcast(&fs->cv);
            continue;
        }
        switch_in(&c, f);
        if (f->state == F_DONE) stack_trim(fs, f);
        pthread_mutex_lock(&fs->mu);
        fs->running--;
        if (f->state == F_PARKED) {
            fs->parked++;
            /* Only now may the waker see it: it is off its stack. */
            pthread_mutex_unlock(f->unlock);
            continue;
        }
        fs->nfibers--;
        if (fs->quit) pthread_cond_broadcast(&fs->cv);
        if (fs->nkept < STACKS_KEPT) {
            f->next = fs->kept;
            fs->kept = f;
            fs->nkept++;
        } else {
            pthread_mutex_unlock(&fs->mu);
            fiber_free(f);
            pthread_mutex_lock(&fs->mu);
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

int sl_fibers_start(int threads, int max, size_t stack, sl_fibers **out) {
    sl_fibers *fs = calloc(1, sizeof *fs);
    if (!fs) return SL_ENOMEM;
    long page = sysconf(_SC_PAGESIZE);
    fs->page = page > 0 ? (size_t)page : 4096;
    fs->stack = (stack + fs->page - 1) / fs->page * fs->page;
    fs->max = max > 0 ? max : 1;
    pthread_mutex_init(&fs->mu, NULL);
    pthread_cond_init(&fs->cv, NULL);
    fs->threads = calloc((size_t)threads, sizeof *fs->threads);
    if (!fs->threads) {
        sl_fibers_free(fs);
        return SL_ENOMEM;
    }
    for (; fs->nthreads < threads; fs->nthreads++)
        if (pthread_create(&fs->threads[fs->nthreads], NULL, carrier_main, fs) != 0) {
            sl_fibers_free(fs);
            return SL_EIO;
        }
    *out = fs;
    return 0;
}

int sl_fibers_submit(sl_fibers *fs, sl_fiber_task *t, int first) {
    pthread_mutex_lock(&fs->mu);
    if (fs->quit) {
        pthread_mutex_unlock(&fs->mu);
        return -1;
    }
    int k = first ? 0 : 1;
    t->next = NULL;
    if (fs->tq_tail[k])
        fs->tq_tail[k]->next = t;
    else
        fs->tq[k] = t;
    fs->tq_tail[k] = t;
    fs->queued++;
    pthread_cond_signal(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
    return 0;
}

void sl_fibers_stop(sl_fibers *fs) {
    pthread_mutex_lock(&fs->mu);
    fs->quit = 1;
    pthread_cond_broadcast(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
    for (int i = 0; i < fs->nthreads; i++)
        pthread_join(fs->threads[i], NULL);
    fs->nthreads = 0;
}

void sl_fibers_free(sl_fibers *fs) {
    if (!fs) return;
    sl_fibers_stop(fs);
    while (fs->kept) {
        sl_fiber *f = fs->kept;
        fs->kept = f->next;
        fiber_free(f);
    }
    free(fs->threads);
    pthread_mutex_destroy(&fs->mu);
    pthread_cond_destroy(&fs->cv);
    free(fs);
}

void sl_fibers_figures(sl_fibers *fs, int *running, int *parked, int *queued) {
    pthread_mutex_lock(&fs->mu);
    *running = fs->running;
    *parked = fs->parked;
    *queued = fs->queued;
    pthread_mutex_unlock(&fs->mu);
}

/* --- Waits ---------------------------------------------------------------- */

struct sl_fcond_waiter {
    struct sl_fcond_waiter *next;
    sl_fiber *f;
};

void sl_fcond_init(sl_fcond *c) {
    pthread_cond_init(&c->cv, NULL);
    c->fibers = NULL;
}

void sl_fcond_destroy(sl_fcond *c) {
    pthread_cond_destroy(&c->cv);
}

void sl_fcond_wait(sl_fcond *c, pthread_mutex_t *mu) {
    sl_fiber *f = sl_fiber_self();
    if (!f) {
        pthread_cond_wait(&c->cv, mu);
        return;
    }
    struct sl_fcond_waiter w = {c->fibers, f};
    c->fibers = &w;
    sl_fiber_park(mu);
    pthread_mutex_lock(mu);
}

void sl_fcond_broadcast(sl_fcond *c) {
    pthread_cond_broadcast(&c->cv);
    /* Oldest waiter first (the list has the newest first): a waiter woken
     * late may find that those before it took what it waited for, and wait
     * again. */
    struct sl_fcond_waiter *w = NULL;
    while (c->fibers) {
        struct sl_fcond_waiter *next = c->fibers->next;
        c->fibers->next = w;
        w = c->fibers;
        c->fibers = next;
    }
    while (w) {
        struct sl_fcond_waiter *next = w->next; /* w is gone once it runs */
        sl_fiber_ready(w->f);
        w = next;
    }
}

void sl_latch_init(sl_latch *l, int n) {
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->left = n;
    l->fiber = NULL;
}

void sl_latch_done(sl_latch *l) {
    pthread_mutex_lock(&l->mu);
    if (--l->left == 0) {
        if (l->fiber)
            sl_fiber_ready(l->fiber);
        else
            pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
}

void sl_latch_wait(sl_latch *l) {
    sl_fiber *f = sl_fiber_self();
    pthread_mutex_lock(&l->mu);
    while (l->left > 0) {
        if (!f) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        l->fiber = f;
        sl_fiber_park(&l->mu);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}
