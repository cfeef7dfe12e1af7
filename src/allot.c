/*
 * allot.c: allotments — units of a product leased from the Redis pool into
 * this instance's shared memory, so that a sale costs no Redis round trip.
 *
 * The escrow method (O'Neil 1986) and quota leasing (Doorman): the pool in
 * Redis is the shared truth of what is unsold and unallotted; each instance
 * leases units from it in batches and its backends take units from the
 * allotment under a spinlock.  Per product and instance:
 *
 *     database truth (quantity - ledger) = pool + available + in flight
 *
 * where "available" is the allotment's free units and "in flight" the units
 * taken by transactions still running.  A take moves units from available
 * to in flight; a rollback, a savepoint rollback or an error moves them
 * back (shared memory only: nothing that can fail); a commit drops them
 * from in flight as its ledger row makes them sold.
 *
 * Redis per product: the pool (the stock key) and a hash beside it (the
 * stock key + ":allot") naming each instance that holds an allotment:
 *   e:<system identifier>  the epoch of the instance's shared memory
 *   s:<system identifier>  a sequence number, new at every change it makes
 *                          (never the same twice in one epoch)
 *   h:<system identifier>  the units it held at its last call
 * Every script this instance runs on a product checks epoch and sequence
 * against shared memory: a crash restart (a new epoch), a FLUSHALL, a Redis
 * restart from an older snapshot or a failover to a replica that missed
 * writes all show as a mismatch, and the entry is "stale": its next lease
 * rebuilds the pool from the database truth minus what this instance holds
 * (stock.c, under the product's lock in exclusive mode, so no transaction
 * has units of it in flight).  After a crash this instance holds nothing,
 * so its whole unsold allotment goes back to the pool exactly, from durable
 * records: the ledger.  A stale entry still sells what it has available:
 * those units are this instance's whatever Redis says.
 *
 * One Redis operation per entry at a time (the entry's "busy" flag): a
 * lease, a return, a rebuild or a consistent read of pool + available.
 * Leases happen when a take finds too few units (the buyer waits for it),
 * or ahead of need, by the taker that leaves fewer than half a batch (it
 * has its unit already; a failure there is only remembered).  The batch
 * doubles while leases come faster than every FS_FAST_MS and halves when
 * they come slower than every FS_SLOW_MS, within 1..flashsale.allotment_max;
 * a lease never takes more than a quarter of the pool beyond what the buyer
 * needs, so near sell-out units stay in the pool for other instances.  The
 * sync pass returns an allotment idle for flashsale.allotment_idle and
 * forgets entries that are empty and idle.
 *
 * Sold out: every lease reply says what the pool had; while that is fresh
 * (FS_SEEN_MS) a buyer who wants more than available + pool is answered
 * from here, with no lock and no Redis call.  Units given back are sold at
 * once (they are in "available"); a restock through set_stock or
 * restore_stock resets the entry at commit.
 *
 * Pointers to entries: an entry is removed only when nothing is in flight,
 * nobody has pinned it and it is not busy, under the table's lock in
 * exclusive mode; whoever keeps a pointer outside that lock holds units in
 * flight or a pin.  Without the preload there is no table, and the stock
 * functions say so (55000).
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "common/hashfn.h"
#include "port/atomics.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"

#define FS_FAST_MS 100			/* leases closer than this: double the batch */
#define FS_SLOW_MS 1000			/* further apart than this: halve it */
#define FS_SEEN_MS 100			/* how long a pool figure answers "sold out" */
#define FS_FIRST_BATCH 4

int			fs_allotment_max = 1000;
int			fs_allotment_idle_ms = 1000;
int			fs_max_allotments = 10000;

typedef struct AllotKey
{
	Oid			db;
	Oid			gen;			/* relfilenode of flashsale.stock */
	uint32		prefix;			/* hash of flashsale.key_prefix */
	int64		product;
} AllotKey;

struct FsAllot
{
	AllotKey	key;
	slock_t		mutex;
	bool		busy;			/* a Redis operation on the pool is under way */
	bool		stale;			/* Redis' record may differ: rebuild before leasing */
	bool		active;			/* sold from since the sync pass last looked */
	int			pins;			/* backends holding a pointer with nothing in flight */
	int64		avail;			/* free units */
	int64		taken;			/* units of transactions in progress */
	int64		pool_seen;		/* the pool at the last reply */
	TimestampTz seen_until;		/* ... which answers "sold out" until then */
	int64		seq;
	int64		batch;
	TimestampTz last_lease;
	TimestampTz last_used;
	ConditionVariable cv;		/* broadcast when busy clears */
	char		pool_key[FS_POOL_KEY_MAX];
};

typedef struct AllotShared
{
	LWLock	   *lock;			/* the hash table: shared to find, exclusive to add/remove */
	uint64		epoch;			/* this shared memory's incarnation */
	pg_atomic_uint64 next_seq;	/* sequence numbers: never one twice in an epoch */
} AllotShared;

static AllotShared *shared = NULL;
static HTAB *table = NULL;
static FsAllot *busy_mine = NULL;	/* the entry this backend holds busy, if any */
static bool exit_hook = false;

/* ---- shared memory ---- */

Size
fs_allot_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(AllotShared)),
					hash_estimate_size(fs_max_allotments, sizeof(FsAllot)));
}

void
fs_allot_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	shared = ShmemInitStruct("flashsale allotments", sizeof(AllotShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("flashsale"))[2].lock;
		/* new at every start and crash restart: what Redis holds of an older one is stale */
		if (!pg_strong_random(&shared->epoch, sizeof(shared->epoch)))
			shared->epoch = (uint64) GetCurrentTimestamp();
		pg_atomic_init_u64(&shared->next_seq, 1);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(AllotKey);
	info.entrysize = sizeof(FsAllot);
	table = ShmemInitHash("flashsale allotment table", fs_max_allotments, fs_max_allotments,
						  &info, HASH_ELEM | HASH_BLOBS);
}

static void
require_table(void)
{
	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flashsale's stock needs flashsale in shared_preload_libraries"),
				 errdetail("Units are sold from allotments in shared memory."),
				 errhint("Add flashsale to shared_preload_libraries and restart the server.")));
}

static void
make_key(AllotKey *k, Oid gen, int64 product)
{
	memset(k, 0, sizeof(*k));
	k->db = MyDatabaseId;
	k->gen = gen;
	k->prefix = hash_bytes((const unsigned char *) fs_key_prefix, (int) strlen(fs_key_prefix));
	k->product = product;
}

/* ---- the busy flag: one Redis operation per entry at a time ---- */

static void
release_busy_at_exit(int code, Datum arg)
{
	if (busy_mine)
	{
		SpinLockAcquire(&busy_mine->mutex);
		busy_mine->busy = false;
		SpinLockRelease(&busy_mine->mutex);
		ConditionVariableBroadcast(&busy_mine->cv);
		busy_mine = NULL;
	}
}

/* Take the flag (the entry's mutex held; released on return); false when busy. */
static bool
try_busy_locked(FsAllot *a)
{
	if (a->busy)
	{
		SpinLockRelease(&a->mutex);
		return false;
	}
	a->busy = true;
	busy_mine = a;
	SpinLockRelease(&a->mutex);
	if (!exit_hook)
	{
		before_shmem_exit(release_busy_at_exit, (Datum) 0);
		exit_hook = true;
	}
	return true;
}

static void
wait_not_busy(FsAllot *a)
{
	ConditionVariablePrepareToSleep(&a->cv);
	for (;;)
	{
		bool		busy;

		SpinLockAcquire(&a->mutex);
		busy = a->busy;
		SpinLockRelease(&a->mutex);
		if (!busy)
			break;
		/* timed: a broadcast missed between the check and the sleep costs 10 ms at most */
		(void) ConditionVariableTimedSleep(&a->cv, 10, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

static void
acquire_busy(FsAllot *a)
{
	for (;;)
	{
		SpinLockAcquire(&a->mutex);
		if (try_busy_locked(a))
			return;
		wait_not_busy(a);
	}
}

static void
release_busy(FsAllot *a)
{
	SpinLockAcquire(&a->mutex);
	a->busy = false;
	SpinLockRelease(&a->mutex);
	busy_mine = NULL;
	ConditionVariableBroadcast(&a->cv);
}

/* ---- finding entries ---- */

/*
 * The entry of product in this database and stock generation, pinned (the
 * caller unpins it), created stale when missing: its first lease rebuilds
 * the pool.  pool_key names the product's stock key, needed only to create.
 */
FsAllot *
fs_allot_get(Oid gen, int64 product, char *(*pool_key) (int64 product))
{
	AllotKey	key;
	FsAllot    *a;
	bool		found;
	const char *name = NULL;

	require_table();
	make_key(&key, gen, product);
	LWLockAcquire(shared->lock, LW_SHARED);
	a = hash_search(table, &key, HASH_FIND, NULL);
	if (a)
	{
		SpinLockAcquire(&a->mutex);
		a->pins++;
		SpinLockRelease(&a->mutex);
		LWLockRelease(shared->lock);
		return a;
	}
	LWLockRelease(shared->lock);

	name = pool_key(product);
	if (strlen(name) >= FS_POOL_KEY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("flashsale's Redis key for product %lld is too long", (long long) product),
				 errdetail("Keys are at most %d bytes.", FS_POOL_KEY_MAX - 1)));
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	a = hash_search(table, &key, HASH_ENTER_NULL, &found);
	if (a == NULL)
	{
		LWLockRelease(shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many products with allotments on this instance"),
				 errdetail("flashsale.max_allotments is %d.", fs_max_allotments),
				 errhint("Raise flashsale.max_allotments (needs a restart), or wait for idle allotments to go back.")));
	}
	if (!found)
	{
		SpinLockInit(&a->mutex);
		a->busy = false;
		a->stale = true;
		a->active = false;
		a->pins = 0;
		a->avail = 0;
		a->taken = 0;
		a->pool_seen = 0;
		a->seen_until = 0;
		a->seq = 0;
		a->batch = FS_FIRST_BATCH;
		a->last_lease = 0;
		a->last_used = GetCurrentTimestamp();
		ConditionVariableInit(&a->cv);
		strlcpy(a->pool_key, name, sizeof(a->pool_key));
	}
	SpinLockAcquire(&a->mutex);
	a->pins++;
	SpinLockRelease(&a->mutex);
	LWLockRelease(shared->lock);
	return a;
}

void
fs_allot_unpin(FsAllot *a)
{
	SpinLockAcquire(&a->mutex);
	a->pins--;
	SpinLockRelease(&a->mutex);
}

/* The entry if there is one, under the table's lock in shared mode (the caller releases it). */
static FsAllot *
find_locked(Oid gen, int64 product)
{
	AllotKey	key;

	if (table == NULL)
		return NULL;
	make_key(&key, gen, product);
	LWLockAcquire(shared->lock, LW_SHARED);
	return hash_search(table, &key, HASH_FIND, NULL);
}

/*
 * Sold out, known here: the product has fewer than qty units available and
 * the pool was short of the rest at a reply fresher than FS_SEEN_MS.  No
 * lock, no Redis.  *left gets what there is.
 */
bool
fs_allot_short_known(Oid gen, int64 product, int64 qty, int64 *left)
{
	FsAllot    *a = find_locked(gen, product);
	bool		known = false;

	if (a)
	{
		SpinLockAcquire(&a->mutex);
		if (a->avail < qty && a->seen_until != 0 && a->avail + a->pool_seen < qty &&
			GetCurrentTimestamp() < a->seen_until)
		{
			known = true;
			*left = a->avail + a->pool_seen;
		}
		SpinLockRelease(&a->mutex);
	}
	if (table != NULL)
		LWLockRelease(shared->lock);
	return known;
}

/* ---- Redis: lease, return, rebuild, read ---- */

static char *
allot_key(FsAllot *a)
{
	return psprintf("%s:allot", a->pool_key);
}

static const char *
instance(void)
{
	static char id[32];

	if (id[0] == '\0')
		snprintf(id, sizeof(id), "%llu", (unsigned long long) GetSystemIdentifier());
	return id;
}

static const char *
epoch(void)
{
	return psprintf("%llu", (unsigned long long) shared->epoch);
}

static const char *
i8(int64 v)
{
	return psprintf("%lld", (long long) v);
}

/*
 * A sequence number never used before in this epoch, for any product: a
 * Redis restored from an older snapshot can never hold the record this
 * instance expects, even across rebuilds (which start a product's record
 * afresh).
 */
static int64
new_seq(void)
{
	return (int64) pg_atomic_fetch_add_u64(&shared->next_seq, 1);
}

/* The first five arguments of lease and giveback: the keys, and the record they check. */
static void
record_args(FsAllot *a, const char **argv)
{
	argv[0] = a->pool_key;
	argv[1] = allot_key(a);
	argv[2] = instance();
	argv[3] = epoch();
	argv[4] = i8(a->seq);
}

typedef enum LeaseResult
{
	LEASE_GRANTED,
	LEASE_SHORT,				/* the pool has fewer than needed: nothing moved */
	LEASE_STALE,				/* Redis' record is not this instance's: rebuild */
	LEASE_FAILED				/* Redis could not be asked (only when not throwing) */
} LeaseResult;

/* A reply we sent but never read may have changed Redis: the entry is stale. */
static void
mark_stale_if_sent(FsAllot *a, uint64 sent_before)
{
	if (fs_redis_sent != sent_before)
	{
		SpinLockAcquire(&a->mutex);
		a->stale = true;
		SpinLockRelease(&a->mutex);
	}
}

static void
unexpected(const char *script)
{
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("unexpected reply from flashsale's Redis script \"%s\"", script)));
}

/*
 * Lease units from the pool (busy held): at least need (0: as many as
 * the batch, ahead of need), at most want.  When throw is false a failure
 * is only remembered.
 */
static LeaseResult
lease(FsAllot *a, int64 need, int64 want, bool throw)
{
	const char *argv[9];
	FsReply    *r;
	uint64		sent_before = fs_redis_sent;
	int64		held,
				granted,
				pool,
				seq = new_seq();
	TimestampTz now;

	SpinLockAcquire(&a->mutex);
	held = a->avail + a->taken;
	SpinLockRelease(&a->mutex);

	record_args(a, argv);
	argv[5] = i8(Max(need, 1));
	argv[6] = i8(Max(want, need));
	argv[7] = i8(held);
	argv[8] = i8(seq);

	PG_TRY();
	{
		r = fs_redis_script(&fs_script_lease, 2, 9, argv, NULL, throw);
	}
	PG_CATCH();
	{
		mark_stale_if_sent(a, sent_before);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (r == NULL)
	{
		mark_stale_if_sent(a, sent_before);
		return LEASE_FAILED;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER ||
		(r->element[0]->integer >= 0 &&
		 (r->elements != 2 || r->element[1]->type != REDIS_REPLY_INTEGER)))
	{
		fs_redis_free(r);
		mark_stale_if_sent(a, sent_before);
		if (!throw)
			return LEASE_FAILED;
		unexpected("lease");
	}
	granted = r->element[0]->integer;
	if (granted < 0)
	{
		fs_redis_free(r);
		SpinLockAcquire(&a->mutex);
		a->stale = true;
		SpinLockRelease(&a->mutex);
		return LEASE_STALE;
	}
	pool = r->element[1]->integer;
	fs_redis_free(r);

	now = GetCurrentTimestamp();
	SpinLockAcquire(&a->mutex);
	a->pool_seen = pool;
	a->seen_until = TimestampTzPlusMilliseconds(now, FS_SEEN_MS);
	if (granted > 0)
	{
		a->avail += granted;
		a->seq = seq;
		if (a->last_lease != 0 && now - a->last_lease < FS_FAST_MS * INT64CONST(1000))
			a->batch = Min(a->batch * 2, (int64) fs_allotment_max);
		else if (a->last_lease == 0 || now - a->last_lease > FS_SLOW_MS * INT64CONST(1000))
			a->batch = Max(a->batch / 2, 1);
		a->batch = Min(a->batch, (int64) fs_allotment_max);
		a->last_lease = now;
	}
	SpinLockRelease(&a->mutex);
	if (granted > 0)
		fs_stat_allot(a->key.db, a->key.product, true, granted);
	return granted > 0 ? LEASE_GRANTED : LEASE_SHORT;
}

/* The batch, within this session's flashsale.allotment_max (the mutex held). */
static int64
batch_now(FsAllot *a)
{
	return Min(a->batch, (int64) fs_allotment_max);
}

/* lease(), then let go of busy whatever happens */
static LeaseResult
lease_then_release(FsAllot *a, int64 need, int64 want, bool throw)
{
	volatile LeaseResult lr = LEASE_FAILED;

	PG_TRY();
	{
		lr = lease(a, need, want, throw);
	}
	PG_CATCH();
	{
		release_busy(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_busy(a);
	return lr;
}

/*
 * Take qty units for the calling transaction (the entry pinned by the
 * caller), leasing from the pool when too few are available.  *record (the
 * transaction's record of them) is set the moment they are taken.  TAKE_SHORT:
 * not enough in all, *left says how many there are.  TAKE_REBUILD: the
 * entry is stale and too few units are available: the caller rebuilds the
 * pool (fs_allot_rebuild) and tries again.  Redis errors are thrown
 * (class 08) only when a lease was needed.
 */
FsTakeResult
fs_allot_take(FsAllot *a, int64 qty, int64 *left, int64 *record)
{
	for (int attempt = 0;; attempt++)
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		ahead = false;
		int64		need = 0,
					want = 0;
		LeaseResult lr;

		SpinLockAcquire(&a->mutex);
		a->last_used = now;
		if (a->avail >= qty)
		{
			a->avail -= qty;
			a->taken += qty;
			/* in the caller's record before anything can throw: an abort gives them back */
			*record = qty;
			a->active = true;
			*left = a->avail + a->pool_seen;
			/* fewer than half a batch left: top it up now, ahead of need */
			if (!a->busy && !a->stale && a->avail < batch_now(a) / 2 &&
				!(now < a->seen_until && a->pool_seen == 0))
			{
				want = batch_now(a);
				ahead = try_busy_locked(a);
			}
			else
				SpinLockRelease(&a->mutex);
			if (ahead)
				(void) lease_then_release(a, 0, want, false);
			return TAKE_OK;
		}
		/* the pool was short of the rest a moment ago */
		if (a->seen_until != 0 && a->avail + a->pool_seen < qty &&
			(now < a->seen_until || a->busy))
		{
			*left = a->avail + a->pool_seen;
			SpinLockRelease(&a->mutex);
			return TAKE_SHORT;
		}
		if (a->busy)
		{
			SpinLockRelease(&a->mutex);
			wait_not_busy(a);
			continue;
		}
		if (a->stale)
		{
			SpinLockRelease(&a->mutex);
			return TAKE_REBUILD;
		}
		need = qty - a->avail;
		want = Max(need, batch_now(a));
		(void) try_busy_locked(a);
		lr = lease_then_release(a, need, want, true);

		if (lr == LEASE_STALE)
			continue;			/* sells what is available, else TAKE_REBUILD */
		if (attempt >= 1000)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not lease units of product %lld", (long long) a->key.product),
					 errdetail("Other buyers took the leased units %d times in a row.", attempt)));
	}
}

/* A transaction's take ended: committed (sold) or not (back to available). */
void
fs_allot_end_take(FsAllot *a, int64 qty, bool committed)
{
	SpinLockAcquire(&a->mutex);
	a->taken -= qty;
	if (!committed)
		a->avail += qty;
	SpinLockRelease(&a->mutex);
}

/* restore_stock committed: its units are for sale here at once. */
void
fs_allot_add(FsAllot *a, int64 qty)
{
	SpinLockAcquire(&a->mutex);
	a->avail += qty;
	SpinLockRelease(&a->mutex);
}

/*
 * set_stock committed (or the product's row went, or its keys were dropped):
 * what the entry holds no longer counts (dropped is true when the truth was
 * set anew) and the next lease rebuilds the pool.  Shared memory only.
 */
void
fs_allot_invalidate(Oid gen, int64 product, bool drop_units)
{
	FsAllot    *a = find_locked(gen, product);

	if (a)
	{
		SpinLockAcquire(&a->mutex);
		if (drop_units)
			a->avail = 0;
		a->stale = true;
		a->pool_seen = 0;
		a->seen_until = 0;
		SpinLockRelease(&a->mutex);
	}
	if (table != NULL)
		LWLockRelease(shared->lock);
}

/* Does the entry wait for a rebuild? */
bool
fs_allot_stale(FsAllot *a)
{
	bool		stale;

	SpinLockAcquire(&a->mutex);
	stale = a->stale;
	SpinLockRelease(&a->mutex);
	return stale;
}

/*
 * Rebuild the pool from the database truth: pool = truth - available (the
 * caller holds the product's lock exclusively, so only its own transaction
 * can have units in flight, and the truth it read already leaves those
 * out).  Throws on a Redis error.
 */
void
fs_allot_rebuild(FsAllot *a, int64 truth, const char *old_key)
{
	const char *argv[8];
	FsReply    *r;
	int64		pool,
				avail,
				taken,
				seq;

	acquire_busy(a);
	PG_TRY();
	{
		SpinLockAcquire(&a->mutex);
		avail = a->avail;
		taken = a->taken;
		SpinLockRelease(&a->mutex);
		pool = truth - avail;
		if (pool < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("product %lld has %lld units left in the database but %lld available here",
							(long long) a->key.product, (long long) truth, (long long) avail)));
		argv[0] = a->pool_key;
		argv[1] = allot_key(a);
		argv[2] = old_key;
		argv[3] = instance();
		argv[4] = epoch();
		argv[5] = i8(pool);
		argv[6] = i8(avail + taken);
		argv[7] = i8(seq = new_seq());
		r = fs_redis_script(&fs_script_rebuild, 3, 8, argv, NULL, true);
		if (r->type != REDIS_REPLY_INTEGER || r->integer != 1)
			unexpected("rebuild");
		fs_redis_free(r);
		SpinLockAcquire(&a->mutex);
		a->stale = false;
		a->seq = seq;
		a->pool_seen = pool;
		a->seen_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FS_SEEN_MS);
		SpinLockRelease(&a->mutex);
	}
	PG_CATCH();
	{
		release_busy(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_busy(a);
}

/*
 * What Redis holds of the product and what this instance holds, read
 * together (busy held, so no lease or return moves units meanwhile).
 * False when the entry is stale or Redis' record is not this instance's
 * (the caller rebuilds).  Throws on a Redis error.
 */
static bool
read_busy(FsAllot *a, FsAllotFigures *f)
{
	const char *argv[2];
	FsReply    *r;
	bool		mine = true;
	char		e[32],
				s[32],
				h[32];
	const char *ep = epoch();

	{
		argv[0] = a->pool_key;
		argv[1] = allot_key(a);
		r = fs_redis_script(&fs_script_info, 2, 2, argv, NULL, true);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
			(r->element[0]->type != REDIS_REPLY_STRING && r->element[0]->type != REDIS_REPLY_NIL) ||
			r->element[1]->type != REDIS_REPLY_ARRAY || r->element[1]->elements % 2 != 0)
			unexpected("info");
		snprintf(e, sizeof(e), "e:%s", instance());
		snprintf(s, sizeof(s), "s:%s", instance());
		snprintf(h, sizeof(h), "h:%s", instance());
		f->pool_known = r->element[0]->type == REDIS_REPLY_STRING;
		if (f->pool_known)
			f->pool = strtoll(r->element[0]->str, NULL, 10);
		else
			mine = false;
		{
			bool		epoch_ok = false,
						seq_ok = false;

			for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2)
			{
				const char *field = r->element[1]->element[i]->str;
				const char *value = r->element[1]->element[i + 1]->str;

				if (field == NULL || value == NULL)
					unexpected("info");
				if (strncmp(field, "h:", 2) == 0)
					f->allotted += strtoll(value, NULL, 10);
				if (strcmp(field, e) == 0)
					epoch_ok = strcmp(value, ep) == 0;
				else if (strcmp(field, s) == 0)
					seq_ok = strtoll(value, NULL, 10) == a->seq;
			}
			mine = mine && epoch_ok && seq_ok;
		}
		fs_redis_free(r);
		SpinLockAcquire(&a->mutex);
		if (!mine)
			a->stale = true;
		mine = mine && !a->stale;
		f->available = a->avail;
		f->in_flight = a->taken;
		SpinLockRelease(&a->mutex);
	}
	return mine;
}

bool
fs_allot_read(FsAllot *a, FsAllotFigures *f)
{
	volatile bool mine = false;

	memset(f, 0, sizeof(*f));
	acquire_busy(a);
	PG_TRY();
	{
		mine = read_busy(a, f);
	}
	PG_CATCH();
	{
		release_busy(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_busy(a);
	return mine;
}

/* ---- the sync pass: idle allotments back to the pool, empty entries forgotten ---- */

/*
 * Is the product due a check against the database?  When it was sold from
 * since its last check and has been idle for flashsale.allotment_idle since
 * (a hot product is checked once it quiets down: its Redis record is checked
 * at every lease meanwhile), or when its entry is stale.  Clears the mark.
 */
bool
fs_allot_check_due(Oid gen, int64 product)
{
	FsAllot    *a = find_locked(gen, product);
	bool		due = false;

	if (a)
	{
		TimestampTz cutoff = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), -fs_allotment_idle_ms);

		SpinLockAcquire(&a->mutex);
		due = a->stale || (a->active && a->last_used <= cutoff);
		if (due)
			a->active = false;
		SpinLockRelease(&a->mutex);
	}
	if (table != NULL)
		LWLockRelease(shared->lock);
	return due;
}

/* Give an idle allotment back to the pool (busy held); true when it went. */
static bool
give_back(FsAllot *a)
{
	const char *argv[8];
	FsReply    *r;
	int64		units,
				held,
				seq = new_seq();
	uint64		sent_before = fs_redis_sent;

	SpinLockAcquire(&a->mutex);
	units = a->avail;
	a->avail = 0;				/* on their way: nobody takes them meanwhile */
	held = a->taken;
	SpinLockRelease(&a->mutex);

	record_args(a, argv);
	argv[5] = i8(units);
	argv[6] = i8(held);
	argv[7] = i8(seq);
	r = fs_redis_script(&fs_script_giveback, 2, 8, argv, NULL, false);
	if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
	{
		fs_redis_free(r);
		SpinLockAcquire(&a->mutex);
		a->seq = seq;
		a->pool_seen += units;
		SpinLockRelease(&a->mutex);
		fs_stat_allot(a->key.db, a->key.product, false, units);
		return true;
	}
	if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == -1)
	{
		/* not this instance's record: the units are still ours; rebuild later */
		fs_redis_free(r);
		SpinLockAcquire(&a->mutex);
		a->avail += units;
		a->stale = true;
		SpinLockRelease(&a->mutex);
		return false;
	}
	if (r)
		fs_redis_free(r);
	if (fs_redis_sent == sent_before)
	{
		/* never sent: nothing moved */
		SpinLockAcquire(&a->mutex);
		a->avail += units;
		SpinLockRelease(&a->mutex);
	}
	else
		/* they may or may not be in the pool: never count them twice; the rebuild recounts */
		mark_stale_if_sent(a, sent_before);
	return false;
}

static bool
give_back_then_release(FsAllot *a)
{
	volatile bool gone = false;

	PG_TRY();
	{
		gone = give_back(a);
	}
	PG_CATCH();
	{
		release_busy(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_busy(a);
	return gone;
}

/*
 * Give back allotments idle for flashsale.allotment_idle (every database's:
 * the entries name their keys) and forget entries with nothing in them.
 * Returns the allotments given back; *units the units.
 */
int64
fs_allot_return_idle(int64 *units)
{
	HASH_SEQ_STATUS seq;
	FsAllot    *a;
	List	   *idle = NIL;
	ListCell   *lc;
	int64		returned = 0;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz cutoff = TimestampTzPlusMilliseconds(now, -fs_allotment_idle_ms);

	*units = 0;
	if (table == NULL)
		return 0;

	/* pin the idle ones that hold units; remove the idle empty ones */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, table);
	while ((a = hash_seq_search(&seq)) != NULL)
	{
		bool		gone = false;

		SpinLockAcquire(&a->mutex);
		if (a->last_used <= cutoff && !a->busy && a->taken == 0)
		{
			if (a->avail > 0 && !a->stale)
			{
				a->pins++;
				idle = lappend(idle, a);
			}
			else if (a->avail == 0 && a->pins == 0)
				gone = true;
		}
		SpinLockRelease(&a->mutex);
		if (gone)
			hash_search(table, &a->key, HASH_REMOVE, NULL);
	}
	LWLockRelease(shared->lock);

	foreach(lc, idle)
	{
		bool		go;
		int64		avail;

		a = lfirst(lc);
		SpinLockAcquire(&a->mutex);
		avail = a->avail;
		if (a->last_used <= cutoff && a->taken == 0 && avail > 0 && !a->stale)
			go = try_busy_locked(a);	/* releases the mutex */
		else
		{
			go = false;
			SpinLockRelease(&a->mutex);
		}
		if (go && give_back_then_release(a))
		{
			returned++;
			*units += avail;
		}
		fs_allot_unpin(a);
	}
	return returned;
}

/* ---- listing: flashsale.allotments() ---- */

/* Copies of this database's entries of generation gen; *n of them. */
FsAllotRow *
fs_allot_list(Oid gen, int *n)
{
	HASH_SEQ_STATUS seq;
	FsAllot    *a;
	FsAllotRow *rows;
	int			k = 0;
	long		count;

	*n = 0;
	if (table == NULL)
		return NULL;
	LWLockAcquire(shared->lock, LW_SHARED);
	count = hash_get_num_entries(table);
	rows = palloc0(sizeof(FsAllotRow) * (count + 1));
	hash_seq_init(&seq, table);
	while ((a = hash_seq_search(&seq)) != NULL)
	{
		if (a->key.db != MyDatabaseId || a->key.gen != gen || k >= count)
			continue;
		SpinLockAcquire(&a->mutex);
		rows[k].product = a->key.product;
		rows[k].available = a->avail;
		rows[k].in_flight = a->taken;
		rows[k].batch = a->batch;
		rows[k].last_used = a->last_used;
		rows[k].stale = a->stale;
		SpinLockRelease(&a->mutex);
		k++;
	}
	LWLockRelease(shared->lock);
	*n = k;
	return rows;
}
