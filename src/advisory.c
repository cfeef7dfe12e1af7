/*
 * advisory.c: the advisory-lock plumbing every feature uses: locks in
 * flashsale's own key space, taken through the lock manager so that waiters
 * queue FIFO and deadlocks are detected.  Coupons, stock and the
 * text-named locks of SQL (named_locks.c) are built on it.
 *
 * The tag is an advisory tag of the current database whose field4 (pg_locks'
 * objsubid) is one of FsLockKind: pg_advisory_lock() uses 1 and 2 there, so
 * flashsale's locks never collide with a user's.  Keys wider than 32 bits are
 * folded; two keys sharing a lock only ever serialise more, never less.
 */
#include "flashsale.h"

#include "miscadmin.h"
#include "storage/proc.h"

static uint32
fold64(int64 key)
{
	uint64		k = (uint64) key;

	return (uint32) (k ^ (k >> 32));
}

void
fs_locktag(LOCKTAG *tag, FsLockKind kind, int64 key1, int64 key2)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, fold64(key1), fold64(key2), (uint16) kind);
}

/* Take the lock (transaction scope) if it is free; never waits. */
bool
fs_lock_try(const LOCKTAG *tag)
{
	return fs_lock_try_mode(tag, ExclusiveLock);
}

bool
fs_lock_try_mode(const LOCKTAG *tag, LOCKMODE mode)
{
	return LockAcquire(tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Wait for the lock (transaction scope), at most flashsale.lock_timeout.
 * The lock manager's own lock-timeout machinery bounds the wait; its error is
 * reported as flashsale's, with the same SQLSTATE 55P03.
 */
void
fs_lock_wait(const LOCKTAG *tag, const char *what)
{
	fs_lock_wait_mode(tag, ExclusiveLock, what);
}

void
fs_lock_wait_mode(const LOCKTAG *tag, LOCKMODE mode, const char *what)
{
	fs_lock_wait_coupon(tag, mode, what, 0);
}

/*
 * fs_lock_wait_mode, counting in coupon's statistics (when not 0) a wait
 * (the lock was not free) and a timeout.
 */
void
fs_lock_wait_coupon(const LOCKTAG *tag, LOCKMODE mode, const char *what, int64 coupon)
{
	int			saved_timeout = LockTimeout;
	MemoryContext mcxt = CurrentMemoryContext;

	if (coupon != 0)
	{
		if (LockAcquire(tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL)
			return;
		fs_stat_entry_add(FS_STAT_COUPON, coupon, FS_SC_LOCK_WAITS, 1, true);
	}
	LockTimeout = fs_lock_timeout_ms;
	PG_TRY();
	{
		(void) LockAcquire(tag, mode, false, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		LockTimeout = saved_timeout;
		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		if (coupon != 0)
			fs_stat_entry_add(FS_STAT_COUPON, coupon, FS_SC_LOCK_TIMEOUTS, 1, true);
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("could not obtain flashsale lock on %s within %d ms", what, fs_lock_timeout_ms),
				 errdetail("Another transaction holds it and has not ended."),
				 errhint("Raise flashsale.lock_timeout, or retry.")));
	}
	PG_END_TRY();
	LockTimeout = saved_timeout;
}

/*
 * Undo one fs_lock_try/fs_lock_wait.  The lock manager counts acquisitions,
 * so this is right whether or not the transaction already held the lock.
 */
void
fs_lock_release(const LOCKTAG *tag)
{
	fs_lock_release_mode(tag, ExclusiveLock);
}

void
fs_lock_release_mode(const LOCKTAG *tag, LOCKMODE mode)
{
	LockRelease(tag, mode, false);
}
