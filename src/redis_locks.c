/*
 * redis_locks.c: locks that live in Redis, for locks shared by several
 * PostgreSQL instances (or other services).
 *
 * Keys.  Every key of a lock starts with its base,
 * "<key_prefix>lock:{<length of name>:<name>}": the length makes the name
 * unambiguous (lock "x:fence" is not lock "x"'s fencing counter), and the
 * braces are a hash tag, so every key of one lock lives in one Redis Cluster
 * slot.  The lock is the hash <base> {owner, count, token} with a lease
 * (PEXPIRE); <base>:fence counts acquisitions (fencing tokens strictly
 * increase); waiters queue in the sorted set <base>:queue by ticket (FIFO),
 * with "<deadline> <lease>" in the hash <base>:waiters.  The helper keys
 * expire when unused.  The owner is "<system identifier>:<pid>:<backend
 * start>" of the holding backend.
 *
 * Hand-off.  A release grants the lock to the first live waiter in the same
 * script and PUBLISHes "<owner> <token>" on <base>:released:<owner>, the
 * waiter's own channel (the other waiters sleep on): the waiter holds it
 * without a round trip of its own.  A waiter retries by itself
 * when the holder's lease runs out, and once a second to keep its place, so
 * that a waiter that died leaves the queue within 3 s.  A waiter that died
 * just before a release granted it the lock holds it at most 3 s when it
 * asked for a watchdog lease (the grant's lease is that short, and the
 * worker extends a live waiter's at once), else until its hard lease ends.
 *
 * Leases.  redis_lock(name) without lease_ms takes a watchdog lease
 * (flashsale.redis_lock_watchdog_lease): the background worker renews it
 * every third of it while the holding backend exists, as Redisson's
 * watchdog does.  An explicit lease_ms is a hard expiry, never renewed.  A
 * backend that dies stops being renewed; its locks free themselves when the
 * lease runs out.
 *
 * Transactions.  redis_lock() locks belong to the transaction: a savepoint
 * rolled back releases those it took, and the transaction's are released
 * once its outcome is final (in the commit and abort callbacks).  Before
 * commit one script call checks that the transaction still holds all of
 * them: a transaction whose lock was lost (its lease ran out and the lock
 * may be someone else's) cannot commit (40001).  redis_lock_session() locks
 * last until redis_unlock() or disconnect.  At the end of a transaction and
 * at exit one script call releases every lock concerned, within the fixed
 * clean-up deadline of redis.c; what Redis is not told then, the lease frees.
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
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_redis_lock);
PG_FUNCTION_INFO_V1(fs_redis_lock_session);
PG_FUNCTION_INFO_V1(fs_redis_unlock);
PG_FUNCTION_INFO_V1(fs_redis_locks);
PG_FUNCTION_INFO_V1(fs_redis_lock_info);
PG_FUNCTION_INFO_V1(fs_redis_force_unlock);

#define WAITER_TTL_MS 3000		/* a waiter's place is kept this long unrenewed */
#define HEARTBEAT_MS 1000
#define MAX_WAIT_MS INT64CONST(2147483647)	/* wait_ms above it waits this long */
#define MAX_LEASE_MS INT64CONST(86400000)
/* a name of FS_LOCK_NAME_MAX characters in any server encoding */
#define NAME_BUF (FS_LOCK_NAME_MAX * MAX_MULTIBYTE_CHAR_LEN + 1)
/* "<key_prefix>lock:{<length>:<name>}" */
#define BASE_BUF (FS_KEY_PREFIX_MAX + NAME_BUF + 32)
#define OWNER_BUF 64

/* flashsale.max_redis_locks: the registry's slots, sized at server start */
static int	max_redis_locks = 1024;
/* flashsale.max_redis_locks_per_session: one backend's share of them */
static int	max_redis_locks_per_session = 64;
/* flashsale.redis_lock_watchdog_lease: the lease of a lock taken without lease_ms */
static int	watchdog_lease_ms = 30000;

/* ---- shared registry: the worker renews leases, the view lists locks ---- */

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
	bool		watchdog;		/* renewed by the worker */
	int64		lease_ms;
	int64		token;
	TimestampTz since;
	TimestampTz renewed;
	char		name[NAME_BUF];
	char		base[BASE_BUF]; /* the lock's key */
	char		owner[OWNER_BUF];
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
	static char owner[OWNER_BUF];

	if (owner[0] == '\0')
		snprintf(owner, sizeof(owner), "%llu:%d:%lld",
				 (unsigned long long) GetSystemIdentifier(), MyProcPid,
				 (long long) MyStartTimestamp);
	return owner;
}

/*
 * Record this backend's state for the lock at base (SLOT_FREE removes it).
 * Returns false when the registry is full.
 */
static bool
publish_state(const char *base, const char *name, SlotState state, bool watchdog,
			  int64 lease_ms, int64 token, bool renew_now)
{
	int			slot = -1;

	if (registry == NULL)
		return true;
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < registry->size && slot < 0; i++)
		if (registry->slots[i].state != SLOT_FREE && registry->slots[i].pid == MyProcPid &&
			strcmp(registry->slots[i].base, base) == 0)
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
			s->watchdog = watchdog;
			s->lease_ms = lease_ms;
			s->token = token;
			s->renewed = renew_now ? 0 : GetCurrentTimestamp();
			strlcpy(s->name, name, sizeof(s->name));
			strlcpy(s->base, base, sizeof(s->base));
			strlcpy(s->owner, owner_id(), sizeof(s->owner));
		}
	}
	LWLockRelease(registry->lock);
	if (state == SLOT_HELD && watchdog)
		fs_shmem_wake_worker(); /* it may have to renew sooner than it planned */
	return slot >= 0 || state == SLOT_FREE;
}

/* ---- keys ---- */

/* "<prefix>lock:{<length>:<name>}": unambiguous, and one Cluster slot per lock */
static char *
lock_base(const char *prefix, const char *name)
{
	return psprintf("%slock:{%zu:%s}", prefix, strlen(name), name);
}

/* keys[0..3]: lock, fence, queue, waiters */
static void
lock_keys(const char **keys, const char *base)
{
	keys[0] = base;
	keys[1] = psprintf("%s:fence", base);
	keys[2] = psprintf("%s:queue", base);
	keys[3] = psprintf("%s:waiters", base);
}

static char *
lock_channel(const char *base)
{
	return psprintf("%s:released", base);
}

/* A reply that must be an array of n integers: its values, or NULL. */
static int64 *
integer_array(FsReply *r, size_t n)
{
	int64	   *values;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n)
		return NULL;
	values = palloc(sizeof(int64) * Max(n, 1));
	for (size_t i = 0; i < n; i++)
	{
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return NULL;
		values[i] = r->element[i]->integer;
	}
	return values;
}

static void
bad_reply(const char *script)
{
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("flashsale's Redis script \"%s\" returned an unexpected reply", script),
			 errdetail("Redis at %s.", fs_redis_address())));
}

/* ---- this backend's locks ---- */

/* redis_lock() acquisitions made in one (sub)transaction */
typedef struct XactLevel
{
	SubTransactionId subid;
	int			count;
} XactLevel;

typedef struct HeldLock
{
	char		base[BASE_BUF]; /* hash key */
	char		name[NAME_BUF];
	int			xact_count;		/* released when the transaction ends */
	int			session_count;	/* released by redis_unlock or at exit */
	bool		watchdog;
	int64		lease_ms;
	int64		token;
	int			nlevels;		/* xact_count split by subtransaction, innermost last */
	int			maxlevels;
	XactLevel  *levels;
} HeldLock;

static HTAB *held = NULL;
static char *waiting_for = NULL;	/* base of a wait in progress */
static char *acquiring = NULL;	/* base of an acquire in progress */

static HeldLock *
held_entry(const char *base, const char *name, bool create)
{
	char		key[BASE_BUF] = {0};
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
	strlcpy(key, base, sizeof(key));
	h = hash_search(held, key, create ? HASH_ENTER : HASH_FIND, &found);
	if (h && !found)
	{
		strlcpy(h->name, name, sizeof(h->name));
		h->xact_count = 0;
		h->session_count = 0;
		h->watchdog = false;
		h->lease_ms = 0;
		h->token = 0;
		h->nlevels = 0;
		h->maxlevels = 0;
		h->levels = NULL;
	}
	return h;
}

static void
forget(HeldLock *h)
{
	publish_state(h->base, h->name, SLOT_FREE, false, 0, 0, false);
	if (h->levels)
		pfree(h->levels);
	hash_search(held, h->base, HASH_REMOVE, NULL);
}

/* One more redis_lock() acquisition, made in the current subtransaction. */
static void
push_level(HeldLock *h)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (h->nlevels > 0 && h->levels[h->nlevels - 1].subid == subid)
	{
		h->levels[h->nlevels - 1].count++;
		return;
	}
	if (h->nlevels == h->maxlevels)
	{
		h->maxlevels = Max(4, h->maxlevels * 2);
		h->levels = h->levels
			? repalloc(h->levels, sizeof(XactLevel) * h->maxlevels)
			: MemoryContextAlloc(TopMemoryContext, sizeof(XactLevel) * h->maxlevels);
	}
	h->levels[h->nlevels].subid = subid;
	h->levels[h->nlevels].count = 1;
	h->nlevels++;
}

/* redis_unlock() gave up one acquisition of the transaction's: the innermost. */
static void
pop_level(HeldLock *h)
{
	if (h->nlevels > 0 && --h->levels[h->nlevels - 1].count == 0)
		h->nlevels--;
}

/*
 * Run the release script on n locks in one call (see lock_release.lua for
 * the modes; counts: -1 for every acquisition).  One integer per lock, or
 * NULL when Redis could not be told (and not throw).
 */
static int64 *
release_script(const char *mode, int n, char **bases, const int *counts, bool throw)
{
	const char **argv = palloc(sizeof(char *) * (6 * n + 2));
	int			nkeys = 4 * n;
	FsReply    *r;
	int64	   *result;

	if (fs_redis_cluster && n > 1)
	{
		/* a cluster: each lock's keys in a slot of their own, one call per lock */
		result = palloc(sizeof(int64) * n);
		for (int i = 0; i < n; i++)
		{
			int64	   *one = release_script(mode, 1, &bases[i], &counts[i], throw);

			if (one == NULL)
				return NULL;
			result[i] = one[0];
		}
		return result;
	}
	for (int i = 0; i < n; i++)
	{
		lock_keys(&argv[4 * i], bases[i]);
		argv[nkeys + 2 + 2 * i] = counts[i] < 0 ? "all" : psprintf("%d", counts[i]);
		argv[nkeys + 3 + 2 * i] = lock_channel(bases[i]);
	}
	argv[nkeys] = owner_id();
	argv[nkeys + 1] = mode;
	r = fs_redis_script(&fs_script_lock_release, nkeys, 6 * n + 2, argv, NULL, throw);
	if (r == NULL)
		return NULL;
	result = integer_array(r, n);
	fs_redis_free(r);
	if (result == NULL && throw)
		bad_reply("lock_release");
	return result;
}

static int64
release_one(const char *mode, const char *base, int count, bool throw)
{
	char	   *bases[1] = {(char *) base};
	int64	   *r = release_script(mode, 1, bases, &count, throw);

	return r ? r[0] : -2;
}

/* A waiter gives up: it leaves the queue (a lock granted to it meanwhile is passed on). */
static void
leave_queue(const char *base)
{
	(void) release_one("leave", base, 0, false);
	/* a grant may be on its way to the subscriber: never read it as a later one */
	fs_redis_unsubscribe();
}

/*
 * An acquire was interrupted (cancel, statement_timeout, an error): Redis may
 * have granted it without this backend knowing.  Its reply, read on the same
 * connection, says; if it does not come, drop whatever this backend holds
 * beyond what it knows of.  Never raises.
 */
static void
undo_interrupted_acquire(const char *base)
{
	HeldLock   *h = held_entry(base, "", false);
	int			known = h ? h->xact_count + h->session_count : 0;
	FsReply    *r = fs_redis_late_reply();

	if (r)
	{
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1)
			(void) release_one("trim", base, known, false);
		fs_redis_free(r);
	}
	else
		(void) release_one("trim", base, known, false);
	if (known == 0)
		publish_state(base, "", SLOT_FREE, false, 0, 0, false);
}

/* Run settle on *base within the clean-up deadline, if set, and clear it. */
static void
settle_cut_short(char **base, void (*settle) (const char *base))
{
	if (*base == NULL)
		return;
	fs_redis_cleanup_begin();
	settle(*base);
	fs_redis_cleanup_end();
	pfree(*base);
	*base = NULL;
}

/*
 * A wait or an acquire cut short (an error, a cancel) while the call was
 * out: settle it with Redis, within the clean-up deadline.
 */
static void
undo_cut_short(void)
{
	settle_cut_short(&acquiring, undo_interrupted_acquire);
	settle_cut_short(&waiting_for, leave_queue);
}

/*
 * How many acquisitions of h to give up: at exit all of them; at the end of
 * the transaction its own; at the abort of subtransaction subid those it
 * made (its children's were handed up to it when they committed).
 */
typedef enum
{
	GIVE_UP_EXIT,
	GIVE_UP_XACT,
	GIVE_UP_SUBXACT
} GiveUp;

static int
to_give_up(HeldLock *h, GiveUp what, SubTransactionId subid)
{
	switch (what)
	{
		case GIVE_UP_EXIT:
			return h->xact_count + h->session_count;
		case GIVE_UP_XACT:
			return h->xact_count;
		case GIVE_UP_SUBXACT:
			return (h->nlevels > 0 && h->levels[h->nlevels - 1].subid == subid)
				? h->levels[h->nlevels - 1].count : 0;
	}
	return 0;
}

/*
 * Give up this backend's acquisitions, never raising, in one script call
 * bounded by the clean-up deadline.  What Redis cannot be told, the lease
 * frees.
 */
static void
release_held(GiveUp what, SubTransactionId subid)
{
	HASH_SEQ_STATUS seq;
	HeldLock   *h;
	int			n = 0;
	long		size;
	char	  **bases;
	int		   *counts;
	HeldLock  **entries;

	if (held == NULL || (size = hash_get_num_entries(held)) == 0)
		return;
	bases = palloc(sizeof(char *) * size);
	counts = palloc(sizeof(int) * size);
	entries = palloc(sizeof(HeldLock *) * size);
	hash_seq_init(&seq, held);
	while ((h = hash_seq_search(&seq)) != NULL)
	{
		int			count = to_give_up(h, what, subid);

		if (count == 0)
			continue;
		bases[n] = h->base;
		counts[n] = count;
		entries[n++] = h;
	}
	if (n > 0)
	{
		fs_redis_cleanup_begin();
		(void) release_script("release", n, bases, counts, false);
		fs_redis_cleanup_end();
	}
	for (int i = 0; i < n; i++)
	{
		h = entries[i];
		h->xact_count -= what == GIVE_UP_EXIT ? h->xact_count : Min(counts[i], h->xact_count);
		if (what == GIVE_UP_SUBXACT)
			h->nlevels--;
		else
			h->nlevels = 0;
		if (what == GIVE_UP_EXIT || h->xact_count + h->session_count == 0)
			forget(h);
	}
	pfree(bases);
	pfree(counts);
	pfree(entries);
}

/*
 * Before commit: does this transaction still hold every lock it took?  One
 * script call for all of them.  A lost one (its lease ran out: someone else
 * may have held it since) fails the commit.
 */
static void
check_xact_locks(void)
{
	HASH_SEQ_STATUS seq;
	HeldLock   *h;
	int			n = 0;
	const char **keys;
	HeldLock  **entries;
	FsReply    *r;
	int64	   *held_now;

	if (held == NULL || hash_get_num_entries(held) == 0)
		return;
	keys = palloc(sizeof(char *) * (hash_get_num_entries(held) + 1));
	entries = palloc(sizeof(HeldLock *) * hash_get_num_entries(held));
	hash_seq_init(&seq, held);
	while ((h = hash_seq_search(&seq)) != NULL)
		if (h->xact_count > 0)
		{
			keys[n] = h->base;
			entries[n++] = h;
		}
	if (n == 0)
		return;
	keys[n] = owner_id();
	held_now = palloc(sizeof(int64) * n);
	/* in a cluster, one call per lock: each lock's keys are in a slot of their own */
	for (int done = 0, step = fs_redis_cluster ? 1 : n; done < n; done += step)
	{
		const char *args[2] = {keys[done], keys[n]};
		int64	   *some;

		r = step == n ? fs_redis_script(&fs_script_lock_check, n, n + 1, keys, NULL, true)
			: fs_redis_script(&fs_script_lock_check, 1, 2, args, NULL, true);
		some = integer_array(r, step);
		fs_redis_free(r);
		if (some == NULL)
			bad_reply("lock_check");
		memcpy(&held_now[done], some, sizeof(int64) * step);
	}
	for (int i = 0; i < n; i++)
		if (held_now[i] != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("Redis lock \"%s\" was lost before commit", entries[i]->name),
					 errdetail("Its lease of %lld ms ran out before the transaction committed; "
							   "another owner may have held it since.",
							   (long long) entries[i]->lease_ms),
					 errhint("Retry the transaction; take the lock without lease_ms to have its "
							 "lease renewed while the session lives.")));
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
			check_xact_locks();
			break;
		case XACT_EVENT_COMMIT:
			/* the outcome is final: let the next owner in */
			release_held(GIVE_UP_XACT, InvalidSubTransactionId);
			break;
		case XACT_EVENT_ABORT:
			undo_cut_short();
			release_held(GIVE_UP_XACT, InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

static void
redis_locks_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS seq;
	HeldLock   *h;

	switch (event)
	{
		case SUBXACT_EVENT_ABORT_SUB:
			undo_cut_short();
			release_held(GIVE_UP_SUBXACT, mySubid);
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			/* its acquisitions are its parent's now */
			if (held == NULL)
				break;
			hash_seq_init(&seq, held);
			while ((h = hash_seq_search(&seq)) != NULL)
			{
				XactLevel  *top = h->nlevels > 0 ? &h->levels[h->nlevels - 1] : NULL;

				if (top == NULL || top->subid != mySubid)
					continue;
				if (h->nlevels > 1 && h->levels[h->nlevels - 2].subid == parentSubid)
				{
					h->levels[h->nlevels - 2].count += top->count;
					h->nlevels--;
				}
				else
					top->subid = parentSubid;
			}
			break;
		default:
			break;
	}
}

static void
release_session_locks_at_exit(int code, Datum arg)
{
	release_held(GIVE_UP_EXIT, InvalidSubTransactionId);
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
	DefineCustomIntVariable("flashsale.redis_lock_watchdog_lease",
							"Lease of a Redis lock taken without lease_ms.",
							"The background worker renews it every third of it while the holder lives.",
							&watchdog_lease_ms, 30000, 100, (int) MAX_LEASE_MS,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	RegisterXactCallback(redis_locks_xact_callback, NULL);
	RegisterSubXactCallback(redis_locks_subxact_callback, NULL);
}

/* ---- acquiring ---- */

/* One attempt: token, or 0 and *ttl (ms the holder's lease has left, -1 unknown). */
static int64
try_acquire(const char *base, int64 lease_ms, int64 pickup_ms, bool queue, int known, int64 *ttl)
{
	const char *argv[10];
	FsReply    *r;
	int64	   *v;

	lock_keys(argv, base);
	argv[4] = owner_id();
	argv[5] = psprintf("%lld", (long long) lease_ms);
	argv[6] = queue ? "1" : "0";
	argv[7] = psprintf("%d", WAITER_TTL_MS);
	argv[8] = psprintf("%d", known);
	argv[9] = psprintf("%lld", (long long) pickup_ms);
	r = fs_redis_script(&fs_script_lock_acquire, 4, 10, argv, NULL, true);
	v = integer_array(r, 2);
	fs_redis_free(r);
	if (v == NULL)
		bad_reply("lock_acquire");
	if (v[0] == 1)
		return v[1];
	*ttl = v[1];
	return 0;
}

/* A message on the lock's channel: the token when it grants the lock to this backend, else 0. */
static int64
granted(const char *msg)
{
	const char *me = owner_id();
	size_t		len = strlen(me);

	if (strncmp(msg, me, len) == 0 && msg[len] == ' ')
		return strtoi64(msg + len + 1, NULL, 10);
	return 0;
}

/*
 * Wait for the lock at base until the deadline: its token, or 0.  Listen
 * first, then queue up: no release can slip between the two.  The release
 * that frees the lock grants it to the first waiter and tells it its token
 * on the waiter's own channel.
 */
static int64
wait_for(const char *base, int64 lease_ms, int64 pickup_ms, int known, TimestampTz deadline,
		 bool *handed)
{
	/* this waiter's own channel: a grant wakes the waiter it names, and only it */
	char	   *channel = psprintf("%s:%s", lock_channel(base), owner_id());
	int64		token = 0;
	int64		ttl = -1;

	waiting_for = MemoryContextStrdup(TopMemoryContext, base);
	fs_redis_listen(channel);
	for (;;)
	{
		TimestampTz now;
		TimestampTz wake;
		char	   *msg;

		token = try_acquire(base, lease_ms, pickup_ms, true, known, &ttl);
		if (token != 0)
		{
			/* a grant may be on its way to the subscriber: never read it as a later one */
			fs_redis_unsubscribe();
			break;
		}
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		wake = TimestampTzPlusMilliseconds(now, HEARTBEAT_MS);
		if (ttl > 0 && TimestampTzPlusMilliseconds(now, ttl) < wake)
			wake = TimestampTzPlusMilliseconds(now, ttl);
		if (deadline < wake)
			wake = deadline;
		/* the others' grants: keep waiting */
		while ((msg = fs_redis_wait_message(channel, wake)) != NULL &&
			   (token = granted(msg)) == 0)
			pfree(msg);
		if (token != 0)
		{
			*handed = true;
			break;
		}
	}
	if (token == 0)
		leave_queue(base);
	pfree(waiting_for);
	waiting_for = NULL;
	return token;
}

static Datum
acquire(FunctionCallInfo fcinfo, bool session)
{
	const char *name;
	char	   *base;
	bool		watchdog;
	int64		lease_ms,
				wait_ms,
				token,
				ttl = -1;
	int64		pickup_ms;
	int			known;
	bool		renew_now = false;
	HeldLock   *h;
	static bool exit_hook = false;

	fs_require_arg(fcinfo, 0, "name");
	fs_require_arg(fcinfo, 2, "wait_ms");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	watchdog = PG_ARGISNULL(1);
	lease_ms = watchdog ? watchdog_lease_ms : PG_GETARG_INT64(1);
	wait_ms = PG_GETARG_INT64(2);
	if (lease_ms < 1 || lease_ms > MAX_LEASE_MS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease_ms must be between 1 and %lld", (long long) MAX_LEASE_MS),
				 errdetail("lease_ms was %lld.", (long long) lease_ms),
				 errhint("Omit lease_ms (NULL) for a lease the background worker renews.")));
	if (wait_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait_ms must not be negative"),
				 errdetail("wait_ms was %lld.", (long long) wait_ms)));
	wait_ms = Min(wait_ms, MAX_WAIT_MS);
	/* handed a watchdog lease, the worker extends it at once: until then a short one */
	pickup_ms = watchdog && registry != NULL ? Min(lease_ms, WAITER_TTL_MS) : lease_ms;
	if (!exit_hook)
	{
		before_shmem_exit(release_session_locks_at_exit, (Datum) 0);
		exit_hook = true;
	}

	base = lock_base(fs_key_prefix, name);
	h = held_entry(base, name, false);
	known = h ? h->xact_count + h->session_count : 0;
	if (known == 0)
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
		if (!publish_state(base, name, SLOT_WAITING, watchdog, lease_ms, 0, false))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many Redis locks held or awaited in this instance"),
					 errdetail("The watchdog keeps the leases of at most %d.", registry->size),
					 errhint("Raise flashsale.max_redis_locks (it takes a server restart).")));
	}

	acquiring = MemoryContextStrdup(TopMemoryContext, base);
	token = try_acquire(base, lease_ms, pickup_ms, false, known, &ttl);
	if (token == 0 && wait_ms > 0)
	{
		fs_stat_lock(FS_LK_REDIS, FS_LOCK_WAITS);
		token = wait_for(base, lease_ms, pickup_ms, known,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms), &renew_now);
		if (token == 0)
			fs_stat_lock(FS_LK_REDIS, FS_LOCK_TIMEOUTS);
	}
	pfree(acquiring);
	acquiring = NULL;
	if (token != 0)
		fs_stat_lock(FS_LK_REDIS, FS_LOCK_ACQUIRED);
	if (token == 0)
	{
		if (known == 0)
			publish_state(base, name, SLOT_FREE, false, 0, 0, false);
		PG_RETURN_NULL();
	}

	h = held_entry(base, name, true);
	if (session)
		h->session_count++;
	else
	{
		h->xact_count++;
		push_level(h);
	}
	/* the last acquisition's lease applies (it was set again in Redis) */
	h->watchdog = watchdog;
	h->lease_ms = lease_ms;
	h->token = token;
	publish_state(base, name, SLOT_HELD, watchdog, lease_ms, token, renew_now);
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
	char	   *base;
	HeldLock   *h;
	int64		left;

	fs_require_arg(fcinfo, 0, "name");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	base = lock_base(fs_key_prefix, name);
	h = held_entry(base, name, false);
	left = release_one("release", base, 1, true);
	if (left < 0)
	{
		int64		lease_ms = h ? h->lease_ms : 0;

		if (h)
			forget(h);
		ereport(ERROR,
				(errcode(ERRCODE_FS_NOT_LOCK_OWNER),
				 errmsg("Redis lock \"%s\" is not held by this session", name),
				 h ? errdetail("Its lease of %lld ms ran out and it was taken or freed; work done "
							   "under it since may have overlapped another owner's.",
							   (long long) lease_ms)
				 : errdetail("Only the session holding a lock can release it."),
				 errhint("Fencing tokens tell which owner came last.")));
	}
	if (h)
	{
		if (h->session_count > 0)
			h->session_count--;
		else if (h->xact_count > 0)
		{
			h->xact_count--;
			pop_level(h);
		}
		if (left == 0 || h->session_count + h->xact_count == 0)
			forget(h);
	}
	PG_RETURN_BOOL(true);
}

/* ---- the watchdog (called by the background worker) ---- */

/*
 * Renew the watchdog leases of locks held by live backends of this instance;
 * forget the entries of backends that are gone (their leases then run out).
 * Hard leases (lease_ms given) are never renewed.  Returns the ms until the
 * next renewal is due (-1: nothing to renew).  Allocates in the caller's
 * memory context, which the worker resets at every turn.
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
		if (!s.watchdog)
			continue;
		due = (long) (s.lease_ms / 3) - (long) ((now - s.renewed) / 1000);
		if (due <= 0)
		{
			const char *argv[3];
			FsReply    *r;
			bool		ok;

			argv[0] = s.base;
			argv[1] = s.owner;
			argv[2] = psprintf("%lld", (long long) s.lease_ms);
			r = fs_redis_script(&fs_script_lock_renew, 1, 3, argv, NULL, false);
			ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
			fs_redis_free(r);
			LWLockAcquire(registry->lock, LW_EXCLUSIVE);
			if (registry->slots[i].pid == s.pid && registry->slots[i].state == SLOT_HELD)
				registry->slots[i].renewed = now;
			LWLockRelease(registry->lock);
			due = (long) (s.lease_ms / 3);
			if (!ok)
				due = Min(due, 1000);	/* Redis trouble: try again soon */
		}
		next = next < 0 ? Max(due, 1) : Min(next, Max(due, 1));
	}
	return next;
}

/* ---- what is known of locks ---- */

/* redis_locks(): this instance's Redis locks, held or awaited. */
Datum
fs_redis_locks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FsRedisLockSlot *s = palloc(sizeof(FsRedisLockSlot));

	InitMaterializedSRF(fcinfo, 0);
	if (registry == NULL)
		return (Datum) 0;
	/* one slot copied at a time: O(1) memory whatever the registry's size */
	for (int i = 0; i < registry->size; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		LWLockAcquire(registry->lock, LW_SHARED);
		memcpy(s, &registry->slots[i], sizeof(FsRedisLockSlot));
		LWLockRelease(registry->lock);
		if (s->state == SLOT_FREE)
			continue;
		values[0] = CStringGetTextDatum(s->name);
		values[1] = CStringGetTextDatum(s->state == SLOT_HELD ? "held" : "waiting");
		values[2] = Int32GetDatum(s->pid);
		values[3] = TimestampTzGetDatum(s->since);
		values[4] = Int64GetDatum(s->lease_ms);
		values[5] = Int64GetDatum(s->token);
		nulls[5] = s->state != SLOT_HELD;
		values[6] = CStringGetTextDatum(s->owner);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * redis_lock_info(name): what Redis knows of a lock, whichever instance holds
 * or awaits it: key, held, owner, holder's system identifier and pid, hold
 * count, fencing token, lease left, live waiters (owner ids, FIFO order).
 */
Datum
fs_redis_lock_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	const char *name;
	char	   *base;
	const char *argv[4];
	FsReply    *r;
	Datum		v[10];
	bool		n[10] = {0};
	Datum	   *waiters;
	unsigned long long sysid = 0;
	int			pid = 0;

	fs_require_arg(fcinfo, 0, "name");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	base = lock_base(fs_key_prefix, name);
	lock_keys(argv, base);
	argv[1] = argv[2];			/* lock, queue, waiters */
	argv[2] = argv[3];
	r = fs_redis_script(&fs_script_lock_info, 3, 3, argv, NULL, true);
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
		r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER ||
		r->element[2]->type != REDIS_REPLY_INTEGER || r->element[3]->type != REDIS_REPLY_INTEGER ||
		(r->element[4]->type != REDIS_REPLY_ARRAY))
		bad_reply("lock_info");
	waiters = palloc(sizeof(Datum) * (r->element[4]->elements + 1));
	for (size_t i = 0; i < r->element[4]->elements; i++)
	{
		if (r->element[4]->element[i]->type != REDIS_REPLY_STRING)
			bad_reply("lock_info");
		waiters[i] = CStringGetTextDatum(r->element[4]->element[i]->str);
	}
	v[0] = CStringGetTextDatum(name);
	v[1] = CStringGetTextDatum(base);
	v[2] = BoolGetDatum(r->element[0]->len > 0);
	v[3] = CStringGetTextDatum(r->element[0]->str);
	n[3] = r->element[0]->len == 0;
	if (sscanf(r->element[0]->str, "%llu:%d:", &sysid, &pid) != 2)
		n[4] = n[5] = true;
	v[4] = CStringGetTextDatum(psprintf("%llu", sysid));
	v[5] = Int32GetDatum(pid);
	v[6] = Int32GetDatum((int32) r->element[1]->integer);
	v[7] = Int64GetDatum(r->element[2]->integer);
	n[7] = r->element[0]->len == 0;
	v[8] = Int64GetDatum(r->element[3]->integer);
	n[8] = r->element[3]->integer < 0;
	v[9] = PointerGetDatum(construct_array(waiters, (int) r->element[4]->elements, TEXTOID,
										   -1, false, TYPALIGN_INT));
	fs_redis_free(r);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), v, n)));
}

/*
 * redis_force_unlock(name): free a lock whoever holds it, and grant it to
 * its first waiter (Redisson's forceUnlock).  True when it was held.  For
 * admins only: the holder goes on as if it held it (its commit then fails,
 * 40001; its fencing token is stale).
 */
Datum
fs_redis_force_unlock(PG_FUNCTION_ARGS)
{
	const char *name;

	fs_require_arg(fcinfo, 0, "name");
	name = fs_lock_name(PG_GETARG_TEXT_PP(0));
	PG_RETURN_BOOL(release_one("force", lock_base(fs_key_prefix, name), 0, true) == 1);
}
