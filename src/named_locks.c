/*
 * named_locks.c: text-named advisory locks, MySQL's GET_LOCK family in
 * PostgreSQL style.
 *
 * A name maps to an advisory lock tag of the current database whose field4
 * is FS_LOCK_NAMED and whose two 32-bit keys are a 64-bit hash of the name:
 * flashsale's own key space, apart from pg_advisory_lock()'s (field4 1 and
 * 2) and from the coupon locks.  The lock manager does the rest: waiters are
 * served FIFO, deadlocks are detected, a cancel ends a wait.
 *
 * A name is at most FS_LOCK_NAME_MAX characters, as in MySQL (a multibyte
 * name may take up to four times as many bytes), and compares exactly, byte
 * for byte, as PostgreSQL's text does: 'A' and 'a' are two locks (MySQL's
 * default collation would make them one).
 *
 * Names are remembered in shared memory (when preloaded) so that the view
 * flashsale.locks can say which name a lock is, and since when it is held.
 * Listing them costs O(n log n) time and O(n) memory in the locks listed:
 * the lock manager's rows of named locks are sorted once by name and wait
 * start, and the registry is read once.
 *
 * release_lock and release_all_locks count this session's session-level
 * acquisitions of each name.  pg_advisory_unlock_all() and DISCARD ALL
 * release every session-level advisory lock of the backend, these
 * included, without telling anyone; so while it counts anything, the
 * session also holds a session-level "witness" lock of its own
 * (FS_LOCK_NAMED_WITNESS, keyed by its pid).  Whatever released the names
 * released the witness with them: when it is gone, the counts are stale and
 * are forgotten before they are used.  The counts are then exact, and no
 * lock is released twice or left behind.
 *
 * Each lock takes an entry of the lock manager's shared table, which every
 * session of the instance needs; a session may hold at most
 * flashsale.max_named_locks_per_session distinct names (a superuser's
 * setting) through these functions, at session and transaction level
 * together, so that it cannot fill the table for the others.
 */
#include "flashsale.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_get_lock);
PG_FUNCTION_INFO_V1(fs_get_xact_lock);
PG_FUNCTION_INFO_V1(fs_release_lock);
PG_FUNCTION_INFO_V1(fs_release_all_locks);
PG_FUNCTION_INFO_V1(fs_is_free_lock);
PG_FUNCTION_INFO_V1(fs_is_used_lock);
PG_FUNCTION_INFO_V1(fs_named_locks);

/* ---- shared registry of names ---- */

/* flashsale.max_lock_names: the names remembered, sized at server start */
static int	max_lock_names = 1024;
/* flashsale.max_named_locks_per_session: distinct names one session may hold */
static int	max_named_locks_per_session = 64;

typedef struct FsLockName
{
	uint64		key;
	int			holder_pid;		/* the last backend that acquired it */
	TimestampTz since;			/* when it did */
	char		name[FS_LOCK_NAME_BYTES + 1];
} FsLockName;

typedef struct FsLockNames
{
	LWLock	   *lock;
	int			size;			/* number of entries */
	int			next;			/* round robin when full */
	FsLockName	entries[FLEXIBLE_ARRAY_MEMBER];
} FsLockNames;

static FsLockNames *names = NULL;

/* Called by the shmem_request_hook, after the configuration was read. */
Size
fs_named_locks_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(FsLockNames, entries),
							 mul_size(max_lock_names, sizeof(FsLockName))));
}

void
fs_named_locks_shmem_init(void)
{
	Size		size = fs_named_locks_shmem_size();
	bool		found;

	names = ShmemInitStruct("flashsale lock names", size, &found);
	if (!found)
	{
		memset(names, 0, size);
		names->lock = &(GetNamedLWLockTranche("flashsale"))->lock;
		names->size = max_lock_names;
	}
}

/* Called from _PG_init: this file's settings. */
void
fs_named_locks_init(void)
{
	fs_shmem_define_size("flashsale.max_lock_names",
						 "Lock names this instance remembers for flashsale.locks.",
						 "When they are all taken, the oldest remembered name is forgotten.",
						 &max_lock_names);
	DefineCustomIntVariable("flashsale.max_named_locks_per_session",
							"Named locks one session can hold at once.",
							"Counts distinct names taken by get_lock and get_xact_lock; keeps one "
							"session from filling the lock manager's shared table.",
							&max_named_locks_per_session, 64, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Remember name for key; with holder, also who holds it since now. */
static void
remember(uint64 key, const char *name, bool holder)
{
	int			slot = -1;

	if (names == NULL)
		return;
	LWLockAcquire(names->lock, LW_EXCLUSIVE);
	for (int i = 0; i < names->size; i++)
	{
		if (names->entries[i].name[0] != '\0' && names->entries[i].key == key)
		{
			slot = i;
			break;
		}
		if (slot < 0 && names->entries[i].name[0] == '\0')
			slot = -2 - i;		/* first free slot, if the name is not there */
	}
	if (slot < -1)
		slot = -2 - slot;
	else if (slot == -1)
	{
		slot = names->next;
		names->next = (names->next + 1) % names->size;
	}
	names->entries[slot].key = key;
	strlcpy(names->entries[slot].name, name, sizeof(names->entries[slot].name));
	if (holder)
	{
		names->entries[slot].holder_pid = MyProcPid;
		names->entries[slot].since = GetCurrentTimestamp();
	}
	LWLockRelease(names->lock);
}

/* ---- tags ---- */

/*
 * A Redis lock's name as a C string, or an error when empty or over
 * FS_LOCK_NAME_MAX bytes (redis_locks.c keeps names in buffers of that
 * size).
 */
char *
fs_lock_name(text *t)
{
	char	   *name = text_to_cstring(t);
	size_t		len = strlen(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock name must not be empty")));
	if (len > FS_LOCK_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("lock name is too long"),
				 errdetail("It is %zu bytes long; the limit is %d.", len, FS_LOCK_NAME_MAX)));
	return name;
}

/*
 * A named lock's name as a C string, or an error when empty or over
 * FS_LOCK_NAME_MAX characters (MySQL's limit, in characters too).
 */
static char *
named_lock_name(text *t)
{
	char	   *name = text_to_cstring(t);
	int			len = (int) strlen(name);
	int			chars;

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock name must not be empty")));
	chars = pg_mbstrlen_with_len(name, len);
	if (chars > FS_LOCK_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("lock name is too long"),
				 errdetail("It is %d characters long; the limit is %d.", chars, FS_LOCK_NAME_MAX)));
	Assert(len <= FS_LOCK_NAME_BYTES);
	return name;
}

static uint64
name_key(text *t, char **name_out)
{
	char	   *name = named_lock_name(t);

	*name_out = name;
	return hash_bytes_extended((const unsigned char *) name, (int) strlen(name), 0);
}

static void
named_tag(LOCKTAG *tag, uint64 key)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (key >> 32), (uint32) key,
						 (uint16) FS_LOCK_NAMED);
}

/* ---- this backend's named locks ---- */

/* A backend-local table keyed by a name's key, for the whole session. */
static HTAB *
key_table(const char *what, Size entrysize)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(uint64);
	ctl.entrysize = entrysize;
	return hash_create(what, 16, &ctl, HASH_ELEM | HASH_BLOBS);
}

/* session-level acquisitions, for release_lock and release_all_locks */
typedef struct SessionLock
{
	uint64		key;
	int			count;
} SessionLock;

static HTAB *session_locks = NULL;

/* The witness of this session's session-level named locks (see the top). */
static void
witness_tag(LOCKTAG *tag)
{
	fs_locktag(tag, FS_LOCK_NAMED_WITNESS, MyProcPid, 0);
}

/*
 * Forget the counts if pg_advisory_unlock_all() or DISCARD ALL released
 * the locks they count: the witness went with them.
 */
static void
forget_if_released(void)
{
	LOCKTAG		tag;

	if (session_locks == NULL)
		return;
	witness_tag(&tag);
	if (!fs_lock_held_by_me(&tag, ExclusiveLock))
	{
		hash_destroy(session_locks);
		session_locks = NULL;
	}
}

/* Before a session-level acquisition is counted: the witness is held. */
static void
hold_witness(void)
{
	LOCKTAG		tag;

	forget_if_released();
	witness_tag(&tag);
	if (fs_lock_held_by_me(&tag, ExclusiveLock))
		return;
	/* nobody else ever asks for it: try once */
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		elog(ERROR, "flashsale: could not take the witness of this session's named locks");
}

/* After the last count went: neither counts nor witness are left. */
static void
drop_witness(void)
{
	LOCKTAG		tag;

	if (session_locks != NULL)
	{
		hash_destroy(session_locks);
		session_locks = NULL;
	}
	witness_tag(&tag);
	if (fs_lock_held_by_me(&tag, ExclusiveLock))
		LockRelease(&tag, ExclusiveLock, true);
}

static SessionLock *
session_entry(uint64 key, bool create)
{
	SessionLock *s;
	bool		found;

	if (session_locks == NULL)
	{
		if (!create)
			return NULL;
		session_locks = key_table("flashsale session locks", sizeof(SessionLock));
	}
	s = hash_search(session_locks, &key, create ? HASH_ENTER : HASH_FIND, &found);
	/* a new entry may reuse a removed one's memory: its count is not ours */
	if (s && !found)
		s->count = 0;
	return s;
}

/*
 * The names taken at either level, for flashsale.max_named_locks_per_session.
 * Nothing tells us when one goes (transaction-level ones at the end of their
 * (sub)transaction, any of them by pg_advisory_unlock_all() or DISCARD ALL),
 * so the set is pruned of those this backend no longer holds when it reaches
 * the limit.
 */
static HTAB *taken_names = NULL;

/* Refuse tag's lock when it is a new name and this session holds its limit. */
static void
check_session_limit(const LOCKTAG *tag)
{
	HASH_SEQ_STATUS seq;
	uint64	   *key;
	int			held;

	if (taken_names == NULL || fs_lock_held_by_me(tag, ExclusiveLock))
		return;					/* none taken yet, or taken again: not a new name */
	if (hash_get_num_entries(taken_names) < max_named_locks_per_session)
		return;
	hash_seq_init(&seq, taken_names);
	while ((key = hash_seq_search(&seq)) != NULL)
	{
		LOCKTAG		t;

		named_tag(&t, *key);
		if (!fs_lock_held_by_me(&t, ExclusiveLock))
			hash_search(taken_names, key, HASH_REMOVE, NULL);
	}
	held = (int) hash_get_num_entries(taken_names);
	if (held >= max_named_locks_per_session)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg_plural("this session already holds %d named lock",
							   "this session already holds %d named locks", held, held),
				 errdetail("A session may hold at most %d (flashsale.max_named_locks_per_session).",
						   max_named_locks_per_session),
				 errhint("Release one first, or ask a superuser to raise "
						 "flashsale.max_named_locks_per_session.")));
}

static void
note_taken(uint64 key)
{
	if (taken_names == NULL)
		taken_names = key_table("flashsale named locks taken", sizeof(uint64));
	(void) hash_search(taken_names, &key, HASH_ENTER, NULL);
}

/* ---- acquiring ---- */

/*
 * Wait up to timeout_ms for the lock: false when the time passed.  The wait
 * runs in a subtransaction so that the lock manager's timeout error can be
 * turned into "false" safely.
 */
typedef struct TimedWait
{
	const LOCKTAG *tag;
	bool		session;
	int64		timeout_ms;
} TimedWait;

static void
wait_cb(void *arg)
{
	TimedWait  *w = arg;
	int			saved = LockTimeout;

	LockTimeout = (int) Min(w->timeout_ms, (int64) INT_MAX);
	PG_TRY();
	{
		(void) LockAcquire(w->tag, ExclusiveLock, w->session, false);
	}
	PG_FINALLY();
	{
		LockTimeout = saved;
	}
	PG_END_TRY();
}

static bool
acquire_timed(const LOCKTAG *tag, bool session, int64 timeout_ms)
{
	TimedWait	w = {tag, session, timeout_ms};
	ErrorData  *edata = fs_try_subxact(wait_cb, &w);

	if (edata == NULL)
		return true;
	if (edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED)
		fs_stat_lock(FS_LK_NAMED, FS_LOCK_DEADLOCKS);
	if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		ReThrowError(edata);
	FreeErrorData(edata);
	return false;
}

/* timeout_ms: -1 waits until cancelled, 0 tries once, > 0 waits that long. */
static bool
acquire(FunctionCallInfo fcinfo, bool session)
{
	char	   *name;
	uint64		key;
	int64		timeout_ms;
	LOCKTAG		tag;
	bool		got;

	fs_require_arg(fcinfo, 0, "name");
	fs_require_arg(fcinfo, 1, "timeout_ms");
	key = name_key(PG_GETARG_TEXT_PP(0), &name);
	timeout_ms = PG_GETARG_INT64(1);
	if (timeout_ms < -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout_ms must be -1 (wait until cancelled), 0 (try once) or more")));
	named_tag(&tag, key);
	/* before the lock manager or the registry of names is touched */
	check_session_limit(&tag);
	remember(key, name, false);
	if (session)
	{
		/* witness and count's entry first: nothing can fail once it is taken */
		hold_witness();
		(void) session_entry(key, true);
	}

	/* free: taken at once; else a wait (counted, as its outcome is) */
	got = LockAcquire(&tag, ExclusiveLock, session, true) != LOCKACQUIRE_NOT_AVAIL;
	if (!got && timeout_ms != 0)
	{
		fs_stat_lock(FS_LK_NAMED, FS_LOCK_WAITS);
		if (timeout_ms > 0)
			got = acquire_timed(&tag, session, timeout_ms);
		else
		{
			int			saved = LockTimeout;

			/* until cancelled: lock_timeout does not apply (statement_timeout does) */
			LockTimeout = 0;
			PG_TRY();
			{
				(void) LockAcquire(&tag, ExclusiveLock, session, false);
			}
			PG_CATCH();
			{
				LockTimeout = saved;
				if (geterrcode() == ERRCODE_T_R_DEADLOCK_DETECTED)
					fs_stat_lock(FS_LK_NAMED, FS_LOCK_DEADLOCKS);
				PG_RE_THROW();
			}
			PG_END_TRY();
			LockTimeout = saved;
			got = true;
		}
		if (!got)
			fs_stat_lock(FS_LK_NAMED, FS_LOCK_TIMEOUTS);
	}
	if (got)
		fs_stat_lock(FS_LK_NAMED, FS_LOCK_ACQUIRED);
	if (session)
	{
		SessionLock *s = session_entry(key, false);

		if (got)
			s->count++;
		else if (s->count == 0)
		{
			hash_search(session_locks, &key, HASH_REMOVE, NULL);
			if (hash_get_num_entries(session_locks) == 0)
				drop_witness();
		}
	}
	if (got)
	{
		remember(key, name, true);
		note_taken(key);
	}
	return got;
}

Datum
fs_get_lock(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(acquire(fcinfo, true));
}

Datum
fs_get_xact_lock(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(acquire(fcinfo, false));
}

/* ---- releasing ---- */

static int	holder_of(uint64 key);

/*
 * release_lock(name), as MySQL's RELEASE_LOCK: true when this session held
 * it at session level (one acquisition released), false when it is held by
 * another session (or by this one with get_xact_lock only: released when
 * the transaction ends), NULL when nobody holds it.
 */
Datum
fs_release_lock(PG_FUNCTION_ARGS)
{
	char	   *name;
	uint64		key;
	LOCKTAG		tag;
	SessionLock *s;

	fs_require_arg(fcinfo, 0, "name");
	key = name_key(PG_GETARG_TEXT_PP(0), &name);
	forget_if_released();
	s = session_entry(key, false);
	if (s != NULL && s->count > 0)
	{
		named_tag(&tag, key);
		if (!LockRelease(&tag, ExclusiveLock, true))
			elog(ERROR, "flashsale: lost count of named lock \"%s\"", name);
		if (--s->count == 0)
		{
			hash_search(session_locks, &key, HASH_REMOVE, NULL);
			if (hash_get_num_entries(session_locks) == 0)
				drop_witness();
		}
		PG_RETURN_BOOL(true);
	}
	if (holder_of(key) == 0)
		PG_RETURN_NULL();
	PG_RETURN_BOOL(false);
}

/* release_all_locks(): the number of session-level acquisitions released. */
Datum
fs_release_all_locks(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	SessionLock *s;
	int32		released = 0;

	forget_if_released();
	if (session_locks == NULL)
	{
		drop_witness();
		PG_RETURN_INT32(0);
	}
	hash_seq_init(&seq, session_locks);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		LOCKTAG		tag;

		named_tag(&tag, s->key);
		for (; s->count > 0; s->count--, released++)
			if (!LockRelease(&tag, ExclusiveLock, true))
				elog(ERROR, "flashsale: lost count of a named lock");
	}
	drop_witness();
	PG_RETURN_INT32(released);
}

/* ---- looking ---- */

/* The pid holding the lock of key (this backend's included), or 0. */
static int
holder_of(uint64 key)
{
	LOCKTAG		tag;
	LockData   *data;
	int			pid = 0;

	named_tag(&tag, key);
	if (fs_lock_held_by_me(&tag, ExclusiveLock))
		return MyProcPid;
	data = GetLockStatusData();
	for (int i = 0; i < data->nelements && pid == 0; i++)
	{
		LockInstanceData *l = &data->locks[i];

		if (memcmp(&l->locktag, &tag, sizeof(LOCKTAG)) == 0 && l->holdMask != 0)
			pid = l->pid;
	}
	return pid;
}

Datum
fs_is_free_lock(PG_FUNCTION_ARGS)
{
	char	   *name;

	fs_require_arg(fcinfo, 0, "name");
	PG_RETURN_BOOL(holder_of(name_key(PG_GETARG_TEXT_PP(0), &name)) == 0);
}

Datum
fs_is_used_lock(PG_FUNCTION_ARGS)
{
	char	   *name;
	int			pid;

	fs_require_arg(fcinfo, 0, "name");
	pid = holder_of(name_key(PG_GETARG_TEXT_PP(0), &name));
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(pid);
}

/* One of the lock manager's rows for a named lock: a holder or a waiter. */
typedef struct LockRow
{
	uint64		key;
	int			pid;
	bool		holds;
	TimestampTz wait_start;
} LockRow;

/* By name, then the holder, then waiters in the order they queued. */
static int
lock_row_cmp(const void *a, const void *b)
{
	const LockRow *x = a;
	const LockRow *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->holds != y->holds)
		return x->holds ? -1 : 1;
	if (x->wait_start != y->wait_start)
		return x->wait_start < y->wait_start ? -1 : 1;
	return x->pid - y->pid;
}

/* What the registry says of one named lock. */
typedef struct LockGroup
{
	uint64		key;
	int			first;			/* its first row */
	char	   *name;			/* NULL if not remembered */
	int			holder_pid;
	TimestampTz since;
} LockGroup;

static int
lock_group_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = ((const LockGroup *) b)->key;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * named_locks(): the named advisory locks of this database, held or awaited,
 * one row per lock: name (NULL if not remembered), holder pid, since when,
 * waiting pids in the order they queued, and since when the first waits.
 *
 * O(n log n) time and O(n) memory in the lock manager's rows: they are
 * sorted once, and the registry is read once, each name found by binary
 * search among the locks.
 */
Datum
fs_named_locks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LockData   *data;
	LockRow    *rows;
	LockGroup  *groups;
	Datum	   *waiters;
	int			nrows = 0;
	int			ngroups = 0;

	InitMaterializedSRF(fcinfo, 0);
	data = GetLockStatusData();
	rows = palloc(sizeof(LockRow) * (data->nelements + 1));
	for (int i = 0; i < data->nelements; i++)
	{
		LockInstanceData *l = &data->locks[i];

		if (l->locktag.locktag_type != LOCKTAG_ADVISORY ||
			l->locktag.locktag_field4 != FS_LOCK_NAMED ||
			l->locktag.locktag_field1 != MyDatabaseId)
			continue;
		rows[nrows].key = ((uint64) l->locktag.locktag_field2 << 32) | l->locktag.locktag_field3;
		rows[nrows].pid = l->pid;
		rows[nrows].holds = l->holdMask != 0;
		rows[nrows].wait_start = l->waitStart;
		nrows++;
	}
	qsort(rows, nrows, sizeof(LockRow), lock_row_cmp);

	groups = palloc(sizeof(LockGroup) * (nrows + 1));
	for (int i = 0; i < nrows; i++)
		if (i == 0 || rows[i].key != rows[i - 1].key)
		{
			groups[ngroups].key = rows[i].key;
			groups[ngroups].first = i;
			groups[ngroups].name = NULL;
			groups[ngroups].holder_pid = 0;
			groups[ngroups].since = 0;
			ngroups++;
		}

	if (names && ngroups > 0)
	{
		LWLockAcquire(names->lock, LW_SHARED);
		for (int k = 0; k < names->size; k++)
		{
			FsLockName *e = &names->entries[k];
			LockGroup  *g;

			if (e->name[0] == '\0')
				continue;
			g = bsearch(&e->key, groups, ngroups, sizeof(LockGroup), lock_group_cmp);
			if (g == NULL)
				continue;
			g->name = pstrdup(e->name);
			g->holder_pid = e->holder_pid;
			g->since = e->since;
		}
		LWLockRelease(names->lock);
	}

	waiters = palloc(sizeof(Datum) * (nrows + 1));
	for (int gi = 0; gi < ngroups; gi++)
	{
		LockGroup  *g = &groups[gi];
		int			end = gi + 1 < ngroups ? groups[gi + 1].first : nrows;
		int			w = g->first;
		int			holder = 0;
		int			nwait = 0;
		Datum		values[5];
		bool		nulls[5] = {0};
		ArrayType  *arr;

		if (rows[w].holds)
			holder = rows[w++].pid;
		for (; w < end; w++)
			if (!rows[w].holds)
				waiters[nwait++] = Int32GetDatum(rows[w].pid);

		values[0] = g->name ? CStringGetTextDatum(g->name) : (Datum) 0;
		nulls[0] = g->name == NULL;
		values[1] = Int32GetDatum(holder);
		nulls[1] = holder == 0;
		/* since when the registry says the holder took it */
		values[2] = TimestampTzGetDatum(g->since);
		nulls[2] = holder == 0 || g->holder_pid != holder || g->since == 0;
		arr = construct_array(waiters, nwait, INT4OID, 4, true, TYPALIGN_INT);
		values[3] = PointerGetDatum(arr);
		values[4] = TimestampTzGetDatum(nwait > 0 ? rows[end - nwait].wait_start : 0);
		nulls[4] = nwait == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		pfree(arr);
		if (!nulls[0])
			pfree(DatumGetPointer(values[0]));
	}
	return (Datum) 0;
}
