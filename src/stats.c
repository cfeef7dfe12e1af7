/*
 * stats.c: cumulative sale-day statistics in shared memory, read by the
 * flashsale.stat_* views and cleared by flashsale.stat_reset().
 *
 * What an operator asks on sale day: how fast is it selling, how many hear
 * "sold out", is Redis slow or failing, are buyers waiting on locks, did the
 * worker fall behind.  The counters answer it the way pg_stat_statements
 * does, cumulatively since the last reset, for every backend and the worker
 * of this instance.
 *
 * Cheap on the hot paths: fixed counters (Redis, locks, limits, the worker)
 * are atomics in one struct, added to without a lock.  Per product and per
 * coupon there is a keyed table (ShmemInitHash, like pg_stat_statements):
 * an entry is found under the table's lock in shared mode and its counters
 * are atomics, so buyers of one product never wait for each other; only a
 * product or coupon new to the table takes the lock exclusively.  The table
 * holds flashsale.max_stat_entries entries; when it is full, a new one
 * replaces the least recently used (its figures are lost: sizing says how
 * many products a sale touches at once).  The transaction callbacks only
 * update entries that exist (no insertion, nothing that allocates or can
 * fail after a commit).
 *
 * Redis latency is a histogram per kind of call with four buckets per power
 * of two of microseconds: p50 and p99 are read from it within an eighth of
 * their value; the maximum is exact.  flashsale.track_stats = off skips all
 * of it (to measure what it costs).
 */
#include "flashsale.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

bool		fs_track_stats = true;
int			fs_max_stat_entries = 1000;

#define FS_HIST_BUCKETS 160		/* 4 per power of two of microseconds: up to ~2^40 us */

typedef struct StatKey
{
	Oid			db;
	int32		kind;			/* FsStatEntryKind */
	int64		id;
} StatKey;

typedef struct StatEntry
{
	StatKey		key;
	pg_atomic_uint64 c[FS_STAT_ENTRY_COUNTERS];
	pg_atomic_uint64 last_used;	/* a clock of the table's, for eviction */
} StatEntry;

typedef struct StatShared
{
	LWLock	   *lock;			/* the keyed table: shared to find, exclusive to add */
	pg_atomic_uint64 clock;
	pg_atomic_uint64 redis[FS_REDIS_KINDS][FS_REDIS_COUNTERS];
	pg_atomic_uint64 hist[FS_REDIS_KINDS][FS_HIST_BUCKETS];
	pg_atomic_uint64 max_us[FS_REDIS_KINDS];
	pg_atomic_uint64 locks[FS_LOCK_KINDS][FS_LOCK_COUNTERS];
	pg_atomic_uint64 limits[FS_LIMIT_KINDS][2];
	pg_atomic_uint64 worker[FS_WORKER_COUNTERS];
	pg_atomic_uint64 reset_at;	/* TimestampTz */
} StatShared;

static StatShared *shared = NULL;
static HTAB *table = NULL;

static const char *const redis_kinds[FS_REDIS_KINDS] = {"stock", "lock", "limit", "sync", "call"};
static const char *const lock_kinds[FS_LOCK_KINDS] = {"named", "redis"};
static const char *const limit_kinds[FS_LIMIT_KINDS] = {"throttle", "throttle_local", "once"};

Size
fs_stats_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(StatShared)),
					hash_estimate_size(fs_max_stat_entries, sizeof(StatEntry)));
}

static void
zero(pg_atomic_uint64 *a, int n, bool init)
{
	for (int i = 0; i < n; i++)
	{
		if (init)
			pg_atomic_init_u64(&a[i], 0);
		else
			pg_atomic_write_u64(&a[i], 0);
	}
}

static void
zero_fixed(bool init)
{
	zero(&shared->redis[0][0], FS_REDIS_KINDS * FS_REDIS_COUNTERS, init);
	zero(&shared->hist[0][0], FS_REDIS_KINDS * FS_HIST_BUCKETS, init);
	zero(shared->max_us, FS_REDIS_KINDS, init);
	zero(&shared->locks[0][0], FS_LOCK_KINDS * FS_LOCK_COUNTERS, init);
	zero(&shared->limits[0][0], FS_LIMIT_KINDS * 2, init);
	zero(shared->worker, FS_WORKER_COUNTERS, init);
}

void
fs_stats_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	shared = ShmemInitStruct("flashsale statistics", sizeof(StatShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("flashsale"))[4].lock;
		pg_atomic_init_u64(&shared->clock, 0);
		zero_fixed(true);
		pg_atomic_init_u64(&shared->reset_at, (uint64) GetCurrentTimestamp());
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(StatKey);
	info.entrysize = sizeof(StatEntry);
	table = ShmemInitHash("flashsale statistics entries", fs_max_stat_entries, fs_max_stat_entries,
						  &info, HASH_ELEM | HASH_BLOBS);
}

static inline bool
on(void)
{
	return fs_track_stats && shared != NULL;
}

/* Make room for one entry: remove the least recently used (the table's lock held exclusively). */
static void
evict_one(void)
{
	HASH_SEQ_STATUS seq;
	StatEntry  *e;
	StatEntry  *oldest = NULL;
	uint64		oldest_used = PG_UINT64_MAX;

	hash_seq_init(&seq, table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		uint64		used = pg_atomic_read_u64(&e->last_used);

		if (used < oldest_used)
		{
			oldest_used = used;
			oldest = e;
		}
	}
	if (oldest)
		(void) hash_search(table, &oldest->key, HASH_REMOVE, NULL);
}

/*
 * Add n to counter of the entry (kind, id) of this database; a new entry is
 * made when insert (never from a transaction callback).
 */
static inline void
entry_set(StatEntry *e, int counter, int64 n)
{
	if (counter >= FS_STAT_ENTRY_FIRST_TIME)
		pg_atomic_write_u64(&e->c[counter], (uint64) n);	/* a timestamp */
	else
		pg_atomic_fetch_add_u64(&e->c[counter], n);
}

/* Add n to counter (and n2 to counter2, unless it is -1) of an entry: see fs_stat_entry_add. */
static void
entry_add(Oid db, FsStatEntryKind kind, int64 id, int counter, int64 n, int counter2, int64 n2,
		  bool insert)
{
	StatKey		key;
	StatEntry  *e;

	if (!on() || n == 0)
		return;
	memset(&key, 0, sizeof(key));
	key.db = db;
	key.kind = kind;
	key.id = id;
	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(table, &key, HASH_FIND, NULL);
	if (e == NULL && insert)
	{
		bool		found;

		LWLockRelease(shared->lock);
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		e = hash_search(table, &key, HASH_FIND, NULL);
		if (e == NULL)
		{
			if (hash_get_num_entries(table) >= fs_max_stat_entries)
				evict_one();
			e = hash_search(table, &key, HASH_ENTER_NULL, &found);
			pg_atomic_fetch_add_u64(&shared->clock, 1);
			if (e && !found)
			{
				for (int i = 0; i < FS_STAT_ENTRY_COUNTERS; i++)
					pg_atomic_init_u64(&e->c[i], 0);
				pg_atomic_init_u64(&e->last_used, 0);
			}
		}
	}
	if (e)
	{
		entry_set(e, counter, n);
		if (counter2 >= 0)
			entry_set(e, counter2, n2);
		/* the clock moves at each new entry only: no shared write per call but this one */
		pg_atomic_write_u64(&e->last_used, pg_atomic_read_u64(&shared->clock));
	}
	LWLockRelease(shared->lock);
}

void
fs_stat_entry_add(FsStatEntryKind kind, int64 id, int counter, int64 n, bool insert)
{
	entry_add(MyDatabaseId, kind, id, counter, n, -1, 0, insert);
}

/* The same with a second counter (or timestamp) of the same entry, in one look-up. */
void
fs_stat_entry_add2(FsStatEntryKind kind, int64 id, int counter, int64 n, int counter2, int64 n2,
				   bool insert)
{
	entry_add(MyDatabaseId, kind, id, counter, n, counter2, n2, insert);
}

/*
 * A transaction's takes of product ended: sold (sales takes of qty units in
 * all) or given back.  From the transaction callbacks: updates an entry made at the
 * take, makes none.
 */
void
fs_stat_sale(int64 product, int64 qty, int64 sales, bool committed)
{
	if (committed)
		entry_add(MyDatabaseId, FS_STAT_PRODUCT, product, FS_SP_SALES, sales, FS_SP_UNITS_SOLD, qty, false);
	else
		entry_add(MyDatabaseId, FS_STAT_PRODUCT, product, FS_SP_UNITS_GIVEN_BACK, qty, -1, 0, false);
}

/*
 * An allotment of product of database db was refilled from the pool (a
 * lease) or returned to it (the worker returns every database's).
 */
void
fs_stat_allot(Oid db, int64 product, bool refill, int64 units)
{
	if (refill)
	{
		entry_add(db, FS_STAT_PRODUCT, product, FS_SP_REFILLS, 1, FS_SP_UNITS_REFILLED, units, true);
		entry_add(db, FS_STAT_PRODUCT, product, FS_SP_LAST_REFILL, GetCurrentTimestamp(), -1, 0, false);
	}
	else if (units > 0)
	{
		entry_add(db, FS_STAT_PRODUCT, product, FS_SP_RETURNS, 1, FS_SP_UNITS_RETURNED, units, true);
	}
}

/* ---- the fixed counters ---- */

/* The bucket of a latency: four per power of two. */
static int
bucket_of(uint64 us)
{
	int			log2;
	int			b;

	if (us < 4)
		return (int) us;
	log2 = pg_leftmost_one_pos64(us);
	b = log2 * 4 + (int) ((us >> (log2 - 2)) & 3);
	return Min(b, FS_HIST_BUCKETS - 1);
}

/* The middle of bucket b, in microseconds. */
static double
bucket_mid(int b)
{
	int			log2 = b / 4;

	if (b < 4)
		return b;
	return ((double) (UINT64CONST(1) << log2)) * (1.0 + (b % 4 + 0.5) / 4.0);
}

void
fs_stat_redis_call(FsRedisKind kind, int64 us)
{
	uint64		max;

	if (!on())
		return;
	if (us < 0)
		us = 0;
	pg_atomic_fetch_add_u64(&shared->redis[kind][FS_REDIS_CALLS], 1);
	pg_atomic_fetch_add_u64(&shared->hist[kind][bucket_of((uint64) us)], 1);
	max = pg_atomic_read_u64(&shared->max_us[kind]);
	while ((uint64) us > max &&
		   !pg_atomic_compare_exchange_u64(&shared->max_us[kind], &max, (uint64) us))
		;
}

void
fs_stat_redis(FsRedisKind kind, int counter)
{
	if (on())
		pg_atomic_fetch_add_u64(&shared->redis[kind][counter], 1);
}

void
fs_stat_lock(FsLockStatKind kind, int counter)
{
	if (on())
		pg_atomic_fetch_add_u64(&shared->locks[kind][counter], 1);
}

void
fs_stat_limit(FsLimitKind kind, bool allowed)
{
	if (on())
		pg_atomic_fetch_add_u64(&shared->limits[kind][allowed ? 0 : 1], 1);
}

void
fs_stat_worker(int counter, int64 n)
{
	if (!on())
		return;
	if (counter == FS_WORKER_LAST_PASS_US)
	{
		uint64		max = pg_atomic_read_u64(&shared->worker[FS_WORKER_MAX_PASS_US]);

		pg_atomic_write_u64(&shared->worker[FS_WORKER_LAST_PASS_US], (uint64) n);
		while ((uint64) n > max &&
			   !pg_atomic_compare_exchange_u64(&shared->worker[FS_WORKER_MAX_PASS_US], &max, (uint64) n))
			;
	}
	else
		pg_atomic_fetch_add_u64(&shared->worker[counter], n);
}

/* ---- SQL ---- */

static void
require_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flashsale statistics need flashsale in shared_preload_libraries"),
				 errhint("Add flashsale to shared_preload_libraries and restart the server.")));
}

static Datum
counter_datum(pg_atomic_uint64 *a)
{
	return Int64GetDatum((int64) pg_atomic_read_u64(a));
}

static Datum
time_datum(pg_atomic_uint64 *a, bool *isnull)
{
	uint64		v = pg_atomic_read_u64(a);

	*isnull = v == 0;
	return TimestampTzGetDatum((TimestampTz) v);
}

PG_FUNCTION_INFO_V1(fs_stat_entries);
PG_FUNCTION_INFO_V1(fs_stat_redis_info);
PG_FUNCTION_INFO_V1(fs_stat_locks_info);
PG_FUNCTION_INFO_V1(fs_stat_limits_info);
PG_FUNCTION_INFO_V1(fs_stat_worker_info);
PG_FUNCTION_INFO_V1(fs_stat_reset);

/* stat_entries(kind): id, then the counters, then the timestamps, of this database's entries */
Datum
fs_stat_entries(PG_FUNCTION_ARGS)
{
	int32		kind = PG_GETARG_INT32(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	StatEntry  *e;

	require_shared();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(shared->lock, LW_SHARED);
	hash_seq_init(&seq, table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		Datum		values[1 + FS_STAT_ENTRY_COUNTERS];
		bool		nulls[1 + FS_STAT_ENTRY_COUNTERS] = {0};

		if (e->key.db != MyDatabaseId || e->key.kind != kind)
			continue;
		values[0] = Int64GetDatum(e->key.id);
		for (int i = 0; i < FS_STAT_ENTRY_COUNTERS; i++)
			values[1 + i] = i >= FS_STAT_ENTRY_FIRST_TIME ? time_datum(&e->c[i], &nulls[1 + i])
				: counter_datum(&e->c[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(shared->lock);
	return (Datum) 0;
}

/*
 * The latency below which a fraction q of the calls of kind fell, in ms (the
 * middle of its bucket, never above the maximum seen); NULL with no calls.
 */
static Datum
percentile_ms(int kind, double q, bool *isnull)
{
	double		max = (double) pg_atomic_read_u64(&shared->max_us[kind]);
	uint64		total = 0;
	uint64		seen = 0;
	uint64		counts[FS_HIST_BUCKETS];

	for (int b = 0; b < FS_HIST_BUCKETS; b++)
		total += counts[b] = pg_atomic_read_u64(&shared->hist[kind][b]);
	*isnull = total == 0;
	if (total == 0)
		return (Datum) 0;
	for (int b = 0; b < FS_HIST_BUCKETS; b++)
	{
		seen += counts[b];
		if ((double) seen >= q * (double) total)
			return Float8GetDatum(Min(bucket_mid(b), max) / 1000.0);
	}
	return Float8GetDatum(max / 1000.0);
}

Datum
fs_stat_redis_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	require_shared();
	InitMaterializedSRF(fcinfo, 0);
	for (int k = 0; k < FS_REDIS_KINDS; k++)
	{
		Datum		values[1 + FS_REDIS_COUNTERS + 3];
		bool		nulls[1 + FS_REDIS_COUNTERS + 3] = {0};
		int			n = 0;
		uint64		max = pg_atomic_read_u64(&shared->max_us[k]);

		values[n++] = CStringGetTextDatum(redis_kinds[k]);
		for (int i = 0; i < FS_REDIS_COUNTERS; i++)
			values[n++] = counter_datum(&shared->redis[k][i]);
		values[n] = percentile_ms(k, 0.5, &nulls[n]);
		n++;
		values[n] = percentile_ms(k, 0.99, &nulls[n]);
		n++;
		nulls[n] = pg_atomic_read_u64(&shared->redis[k][FS_REDIS_CALLS]) == 0;
		values[n++] = Float8GetDatum((double) max / 1000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* One row per kind: its name, then its ncounters counters (a [kinds][ncounters] array). */
static void
kind_rows(FunctionCallInfo fcinfo, const char *const *names, int nkinds, pg_atomic_uint64 *counters,
		  int ncounters)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	require_shared();
	InitMaterializedSRF(fcinfo, 0);
	for (int k = 0; k < nkinds; k++)
	{
		Datum		values[1 + FS_LOCK_COUNTERS];
		bool		nulls[1 + FS_LOCK_COUNTERS] = {0};

		Assert(ncounters <= FS_LOCK_COUNTERS);
		values[0] = CStringGetTextDatum(names[k]);
		for (int i = 0; i < ncounters; i++)
			values[1 + i] = counter_datum(&counters[k * ncounters + i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

Datum
fs_stat_locks_info(PG_FUNCTION_ARGS)
{
	kind_rows(fcinfo, lock_kinds, FS_LOCK_KINDS, shared ? &shared->locks[0][0] : NULL, FS_LOCK_COUNTERS);
	return (Datum) 0;
}

Datum
fs_stat_limits_info(PG_FUNCTION_ARGS)
{
	kind_rows(fcinfo, limit_kinds, FS_LIMIT_KINDS, shared ? &shared->limits[0][0] : NULL, 2);
	return (Datum) 0;
}

Datum
fs_stat_worker_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[FS_WORKER_COUNTERS + 1];
	bool		nulls[FS_WORKER_COUNTERS + 1] = {0};

	require_shared();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (int i = 0; i < FS_WORKER_COUNTERS; i++)
	{
		uint64		v = pg_atomic_read_u64(&shared->worker[i]);

		if (i == FS_WORKER_LAST_PASS_US || i == FS_WORKER_MAX_PASS_US)
		{
			nulls[i] = pg_atomic_read_u64(&shared->worker[FS_WORKER_PASSES]) == 0;
			values[i] = Float8GetDatum((double) v / 1000.0);
		}
		else
			values[i] = Int64GetDatum((int64) v);
	}
	values[FS_WORKER_COUNTERS] = TimestampTzGetDatum((TimestampTz) pg_atomic_read_u64(&shared->reset_at));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* stat_reset(): every counter of this instance back to zero, every entry forgotten. */
Datum
fs_stat_reset(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	StatEntry  *e;

	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, table);
	while ((e = hash_seq_search(&seq)) != NULL)
		(void) hash_search(table, &e->key, HASH_REMOVE, NULL);
	zero_fixed(false);
	pg_atomic_write_u64(&shared->reset_at, (uint64) GetCurrentTimestamp());
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}
