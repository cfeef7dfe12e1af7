/*
 * shmem.c: flashsale's shared memory (only when preloaded): the worker's
 * state, the registry of lock names, the registry of Redis locks, the
 * allotments of stock (allot.c), throttle_local's keys (throttle_local.c),
 * the statistics (stats.c)
 * and the latch that wakes the worker.  The
 * latch lives here, with the shared state, so that whoever needs the worker
 * awake (a new Redis lock whose lease it must renew) sets it without calling
 * into the worker's file.  The
 * registries are sized by settings fixed at server start
 * (flashsale.max_lock_names, flashsale.max_redis_locks): the request hook
 * runs after the configuration was read.
 */
#include "flashsale.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/guc.h"

typedef struct FsShared
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* the running worker's; NULL when none runs */
	pg_atomic_uint64 failovers; /* Redis failovers noticed by any backend (fs_shmem_note_failover) */
} FsShared;

static FsShared *shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
fs_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(add_size(add_size(fs_worker_shmem_size(),
															   fs_named_locks_shmem_size()),
													  fs_redis_locks_shmem_size()),
											 MAXALIGN(sizeof(FsShared))),
									fs_allot_shmem_size()));
	RequestAddinShmemSpace(fs_throttle_local_shmem_size());
	RequestAddinShmemSpace(fs_stats_shmem_size());
	/* the lock names, the Redis locks, the allotments, throttle_local's keys, the statistics */
	RequestNamedLWLockTranche("flashsale", 5);
}

static void
fs_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("flashsale shared", sizeof(FsShared), &found);
	if (!found)
	{
		SpinLockInit(&shared->mutex);
		shared->worker_latch = NULL;
		pg_atomic_init_u64(&shared->failovers, 0);
	}
	fs_worker_shmem_init();
	fs_named_locks_shmem_init();
	fs_redis_locks_shmem_init();
	fs_allot_shmem_init();
	fs_throttle_local_shmem_init();
	fs_stats_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Define the setting that sizes a registry (from _PG_init; *value holds the
 * default).  Only while preloading can it be PGC_POSTMASTER, and only then is
 * there a registry; loaded on demand, the setting only shows what it would be.
 */
void
fs_shmem_define_size(const char *name, const char *short_desc, const char *long_desc, int *value)
{
	DefineCustomIntVariable(name, short_desc, long_desc, value, *value, 1, 1000000,
							process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							0, NULL, NULL, NULL);
}

/* Called from _PG_init when preloading. */
void
fs_shmem_register(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = fs_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = fs_shmem_startup;
}

/* The worker publishes its latch when it starts (NULL when it exits). */
void
fs_shmem_set_worker_latch(Latch *latch)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->worker_latch = latch;
	SpinLockRelease(&shared->mutex);
}

/* Wake the worker (it re-plans its waits); nothing when it is not running. */
void
fs_shmem_wake_worker(void)
{
	Latch	   *latch;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	latch = shared->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
}

/*
 * A backend found Redis' master moved (a Sentinel failover, a cluster node
 * that failed): the worker runs a sync pass at once, so that the products
 * whose last writes the old master took with it are checked now rather than
 * at the next interval (redis.c tells, the worker asks; no file depends on
 * the other).
 */
void
fs_shmem_note_failover(void)
{
	if (shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&shared->failovers, 1);
	fs_shmem_wake_worker();
}

/* How many failovers were noticed since the server started. */
uint64
fs_shmem_failovers(void)
{
	return shared ? pg_atomic_read_u64(&shared->failovers) : 0;
}
