/*
 * redis_locks.c: locks that live in Redis, for locks shared by several
 * PostgreSQL instances (or other services).
 *
 * A lock is a hash {owner, count, token} with a lease (PEXPIRE).  The owner
 * is "<system identifier>:<pid>:<backend start>" of the holding backend.
 * Acquiring increments a per-name fencing counter, so tokens strictly
 * increase.  Waiters queue in a sorted set by ticket (FIFO).  A release
 * PUBLISHes the first waiter's owner id: only that waiter retries, the others
 * keep waiting (no polling: a waiter retries when it is named, when the
 * holder's lease runs out, or once a second to keep its place, so that a
 * waiter that died leaves the queue within 3 s instead of stalling it).
 *
 * redis_lock() locks are released when the transaction ends (just before
 * commit, or at rollback); redis_lock_session() ones by redis_unlock() or at
 * disconnect.  While the owning backend lives, the background worker renews
 * the lease (every third of it); a backend that dies stops being renewed and
 * its locks free themselves when the lease runs out.
 *
 * The registry the worker renews from has flashsale.max_redis_locks slots
 * for the whole instance.  One session may hold or await at most
 * flashsale.max_redis_locks_per_session of them (a superuser's setting), so
 * that it cannot leave every other session, superusers included, without a
 * slot; a lock over that limit is refused before Redis is asked.
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_redis_lock);
PG_FUNCTION_INFO_V1(fs_redis_lock_session);
PG_FUNCTION_INFO_V1(fs_redis_unlock);
PG_FUNCTION_INFO_V1(fs_redis_locks);

#define WAITER_TTL_MS 3000		/* a waiter's place is kept this long unrenewed */
#define HEARTBEAT_MS 1000

/* ---- shared registry: the worker renews leases, the view lists locks ---- */

/* flashsale.max_redis_locks: the registry's slots, sized at server start */
static int	max_redis_locks = 1024;
/* flashsale.max_redis_locks_per_session: one backend's share of them */
static int	max_redis_locks_per_session = 64;

typedef enum
{
	SLOT_FREE = 0,
	SLOT_HELD,
	SLOT_WAITING
} SlotState;

typedef struct FsRedisLockSlot
{
	SlotState	state;
	int			pid;
	int64		lease_ms;
	int64		token;
	TimestampTz since;
	TimestampTz renewed;
	char		name[FS_LOCK_NAME_MAX + 1];
	char		owner[64];
	char		prefix[64];		/* flashsale.key_prefix of the owner */
} FsRedisLockSlot;

typedef struct FsRedisLocks
{
	LWLock	   *lock;
	int			size;			/* number of slots */
	FsRedisLockSlot slots[FLEXIBLE_ARRAY_MEMBER];
} FsRedisLocks;

static FsRedisLocks *registry = NULL;

/* Called by the shmem_request_hook, after the configuration was read. */
Size
fs_redis_locks_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(FsRedisLocks, slots),
							 mul_size(max_redis_locks, sizeof(FsRedisLockSlot))));
}

void
fs_redis_locks_shmem_init(void)
{
	Size		size = fs_redis_locks_shmem_size();
	bool		found;

	registry = ShmemInitStruct("flashsale redis locks", size, &found);
	if (!found)
	{
		memset(registry, 0, size);
		registry->lock = &(GetNamedLWLockTranche("flashsale"))[1].lock;
		registry->size = max_redis_locks;
	}
}

static const char *
owner_id(void)
{
	static char owner[64];

	if (owner[0] == '\0')
		snprintf(owner, sizeof(owner), "%llu:%d:%lld",
				 (unsigned long long) GetSystemIdentifier(), MyProcPid,
				 (long long) MyStartTimestamp);
	return owner;
}

/*
 * Record this backend's state for name (SLOT_FREE removes it).  Returns false
 * when the registry is full.
 */
static bool
publish_state(const char *name, SlotState state, int64 lease_ms, int64 token)
{
	int			slot = -1;

	if (registry == NULL)
		return true;
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < registry->size && slot < 0; i++)
		if (registry->slots[i].state != SLOT_FREE && registry->slots[i].pid == MyProcPid &&
			strcmp(registry->slots[i].name, name) == 0)
			slot = i;
	if (slot < 0 && state != SLOT_FREE)
		for (int i = 0; i < registry->size && slot < 0; i++)
			if (registry->slots[i].state == SLOT_FREE)
				slot = i;
	if (slot >= 0)
	{
		FsRedisLockSlot *s = &registry->slots[slot];

		if (state == SLOT_FREE)
			s->state = SLOT_FREE;
		else
		{
			if (s->state != state)
				s->since = GetCurrentTimestamp();
			s->state = state;
			s->pid = MyProcPid;
			s->lease_ms = lease_ms;
			s->token = token;
			s->renewed = GetCurrentTimestamp();
			strlcpy(s->name, name, sizeof(s->name));
			strlcpy(s->owner, owner_id(), sizeof(s->owner));
			strlcpy(s->prefix, fs_key_prefix, sizeof(s->prefix));
		}
	}
	LWLockRelease(registry->lock);
	if (state == SLOT_HELD)
		fs_shmem_wake_worker();		/* it may have to renew sooner than it planned */
	return slot >= 0 || state == SLOT_FREE;
}

/* ---- keys ---- */

typedef struct LockKeys
{
	const char *keys[5];		/* lock, fence, queue, waiters, ticket */
	const char *channel;
} LockKeys;

static void
lock_keys(LockKeys *k, const char *prefix, const char *name)
{
	k->keys[0] = psprintf("%slock:%s", prefix, name);
	k->keys[1] = psprintf("%slock:%s:fence", prefix, name);
	k->keys[2] = psprintf("%slock:%s:queue", prefix, name);
	k->keys[3] = psprintf("%slock:%s:waiters", prefix, name);
	k->keys[4] = psprintf("%slock:%s:ticket", prefix, name);
	k->channel = psprintf("%slock:%s:released", prefix, name);
}

/* ---- this backend's locks ---- */

typedef struct HeldLock
{
	char		name[FS_LOCK_NAME_MAX + 1]; /* hash key */
	int			xact_count;		/* released when the transaction ends */
	int			session_count;	/* released by redis_unlock or at exit */
	int64		lease_ms;
	int64		token;
	char		prefix[64];		/* flashsale.key_prefix when acquired */
} HeldLock;

static HTAB *held = NULL;
static char waiting_for[FS_LOCK_NAME_MAX + 1] = "";	/* a wait in progress */
static char acquiring[FS_LOCK_NAME_MAX + 1] = "";	/* an acquire in progress */

static HeldLock *
held_entry(const char *name, bool create)
{
	char		key[FS_LOCK_NAME_MAX + 1] = {0};
	HeldLock   *h;
	bool		found;

	if (held == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(HeldLock);
		held = hash_create("flashsale redis locks", 16, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	strlcpy(key, name, sizeof(key));
	h = hash_search(held, key, create ? HASH_ENTER : HASH_FIND, &found);
	if (h && !found)
	{
		h->xact_count = 0;
		h->session_count = 0;
		h->lease_ms = 0;
		h->token = 0;
		strlcpy(h->prefix, fs_key_prefix, sizeof(h->prefix));
	}
	return h;
}

/*
 * Run an owner's script on a lock (release, trim): keys lock and queue,
 * arguments owner, count, channel.  Its integer reply, or -2 when Redis
 * could not be told (and not throw).
 */
static int64
owner_script(FsScript *script, const char *prefix, const char *name, int count, bool throw)
{
	LockKeys	k;
	const char *argv[5];
	FsReply *r;
	int64		result;

	lock_keys(&k, prefix, name);
	argv[0] = k.keys[0];
	argv[1] = k.keys[2];
	argv[2] = owner_id();
	argv[3] = psprintf("%d", count);
	argv[4] = k.channel;
	r = fs_redis_script(script, 2, 5, argv, NULL, throw);
	if (r == NULL)
		return -2;
	result = r->integer;
	fs_redis_free(r);
	return result;
}

/* Give up count acquisitions: acquisitions left, -1 when not the owner. */
static int64
release(const char *prefix, const char *name, int count, bool throw)
{
	return owner_script(&fs_script_lock_release, prefix, name, count, throw);
}

static void
leave_queue(const char *name)
{
	LockKeys	k;
	const char *argv[5];

	lock_keys(&k, fs_key_prefix, name);
	argv[0] = k.keys[2];
	argv[1] = k.keys[3];
	argv[2] = k.keys[0];
	argv[3] = owner_id();
	argv[4] = k.channel;
	fs_redis_free(fs_redis_script(&fs_script_lock_leave, 3, 5, argv, NULL, false));
	fs_redis_unsubscribe();
}

/*
 * An acquire was interrupted (cancel, statement_timeout, an error): Redis may
 * have granted it without this backend knowing.  Its reply, read on the same
 * connection, says; if it does not come, drop whatever this backend holds
 * beyond what it knows of.  Never raises.
 */
static void
undo_interrupted_acquire(const char *name)
{
	HeldLock   *h = held_entry(name, false);
	int			known = h ? h->xact_count + h->session_count : 0;
	const char *prefix = h ? h->prefix : fs_key_prefix;
	FsReply *r = fs_redis_late_reply();

	if (r)
	{
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1)
			(void) release(prefix, name, 1, false);
		fs_redis_free(r);
	}
	else
		(void) owner_script(&fs_script_lock_trim, prefix, name, known, false);
	if (known == 0)
		publish_state(name, SLOT_FREE, 0, 0);
}

/*
 * Give up this backend's acquisitions, never raising: the transaction's at
 * its end, all of them at exit.  What Redis cannot be told, the lease frees.
 */
static void
release_held(bool at_exit)
{
	HASH_SEQ_STATUS seq;
	HeldLock   *h;

	if (held == NULL)
		return;
	fs_redis_cleanup_begin();
	hash_seq_init(&seq, held);
	while ((h = hash_seq_search(&seq)) != NULL)
	{
		int			count = at_exit ? h->xact_count + h->session_count : h->xact_count;

		if (count == 0)
			continue;
		(void) release(h->prefix, h->name, count, false);
		h->xact_count = 0;
		if (at_exit || h->session_count == 0)
		{
			publish_state(h->name, SLOT_FREE, 0, 0);
			hash_search(held, h->name, HASH_REMOVE, NULL);
		}
	}
	fs_redis_cleanup_end();
}

/*
 * An acquire or a wait cut short by an error (cancel, statement_timeout,
 * Redis): settle it with Redis and give back its slot in the registry.  At
 * the abort of the (sub)transaction it ran in: one caught in a PL/pgSQL
 * block would otherwise leave its slot taken for good, and its place in the
 * queue until the waiter's TTL.
 */
static void
undo_cut_short(void)
{
	if (acquiring[0] != '\0')
	{
		fs_redis_cleanup_begin();
		undo_interrupted_acquire(acquiring);
		fs_redis_cleanup_end();
		acquiring[0] = '\0';
	}
	if (waiting_for[0] != '\0')
	{
		fs_redis_cleanup_begin();
		leave_queue(waiting_for);
		fs_redis_cleanup_end();
		waiting_for[0] = '\0';
	}
}

static void
redis_locks_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			{
				HASH_SEQ_STATUS seq;
				HeldLock   *h;

				if (held == NULL)
					break;
				hash_seq_init(&seq, held);
				while ((h = hash_seq_search(&seq)) != NULL)
					if (h->xact_count > 0)
					{
						hash_seq_term(&seq);
						ereport(ERROR,
								(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
								 errmsg("cannot prepare a transaction that holds Redis lock \"%s\"",
										h->name)));
					}
			}
			break;
		case XACT_EVENT_PRE_COMMIT:
			/* the transaction's work is done: let the next owner in */
			release_held(false);
			break;
		case XACT_EVENT_ABORT:
			undo_cut_short();
			release_held(false);
			break;
		default:
			break;
	}
}

static void
redis_locks_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		undo_cut_short();
}

static void
release_session_locks_at_exit(int code, Datum arg)
{
	release_held(true);
}

/* Called from _PG_init: this file's settings and callbacks. */
void
fs_redis_locks_init(void)
{
	fs_shmem_define_size("flashsale.max_redis_locks",
						 "Redis locks this instance can hold or await at once.",
						 "The size of the registry whose leases the background worker renews.",
						 &max_redis_locks);
	DefineCustomIntVariable("flashsale.max_redis_locks_per_session",
							"Redis locks one session can hold or await at once.",
							"Keeps one session from taking all of flashsale.max_redis_locks.",
							&max_redis_locks_per_session, 64, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	RegisterXactCallback(redis_locks_xact_callback, NULL);
	RegisterSubXactCallback(redis_locks_subxact_callback, NULL);
}

/* ---- acquiring ---- */

/* One attempt: token, or 0 and *ttl (ms the holder's lease has left, -1 unknown). */
static int64
try_acquire(const char *name, int64 lease_ms, bool queue, int64 *ttl)
{
	LockKeys	k;
	const char *argv[9];
	FsReply *r;
	int64		token = 0;

	lock_keys(&k, fs_key_prefix, name);
	for (int i = 0; i < 5; i++)
		argv[i] = k.keys[i];
	argv[5] = owner_id();
	argv[6] = psprintf("%lld", (long long) lease_ms);
	argv[7] = queue ? "1" : "0";
	argv[8] = psprintf("%d", WAITER_TTL_MS);
	r = fs_redis_script(&fs_script_lock_acquire, 5, 9, argv, NULL, true);
	if (r->element[0]->integer == 1)
		token = r->element[1]->integer;
	else
		*ttl = r->element[1]->integer;
	fs_redis_free(r);
	return token;
}

static Datum
acquire(FunctionCallInfo fcinfo, bool session)
{
	const char *name;
	int64		lease_ms,
				wait_ms,
				token,
				ttl = -1;
	TimestampTz deadline;
	LockKeys	k;
	HeldLock   *h;
	static bool exit_hook = false;

	fs_require_arg(fcinfo, 0, "name");
	fs_require_arg(fcinfo, 1, "lease_ms");
	fs_require_arg(fcinfo, 2, "wait_ms");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	lease_ms = PG_GETARG_INT64(1);
	wait_ms = PG_GETARG_INT64(2);
	if (lease_ms < 1 || lease_ms > INT64CONST(86400000))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease_ms must be between 1 and 86400000"),
				 errdetail("lease_ms was %lld.", (long long) lease_ms)));
	if (wait_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait_ms must not be negative"),
				 errdetail("wait_ms was %lld.", (long long) wait_ms)));
	if (!exit_hook)
	{
		before_shmem_exit(release_session_locks_at_exit, (Datum) 0);
		exit_hook = true;
	}

	h = held_entry(name, false);
	if (h == NULL || h->xact_count + h->session_count == 0)
	{
		/* a new lock: held ones are the entries of held (a wait is this call) */
		int			mine = held ? (int) hash_get_num_entries(held) : 0;

		/* within this session's share, checked before Redis or the registry is touched */
		if (mine >= max_redis_locks_per_session)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg_plural("this session already holds %d Redis lock",
								   "this session already holds %d Redis locks", mine, mine),
					 errdetail("A session may hold or await at most %d (flashsale.max_redis_locks_per_session).",
							   max_redis_locks_per_session),
					 errhint("Release one with redis_unlock() first, or ask a superuser to raise "
							 "flashsale.max_redis_locks_per_session.")));
		/* a place in the registry then: a lock left out would not be renewed */
		if (!publish_state(name, SLOT_WAITING, lease_ms, 0))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many Redis locks held or awaited in this instance"),
					 errdetail("The watchdog keeps the leases of at most %d.", registry->size),
					 errhint("Raise flashsale.max_redis_locks (it takes a server restart).")));
	}

	strlcpy(acquiring, name, sizeof(acquiring));
	token = try_acquire(name, lease_ms, false, &ttl);
	if (token == 0 && wait_ms > 0)
	{
		/* listen first, then queue up: no release can slip between the two */
		lock_keys(&k, fs_key_prefix, name);
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
		strlcpy(waiting_for, name, sizeof(waiting_for));
		(void) fs_redis_wait_message(k.channel, GetCurrentTimestamp());
		for (;;)
		{
			TimestampTz now;
			TimestampTz wake;
			char	   *told;

			token = try_acquire(name, lease_ms, true, &ttl);
			now = GetCurrentTimestamp();
			if (token != 0 || now >= deadline)
				break;
			wake = TimestampTzPlusMilliseconds(now, HEARTBEAT_MS);
			if (ttl > 0 && TimestampTzPlusMilliseconds(now, ttl) < wake)
				wake = TimestampTzPlusMilliseconds(now, ttl);
			if (deadline < wake)
				wake = deadline;
			/* a release names the first waiter: the others keep waiting */
			while ((told = fs_redis_wait_message(k.channel, wake)) != NULL &&
				   strcmp(told, owner_id()) != 0 && strcmp(told, "free") != 0)
				;
		}
		if (token == 0)
			leave_queue(name);
		else
			fs_redis_unsubscribe();
		waiting_for[0] = '\0';
	}
	acquiring[0] = '\0';
	if (token == 0)
	{
		h = held_entry(name, false);
		if (h == NULL || h->xact_count + h->session_count == 0)
			publish_state(name, SLOT_FREE, 0, 0);
		PG_RETURN_NULL();
	}

	h = held_entry(name, true);
	if (session)
		h->session_count++;
	else
		h->xact_count++;
	h->lease_ms = lease_ms;
	h->token = token;
	publish_state(name, SLOT_HELD, lease_ms, token);
	PG_RETURN_INT64(token);
}

Datum
fs_redis_lock(PG_FUNCTION_ARGS)
{
	return acquire(fcinfo, false);
}

Datum
fs_redis_lock_session(PG_FUNCTION_ARGS)
{
	return acquire(fcinfo, true);
}

/* redis_unlock(name): give up one acquisition; only the owner can. */
Datum
fs_redis_unlock(PG_FUNCTION_ARGS)
{
	const char *name;
	HeldLock   *h;
	int64		left;

	fs_require_arg(fcinfo, 0, "name");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	h = held_entry(name, false);
	left = release(h ? h->prefix : fs_key_prefix, name, 1, true);
	if (left < 0)
	{
		if (h)
		{
			publish_state(name, SLOT_FREE, 0, 0);
			hash_search(held, h->name, HASH_REMOVE, NULL);
		}
		ereport(ERROR,
				(errcode(ERRCODE_FS_NOT_LOCK_OWNER),
				 errmsg("Redis lock \"%s\" is not held by this session", name),
				 h ? errdetail("Its lease of %lld ms ran out and it was taken or freed; work done "
							   "under it since may have overlapped another owner's.",
							   (long long) h->lease_ms)
				 : errdetail("Only the session holding a lock can release it."),
				 errhint("Fencing tokens tell which owner came last.")));
	}
	if (h)
	{
		if (h->session_count > 0)
			h->session_count--;
		else if (h->xact_count > 0)
			h->xact_count--;
		if (left == 0 || h->session_count + h->xact_count == 0)
		{
			publish_state(name, SLOT_FREE, 0, 0);
			hash_search(held, h->name, HASH_REMOVE, NULL);
		}
	}
	PG_RETURN_BOOL(true);
}

/* ---- the watchdog (called by the background worker) ---- */

/*
 * Renew the leases of locks held by live backends of this instance; forget
 * the entries of backends that are gone (their leases then run out).
 * Returns the ms until the next renewal is due (-1: nothing held).
 */
long
fs_redis_locks_renew(void)
{
	long		next = -1;
	TimestampTz now = GetCurrentTimestamp();

	if (registry == NULL)
		return -1;
	for (int i = 0; i < registry->size; i++)
	{
		FsRedisLockSlot s;
		long		due;

		LWLockAcquire(registry->lock, LW_SHARED);
		s = registry->slots[i];
		LWLockRelease(registry->lock);
		if (s.state != SLOT_HELD)
			continue;
		if (BackendPidGetProc(s.pid) == NULL)
		{
			LWLockAcquire(registry->lock, LW_EXCLUSIVE);
			if (registry->slots[i].pid == s.pid)
				registry->slots[i].state = SLOT_FREE;
			LWLockRelease(registry->lock);
			continue;
		}
		due = (long) (s.lease_ms / 3) - (long) ((now - s.renewed) / 1000);
		if (due <= 0)
		{
			LockKeys	k;
			const char *argv[3];
			FsReply *r;

			lock_keys(&k, s.prefix, s.name);
			argv[0] = k.keys[0];
			argv[1] = s.owner;
			argv[2] = psprintf("%lld", (long long) s.lease_ms);
			r = fs_redis_script(&fs_script_lock_renew, 1, 3, argv, NULL, false);
			fs_redis_free(r);
			LWLockAcquire(registry->lock, LW_EXCLUSIVE);
			if (registry->slots[i].pid == s.pid && registry->slots[i].state == SLOT_HELD)
				registry->slots[i].renewed = now;
			LWLockRelease(registry->lock);
			due = (long) (s.lease_ms / 3);
			if (r == NULL)
				due = Min(due, 1000);	/* Redis trouble: try again soon */
		}
		next = next < 0 ? Max(due, 1) : Min(next, Max(due, 1));
	}
	return next;
}

/* ---- the view ---- */

/* redis_locks(): this instance's Redis locks, held or awaited. */
Datum
fs_redis_locks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FsRedisLockSlot *copy;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (registry == NULL)
		return (Datum) 0;
	n = registry->size;
	copy = palloc(sizeof(FsRedisLockSlot) * n);
	LWLockAcquire(registry->lock, LW_SHARED);
	memcpy(copy, registry->slots, sizeof(FsRedisLockSlot) * n);
	LWLockRelease(registry->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		if (copy[i].state == SLOT_FREE)
			continue;
		values[0] = CStringGetTextDatum(copy[i].name);
		values[1] = CStringGetTextDatum(copy[i].state == SLOT_HELD ? "held" : "waiting");
		values[2] = Int32GetDatum(copy[i].pid);
		values[3] = TimestampTzGetDatum(copy[i].since);
		values[4] = Int64GetDatum(copy[i].lease_ms);
		values[5] = Int64GetDatum(copy[i].token);
		nulls[5] = copy[i].state != SLOT_HELD;
		values[6] = CStringGetTextDatum(copy[i].owner);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
