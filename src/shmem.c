/*
 * shmem.c: flashsale's shared memory (only when preloaded): the worker's
 * state, the registry of lock names and the registry of Redis locks.
 */
#include "flashsale.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
fs_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(fs_worker_shmem_size(), fs_named_locks_shmem_size()),
									fs_redis_locks_shmem_size()));
	/* one for the lock names, one for the Redis locks */
	RequestNamedLWLockTranche("flashsale", 2);
}

static void
fs_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	fs_worker_shmem_init();
	fs_named_locks_shmem_init();
	fs_redis_locks_shmem_init();
	LWLockRelease(AddinShmemInitLock);
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
