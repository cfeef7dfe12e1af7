/*
 * throttle_local.c: throttle_local()'s table in this instance's shared
 * memory, and the GCRA step it runs there.
 *
 * The same algorithm as src/lua/throttle.lua (redis-cell's GCRA), with the
 * same figures, run on a table of this instance instead of Redis: no round
 * trip, for a single instance or as a first gate in front of throttle().
 * Each key (with its database) keeps one value, its theoretical arrival
 * time (TAT) in microseconds of this host's clock.  A key's entry is found
 * under the table's lock in shared mode and updated under its own
 * spinlock, so callers of different keys, and of one key, never wait for
 * each other longer than a few instructions; only a new key takes the lock
 * in exclusive mode.
 *
 * Bounded memory: flashsale.max_throttle_keys entries (fixed at server
 * start).  When the table is full, a new key first removes every entry
 * whose TAT has passed: such a key is back to its full burst, exactly as if
 * it had never been seen, so forgetting it changes nothing.  Only when that
 * frees less than a twentieth of the table are the least recently used of
 * the others evicted too, up to that twentieth (a batch, so that a table
 * full of keys in debt is not scanned at every new key).  An evicted key
 * has lost its debt: its next call is allowed a full burst again.  So the
 * table should hold every key that is limited at once; the README says how
 * to size it.
 *
 * A refund (throttle.c, when a transaction or savepoint rolls back) moves
 * the TAT back; a key evicted since has nothing to give back.
 */
#include "flashsale.h"

#include <math.h>

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"

int			fs_max_throttle_keys = 10000;

typedef struct ThrottleKey
{
	Oid			db;
	char		key[FS_THROTTLE_KEY_MAX + 1];	/* zero-padded: hashed as a blob */
} ThrottleKey;

typedef struct ThrottleEntry
{
	ThrottleKey k;
	slock_t		mutex;			/* tat and last_used */
	int64		tat;			/* theoretical arrival time, microseconds */
	TimestampTz last_used;
} ThrottleEntry;

typedef struct ThrottleShared
{
	LWLock	   *lock;			/* the table: shared to find, exclusive to add or remove */
} ThrottleShared;

static ThrottleShared *shared = NULL;
static HTAB *table = NULL;

Size
fs_throttle_local_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(ThrottleShared)),
					hash_estimate_size(fs_max_throttle_keys, sizeof(ThrottleEntry)));
}

void
fs_throttle_local_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	shared = ShmemInitStruct("flashsale throttle", sizeof(ThrottleShared), &found);
	if (!found)
		shared->lock = &(GetNamedLWLockTranche("flashsale"))[3].lock;
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ThrottleKey);
	info.entrysize = sizeof(ThrottleEntry);
	table = ShmemInitHash("flashsale throttle table", fs_max_throttle_keys, fs_max_throttle_keys,
						  &info, HASH_ELEM | HASH_BLOBS);
}

/*
 * One GCRA step on *tat at now: *tat moves when allowed.  throttle() runs it
 * too, on the TAT and the time src/lua/throttle.lua answers with (the
 * script decides and writes; this says by how much).
 */
void
fs_gcra_step(const FsGcra *g, int64 *tat, int64 now, FsGcraResult *r)
{
	int64		base = Max(*tat, now);
	int64		next = base + g->increment;
	int64		ttl;

	if (now < next - g->tolerance)
	{
		r->allowed = false;
		r->retry_after = g->increment <= g->tolerance ? next - g->tolerance - now : -1;
		ttl = base - now;
	}
	else
	{
		r->allowed = true;
		r->retry_after = -1;
		ttl = next - now;
		*tat = next;
	}
	r->tat = *tat;
	r->remaining = g->tolerance - ttl > 0 ? (int64) floor((g->tolerance - ttl) / g->interval) : 0;
	r->reset_after = ttl;
}

static int
by_last_used(const void *a, const void *b)
{
	TimestampTz x = (*(ThrottleEntry *const *) a)->last_used;
	TimestampTz y = (*(ThrottleEntry *const *) b)->last_used;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Make room in a full table (the lock held in exclusive mode): every entry
 * back to its full burst goes; if that is less than a twentieth of the
 * table, the least recently used of the others go too, up to that twentieth.
 */
static void
make_room(int64 now)
{
	long		n = hash_get_num_entries(table);
	long		want = Max(1, n / 20);
	long		removed = 0;
	long		nindebt = 0;
	ThrottleEntry **indebt = palloc(sizeof(ThrottleEntry *) * n);
	HASH_SEQ_STATUS seq;
	ThrottleEntry *e;

	hash_seq_init(&seq, table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->tat <= now)
		{
			hash_search(table, &e->k, HASH_REMOVE, NULL);
			removed++;
		}
		else
			indebt[nindebt++] = e;
	}
	if (removed < want)
	{
		qsort(indebt, nindebt, sizeof(ThrottleEntry *), by_last_used);
		for (long i = 0; i < nindebt && removed < want; i++, removed++)
			hash_search(table, &indebt[i]->k, HASH_REMOVE, NULL);
	}
	pfree(indebt);
}

static void
require_table(void)
{
	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("throttle_local needs flashsale in shared_preload_libraries"),
				 errdetail("Its keys are kept in this instance's shared memory."),
				 errhint("Add flashsale to shared_preload_libraries and restart the server, "
						 "or use flashsale.throttle().")));
}

static void
make_key(ThrottleKey *k, Oid db, const char *key)
{
	memset(k, 0, sizeof(*k));
	k->db = db;
	strlcpy(k->key, key, sizeof(k->key));
}

/* Admit key (of this database) under limit g at this host's clock. */
void
fs_throttle_local_admit(const char *key, const FsGcra *g, FsGcraResult *r)
{
	ThrottleKey k;
	ThrottleEntry *e;
	int64		now = (int64) GetCurrentTimestamp();
	bool		found;

	require_table();
	make_key(&k, MyDatabaseId, key);
	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(table, &k, HASH_FIND, NULL);
	if (e == NULL && g->increment == 0)
	{
		/* a probe of an unknown key: a full burst, and nothing to remember */
		int64		tat = now;

		LWLockRelease(shared->lock);
		fs_gcra_step(g, &tat, now, r);
		return;
	}
	if (e == NULL)
	{
		LWLockRelease(shared->lock);
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		e = hash_search(table, &k, HASH_FIND, NULL);
		if (e == NULL)
		{
			if (hash_get_num_entries(table) >= fs_max_throttle_keys)
				make_room(now);
			e = hash_search(table, &k, HASH_ENTER_NULL, &found);
			if (e == NULL)
			{
				LWLockRelease(shared->lock);
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of shared memory for throttle_local keys"),
						 errhint("Raise flashsale.max_throttle_keys.")));
			}
			SpinLockInit(&e->mutex);
			e->tat = now;
			e->last_used = now;
		}
	}
	SpinLockAcquire(&e->mutex);
	fs_gcra_step(g, &e->tat, now, r);
	e->last_used = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(shared->lock);
}

/*
 * Give back an admission (its transaction or savepoint rolled back), as
 * src/lua/throttle_refund.lua does: of the increment, only the part still
 * ahead of now (tat, the TAT the admission left, minus now); the part
 * already past was paid for by time, and giving it back would free capacity
 * later admissions used.  Shared memory only, nothing that can fail.
 * Nothing when the key was evicted since.
 */
void
fs_throttle_local_refund(Oid db, const char *key, int64 increment, int64 tat)
{
	ThrottleKey k;
	ThrottleEntry *e;
	int64		back = Min(increment, tat - (int64) GetCurrentTimestamp());

	if (table == NULL || back <= 0)
		return;
	make_key(&k, db, key);
	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(table, &k, HASH_FIND, NULL);
	if (e != NULL)
	{
		SpinLockAcquire(&e->mutex);
		e->tat -= back;
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(shared->lock);
}
