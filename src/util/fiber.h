/* fiber.h: handlers that wait on the store without holding a thread.
 *
 * A scheduler (sl_fibers) runs tasks on fibers: each task gets a stack of
 * its own and runs on one of a few carrier threads until it waits. A
 * fiber that waits through one of the waits below (sl_latch_wait, which
 * every blocking call of the CQL client and of the store's asynchronous
 * calls uses, and sl_fcond_wait) parks: it is switched out, its carrier
 * runs the next fiber or task, and whoever ends the wait makes it ready
 * again, to be resumed by any carrier. So a request waiting on Cassandra
 * costs a parked stack, not a thread, as a virtual thread of Java or a
 * Tarantool fiber does; code written to block stays written that way.
 *
 * The rules for code that runs on a fiber:
 *  - No mutex is held across a wait that may park (the carrier would
 *    deadlock on it, or another thread would unlock it). Builds with
 *    SL_LOCK_CHECK (the sanitizer build that CI runs the servers' suites
 *    with) count the mutexes each thread holds and abort on a park that
 *    holds one.
 *  - A fiber may resume on another carrier: nothing thread-local is kept
 *    across a wait (the log context is carried by the scheduler).
 *  - Other waits (a condition variable, a semaphore) block the carrier,
 *    which is correct but costs the thread; only waits whose waker is never
 *    a fiber may block. */
#ifndef SL_FIBER_H
#define SL_FIBER_H

#include <pthread.h>
#include <stddef.h>

typedef struct sl_fiber sl_fiber;
typedef struct sl_fibers sl_fibers;

/* A task, embedded by the caller in what it runs; fn runs once, on a
 * fiber (or, when no stack can be had, on the carrier itself). */
typedef struct sl_fiber_task {
    void (*fn)(struct sl_fiber_task *t);
    struct sl_fiber_task *next;
} sl_fiber_task;

/* Starts threads carriers that run at most max fibers at once, each on a
 * stack of stack bytes (a guard page below it). 0 and *out, or an error. */
int sl_fibers_start(int threads, int max, size_t stack, sl_fibers **out);
/* Queues t; a carrier runs it as soon as there is one free and fewer than
 * max fibers: fibers made ready again first, then tasks queued with first
 * set (work already begun, such as a request resumed), then the others,
 * each in order. -1 once stopping (the caller runs t itself). */
int sl_fibers_submit(sl_fibers *fs, sl_fiber_task *t, int first);
/* Runs what was queued and every fiber to its end and joins the carriers;
 * a submit from then on returns -1. Other threads may still submit until
 * sl_fibers_free(fs), which stops fs if it was not stopped and frees it. */
void sl_fibers_stop(sl_fibers *fs);
void sl_fibers_free(sl_fibers *fs);
/* Carriers running a fiber now, fibers parked, tasks waiting for one. */
void sl_fibers_figures(sl_fibers *fs, int *running, int *parked, int *queued);

/* The fiber running on this thread, or NULL off a fiber. */
sl_fiber *sl_fiber_self(void);
/* Parks the running fiber: mu, which the caller holds (it guards whatever
 * records the fiber for its waker), is let go once the fiber is off its
 * stack, so a waker that takes mu cannot make it ready before that. Returns
 * once sl_fiber_ready(f) was called, maybe on another thread, without mu. */
void sl_fiber_park(pthread_mutex_t *mu);
/* Makes a parked fiber ready to run again; from any thread. */
void sl_fiber_ready(sl_fiber *f);

/* A condition variable that parks a fiber instead of blocking its carrier.
 * sl_fcond_broadcast must be called with the waiters' mutex held. Waits may
 * end early, as pthread_cond_wait's do: callers loop on their condition. */
struct sl_fcond_waiter;
typedef struct {
    pthread_cond_t cv;
    struct sl_fcond_waiter *fibers;
} sl_fcond;
void sl_fcond_init(sl_fcond *c);
void sl_fcond_destroy(sl_fcond *c);
void sl_fcond_wait(sl_fcond *c, pthread_mutex_t *mu);
void sl_fcond_broadcast(sl_fcond *c);

#endif
