/*
 * coupon.c: capped coupon issuance under striped advisory locks.
 *
 * A coupon's quantity is split into stripes (flashsale.coupon_stripe), each
 * guarded by its own advisory lock held to the end of the issuing
 * transaction.  An issuer
 *   1. takes the (coupon, member) lock, so two requests of one member never
 *      both pass the limit check;
 *   2. reads the coupon and the member's units in one query;
 *   3. takes the first stripe lock it can get without waiting, starting at a
 *      stripe chosen by its backend and skipping stripes it knows are empty,
 *      and only waits (FIFO, bounded by flashsale.lock_timeout) when every
 *      stripe with units is busy;
 *   4. moves one unit of that stripe to the member; the stripe's
 *      "issued < quantity" is re-checked under its lock, so the total cap
 *      is exact.
 * A stripe found empty is released and the next one tried; no open stripe
 * left means sold out.  Every outcome but "issued" releases the locks it
 * took and changes nothing.
 */
#include "flashsale.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/primnodes.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_create_coupon);
PG_FUNCTION_INFO_V1(fs_issue_coupon);
PG_FUNCTION_INFO_V1(fs_try_issue_coupon);
PG_FUNCTION_INFO_V1(fs_cancel_coupon);
PG_FUNCTION_INFO_V1(fs_coupon_guard);

/* (every name qualified: these run as the extension's owner, see spi.c) */
static FsQuery q_create = {
	"WITH c AS (INSERT INTO flashsale.coupon"
	"             (name, total_quantity, per_member_limit, starts_at, ends_at, stripes)"
	"           VALUES ($1, $2, $3, $4, $5, $6) RETURNING coupon_id),"
	"     s AS (INSERT INTO flashsale.coupon_stripe (coupon_id, stripe, quantity)"
	"           SELECT c.coupon_id, g,"
	"                  ($2 OPERATOR(pg_catalog./) $6) OPERATOR(pg_catalog.+)"
	"                  CASE WHEN g OPERATOR(pg_catalog.<) ($2 OPERATOR(pg_catalog.%) $6)"
	"                       THEN 1 ELSE 0 END"
	"           FROM c, pg_catalog.generate_series(0, $6 OPERATOR(pg_catalog.-) 1) g)"
	" SELECT coupon_id FROM c",
	6, {TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
};

static FsQuery q_cancel_find = {
	"SELECT coupon_id, member_id, stripe FROM flashsale.member_coupon"
	" WHERE member_coupon_id OPERATOR(pg_catalog.=) $1",
	1, {INT8OID}
};

static FsQuery q_cancel = {
	"WITH d AS (DELETE FROM flashsale.member_coupon"
	"           WHERE member_coupon_id OPERATOR(pg_catalog.=) $1 RETURNING coupon_id, stripe),"
	"     u AS (UPDATE flashsale.coupon_stripe s SET issued = s.issued OPERATOR(pg_catalog.-) 1"
	"           FROM d WHERE s.coupon_id OPERATOR(pg_catalog.=) d.coupon_id"
	"                    AND s.stripe OPERATOR(pg_catalog.=) d.stripe RETURNING 1)"
	" SELECT pg_catalog.count(*) FROM d",
	1, {INT8OID}
};

static void
lock_member(LOCKTAG *tag, int64 coupon_id, int64 member_id)
{
	fs_locktag(tag, FS_LOCK_COUPON_MEMBER, coupon_id, member_id);
	if (!fs_lock_try(tag))
		fs_lock_wait_coupon(tag, ExclusiveLock, psprintf("member %lld of coupon %lld",
														 (long long) member_id, (long long) coupon_id),
							coupon_id);
}

static void
lock_stripe_wait(LOCKTAG *tag, int64 coupon_id, int32 stripe)
{
	fs_locktag(tag, FS_LOCK_COUPON_STRIPE, coupon_id, stripe);
	fs_lock_wait_coupon(tag, ExclusiveLock, psprintf("stripe %d of coupon %lld", stripe, (long long) coupon_id),
						coupon_id);
}

/*
 * The coupon's guard, held shared by every issuer to the end of its
 * transaction: a DELETE of the coupon row, or an UPDATE of its key columns,
 * takes it exclusively (trigger coupon_guard), so the row that an issued
 * unit references stays as the issuer read it.  It stands in for the
 * foreign-key check's share lock on the hot coupon row (see table.c).
 */
static void
lock_guard(LOCKTAG *tag, int64 coupon_id)
{
	fs_locktag(tag, FS_LOCK_COUPON_GUARD, coupon_id, 0);
	if (!fs_lock_try_mode(tag, ShareLock))
		fs_lock_wait_coupon(tag, ShareLock, psprintf("coupon %lld", (long long) coupon_id), coupon_id);
}

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a,
				y = *(const int32 *) b;

	return (x > y) - (x < y);
}

/* Smallest seq in 1..limit the member does not hold (seqs sorted); 0 if none. */
static int32
free_seq(const int32 *seqs, int nseqs, int32 limit)
{
	int32		want = 1;

	for (int i = 0; i < nseqs && want <= limit; i++)
	{
		if (seqs[i] == want)
			want++;
		else if (seqs[i] > want)
			break;
	}
	return want <= limit ? want : 0;
}

/*
 * Per-backend memory of the stripes found empty, so that issuers of a coupon
 * that is nearly sold out do not probe every empty stripe on every call.  It
 * is only a hint: a stripe is taken from only after its lock is held and its
 * count re-checked, and before "sold out" is reported the hint is refreshed
 * from the table (a cancel elsewhere may have refilled a stripe).
 */
#define FS_MAX_STRIPES 4096

typedef struct DryStripes
{
	int64		coupon_id;		/* hash key */
	int32		nstripes;
	uint64		bits[FS_MAX_STRIPES / 64];
	int32		last_stripe;	/* the stripe this backend took from last */
	ItemPointerData last_tid;	/* where that update put the stripe's row */
} DryStripes;

static HTAB *dry_cache = NULL;

static DryStripes *
dry_stripes(int64 coupon_id, int32 nstripes)
{
	DryStripes *entry;
	bool		found;

	if (dry_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(DryStripes);
		dry_cache = hash_create("flashsale dry stripes", 16, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(dry_cache, &coupon_id, HASH_ENTER, &found);
	if (!found || entry->nstripes != nstripes)
	{
		entry->nstripes = Min(nstripes, FS_MAX_STRIPES);
		memset(entry->bits, 0, sizeof(entry->bits));
		entry->last_stripe = -1;
	}
	return entry;
}

static inline bool
is_dry(const DryStripes *dry, int32 stripe)
{
	return (dry->bits[stripe / 64] >> (stripe % 64)) & 1;
}

static inline void
set_dry(DryStripes *dry, int32 stripe, bool value)
{
	if (value)
		dry->bits[stripe / 64] |= UINT64CONST(1) << (stripe % 64);
	else
		dry->bits[stripe / 64] &= ~(UINT64CONST(1) << (stripe % 64));
}

/* One issuance: the tables it works on and what it has read. */
typedef struct Issue
{
	int64		coupon_id;
	int64		member_id;
	int32		limit;
	int32		seq;
	bool		guarded;		/* the coupon table has its coupon_guard trigger */
	Relation	stripes;		/* flashsale.coupon_stripe */
	Oid			stripes_pkey;
	FsWriter	stripe_writer;
	Datum	   *values;			/* a stripe row */
	bool	   *nulls;
} Issue;

/* The stripe's key columns as scan keys; n = 1 for all stripes of the coupon. */
static void
stripe_keys(Issue *is, ScanKey keys, int32 stripe)
{
	fs_table_key(&keys[0], is->stripes, "coupon_id", Int64GetDatum(is->coupon_id));
	fs_table_key(&keys[1], is->stripes, "stripe", Int32GetDatum(stripe));
}

static void
refresh_dry(Issue *is, DryStripes *dry)
{
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tuple;
	TupleDesc	desc = RelationGetDescr(is->stripes);
	AttrNumber	a_stripe = fs_table_attnum(is->stripes, "stripe"),
				a_quantity = fs_table_attnum(is->stripes, "quantity"),
				a_issued = fs_table_attnum(is->stripes, "issued");

	memset(dry->bits, 0xFF, sizeof(dry->bits));
	stripe_keys(is, keys, 0);
	scan = systable_beginscan(is->stripes, is->stripes_pkey, true, snapshot, 1, keys);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		int32		stripe = DatumGetInt32(heap_getattr(tuple, a_stripe, desc, &isnull));
		int64		quantity = DatumGetInt64(heap_getattr(tuple, a_quantity, desc, &isnull));
		int64		issued = DatumGetInt64(heap_getattr(tuple, a_issued, desc, &isnull));

		if (issued < quantity && stripe >= 0 && stripe < dry->nstripes)
			set_dry(dry, stripe, false);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
}

/*
 * Under the stripe's lock: move one of its units to the member, if it has
 * one.  The row is found where this backend's last update of the stripe put
 * it when no one has moved it since (usual: issuers keep to their own
 * stripe), else through the primary key; again through the key if a direct
 * UPDATE changed it meanwhile.
 */
static bool
take_from_stripe(Issue *is, DryStripes *dry, int32 stripe)
{
	ScanKeyData keys[2];
	AttrNumber	a_stripe = fs_table_attnum(is->stripes, "stripe"),
				a_coupon = fs_table_attnum(is->stripes, "coupon_id"),
				a_quantity = fs_table_attnum(is->stripes, "quantity"),
				a_issued = fs_table_attnum(is->stripes, "issued");

	for (;;)
	{
		ItemPointerData tid = dry->last_tid;
		int64		issued;

		if (dry->last_stripe != stripe ||
			!fs_table_fetch(is->stripes, &tid, is->values, is->nulls) ||
			DatumGetInt64(is->values[a_coupon - 1]) != is->coupon_id ||
			DatumGetInt32(is->values[a_stripe - 1]) != stripe)
		{
			stripe_keys(is, keys, stripe);
			if (!fs_table_get(is->stripes, is->stripes_pkey, keys, 2,
							  is->values, is->nulls, &tid))
				return false;
		}
		issued = DatumGetInt64(is->values[a_issued - 1]);
		if (issued >= DatumGetInt64(is->values[a_quantity - 1]))
			return false;
		is->values[a_issued - 1] = Int64GetDatum(issued + 1);
		dry->last_stripe = -1;
		if (fs_writer_update(&is->stripe_writer, &tid, is->values, is->nulls))
		{
			dry->last_stripe = stripe;
			dry->last_tid = tid;
			return true;
		}
	}
}

/*
 * Take one unit from the first stripe of cand[] that has one: stripes free
 * right now first, waiting only when all are busy.  Returns the stripe, or
 * -1 when every candidate proved empty under its lock.
 */
static int32
take_from(Issue *is, DryStripes *dry, int32 *cand, int n)
{
	while (n > 0)
	{
		LOCKTAG		tag;
		int			pick = -1;

		for (int i = 0; i < n && pick < 0; i++)
		{
			fs_locktag(&tag, FS_LOCK_COUPON_STRIPE, is->coupon_id, cand[i]);
			if (fs_lock_try(&tag))
				pick = i;
		}
		if (pick < 0)
		{
			pick = 0;
			lock_stripe_wait(&tag, is->coupon_id, cand[0]);
		}

		if (take_from_stripe(is, dry, cand[pick]))
			return cand[pick];

		/* the stripe is empty: let it go, try the others */
		set_dry(dry, cand[pick], true);
		fs_lock_release(&tag);
		n--;
		memmove(&cand[pick], &cand[pick + 1], sizeof(int32) * (n - pick));
	}
	return -1;
}

/* Steps 3 and 4 for a coupon of nstripes stripes: the stripe, or -1 if sold out. */
static int32
take_unit(Issue *is, int32 nstripes)
{
	DryStripes *dry = dry_stripes(is->coupon_id, nstripes);
	int32	   *cand = palloc(sizeof(int32) * dry->nstripes);
	int			start = FS_MY_PROC_NUMBER % dry->nstripes;
	int32		stripe = -1;
	int			natts;

	is->stripes = fs_table_open("coupon_stripe", RowExclusiveLock);
	is->stripes_pkey = fs_table_pkey(is->stripes);
	natts = RelationGetDescr(is->stripes)->natts;
	is->values = palloc(sizeof(Datum) * natts);
	is->nulls = palloc(sizeof(bool) * natts);
	/* a stripe's update never changes its reference to the coupon */
	fs_writer_begin(&is->stripe_writer, is->stripes, true);

	for (bool fresh = false; stripe < 0; fresh = true)
	{
		int			n = 0;

		if (fresh)
			refresh_dry(is, dry);

		/* start at this backend's own stripe, so issuers spread out */
		for (int i = 0; i < dry->nstripes; i++)
		{
			int32		s = (start + i) % dry->nstripes;

			if (!is_dry(dry, s))
				cand[n++] = s;
		}
		if (n > 0)
			stripe = take_from(is, dry, cand, n);
		if (fresh)
			break;
	}

	fs_writer_end(&is->stripe_writer);
	table_close(is->stripes, NoLock);
	return stripe;
}

/*
 * The seqs the member holds, read under the member lock through the unique
 * index.  A row some other transaction is inserting or deleting right now
 * (a direct INSERT that bypassed the functions) is waited for, so that the
 * unique index does not turn it into an error later.
 */
static int
member_seqs(Relation units, Relation index, int64 coupon_id, int64 member_id, int32 **seqs)
{
	AttrNumber	a_seq = fs_table_attnum(units, "seq");
	ScanKeyData keys[2];
	int			n,
				size = 4;

	*seqs = palloc(sizeof(int32) * size);
	fs_table_key(&keys[0], units, "coupon_id", Int64GetDatum(coupon_id));
	fs_table_key(&keys[1], units, "member_id", Int64GetDatum(member_id));
	for (;;)
	{
		SnapshotData dirty;
		SysScanDesc scan;
		HeapTuple	tuple;
		TransactionId xwait = InvalidTransactionId;

		InitDirtySnapshot(dirty);
		n = 0;
		scan = systable_beginscan(units, RelationGetRelid(index), true, &dirty, 2, keys);
		while (HeapTupleIsValid(tuple = systable_getnext(scan)))
		{
			bool		isnull;

			xwait = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;
			if (TransactionIdIsValid(xwait))
				break;
			if (n == size)
				*seqs = repalloc(*seqs, sizeof(int32) * (size *= 2));
			(*seqs)[n++] = DatumGetInt32(heap_getattr(tuple, a_seq,
													  RelationGetDescr(units), &isnull));
		}
		systable_endscan(scan);
		if (!TransactionIdIsValid(xwait))
			break;
		XactLockTableWait(xwait, NULL, NULL, XLTW_None);
	}
	qsort(*seqs, n, sizeof(int32), cmp_int32);
	return n;
}

/* Give the member the unit: one member_coupon row. */
static int64
give_unit(Issue *is, FsWriter *w, int32 stripe)
{
	TupleDesc	desc = RelationGetDescr(w->rel);
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	int64		id = nextval_internal(fs_table_serial(w->rel, "member_coupon_id"), true);

	memset(nulls, true, sizeof(bool) * desc->natts);
#define SET(col, datum) \
	do { AttrNumber a_ = fs_table_attnum(w->rel, col); \
		 values[a_ - 1] = (datum); nulls[a_ - 1] = false; } while (0)
	SET("member_coupon_id", Int64GetDatum(id));
	SET("coupon_id", Int64GetDatum(is->coupon_id));
	SET("member_id", Int64GetDatum(is->member_id));
	SET("seq", Int32GetDatum(is->seq));
	SET("issued_at", TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	SET("per_member_limit", Int32GetDatum(is->limit));
	SET("stripe", Int32GetDatum(stripe));
#undef SET
	fs_writer_insert(w, values, nulls);
	return id;
}

/* The coupon's row: whether it exists and is active now, its limit and stripes. */
static FsStatus
read_coupon(Issue *is, int32 *nstripes)
{
	Relation	coupons = fs_table_open("coupon", AccessShareLock);
	int			natts = RelationGetDescr(coupons)->natts;
	Datum	   *values = palloc(sizeof(Datum) * natts);
	bool	   *nulls = palloc(sizeof(bool) * natts);
	ScanKeyData key;
	FsStatus	status = FS_ISSUED;

	fs_table_key(&key, coupons, "coupon_id", Int64GetDatum(is->coupon_id));
	if (!fs_table_get(coupons, fs_table_pkey(coupons), &key, 1, values, nulls, NULL))
		status = FS_NOT_FOUND;
	else
	{
		TimestampTz now = GetCurrentStatementStartTimestamp();
		AttrNumber	a_starts = fs_table_attnum(coupons, "starts_at"),
					a_ends = fs_table_attnum(coupons, "ends_at");

		if (DatumGetTimestampTz(values[a_starts - 1]) > now ||
			(!nulls[a_ends - 1] && DatumGetTimestampTz(values[a_ends - 1]) <= now))
			status = FS_NOT_ACTIVE;
		is->limit = DatumGetInt32(values[fs_table_attnum(coupons, "per_member_limit") - 1]);
		*nstripes = DatumGetInt32(values[fs_table_attnum(coupons, "stripes") - 1]);
	}
	is->guarded = fs_table_has_trigger(coupons, "coupon_guard");
	table_close(coupons, NoLock);
	return status;
}

static FsStatus
issue_core(int64 member_id, int64 coupon_id, int64 *member_coupon_id)
{
	static const char *const member_cols[] = {"coupon_id", "member_id"};
	LOCKTAG		member_tag,
				guard_tag;
	Issue		is = {.coupon_id = coupon_id,.member_id = member_id};
	int32		nstripes = 0;
	FsStatus	status;
	FsUser		caller;

	PreventCommandIfReadOnly("flashsale.issue_coupon()");
	lock_member(&member_tag, coupon_id, member_id);
	lock_guard(&guard_tag, coupon_id);

	/* the tables are read and written as their owner (owner.c) */
	fs_become_owner(&caller);
	status = read_coupon(&is, &nstripes);
	if (status == FS_ISSUED)
	{
		Relation	units = fs_table_open("member_coupon", RowExclusiveLock);
		FsWriter	w;
		int32	   *seqs;
		int			nseqs;

		fs_writer_begin(&w, units, is.guarded);
		nseqs = member_seqs(units, fs_writer_index(&w, member_cols, 2),
							coupon_id, member_id, &seqs);
		is.seq = free_seq(seqs, nseqs, is.limit);
		if (is.seq == 0)
			status = FS_ALREADY_ISSUED;
		else
		{
			int32		stripe = take_unit(&is, nstripes);

			if (stripe < 0)
				status = FS_SOLD_OUT;
			else
				*member_coupon_id = give_unit(&is, &w, stripe);
		}
		fs_writer_end(&w);
		table_close(units, NoLock);
	}
	fs_restore_user(&caller);

	/* the answer, counted (an issue rolled back later was still answered "issued") */
	if (status == FS_ISSUED)
	{
		fs_stat_entry_add2(FS_STAT_COUPON, coupon_id, FS_SC_ISSUED, 1,
						   FS_SC_LAST_ISSUE, GetCurrentStatementStartTimestamp(), true);
	}
	else if (status != FS_NOT_FOUND)
		fs_stat_entry_add(FS_STAT_COUPON, coupon_id,
						  status == FS_ALREADY_ISSUED ? FS_SC_ALREADY_ISSUED :
						  status == FS_SOLD_OUT ? FS_SC_SOLD_OUT : FS_SC_NOT_ACTIVE, 1, true);

	if (status != FS_ISSUED)
	{
		fs_lock_release_mode(&guard_tag, ShareLock);
		fs_lock_release(&member_tag);
	}
	return status;
}

Datum
fs_coupon_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	old;
	bool		isnull;
	LOCKTAG		tag;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("coupon_guard must be a BEFORE ROW trigger")));
	old = trigdata->tg_trigtuple;
	fs_locktag(&tag, FS_LOCK_COUPON_GUARD,
			   DatumGetInt64(heap_getattr(old, fs_table_attnum(trigdata->tg_relation, "coupon_id"),
										  RelationGetDescr(trigdata->tg_relation), &isnull)), 0);
	/* waits for the coupon's issuers in flight; later ones queue behind */
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	PG_RETURN_POINTER(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
					  trigdata->tg_newtuple : old);
}

Datum
fs_issue_coupon(PG_FUNCTION_ARGS)
{
	int64		member_id,
				coupon_id,
				member_coupon_id = 0;
	FsStatus	status;

	fs_require_arg(fcinfo, 0, "member_id");
	fs_require_arg(fcinfo, 1, "coupon_id");
	member_id = PG_GETARG_INT64(0);
	coupon_id = PG_GETARG_INT64(1);

	status = issue_core(member_id, coupon_id, &member_coupon_id);
	if (status != FS_ISSUED)
		fs_raise_status(status, member_id, coupon_id);
	PG_RETURN_INT64(member_coupon_id);
}

Datum
fs_try_issue_coupon(PG_FUNCTION_ARGS)
{
	int64		member_coupon_id = 0;
	FsStatus	status;

	fs_require_arg(fcinfo, 0, "member_id");
	fs_require_arg(fcinfo, 1, "coupon_id");
	status = issue_core(PG_GETARG_INT64(0), PG_GETARG_INT64(1), &member_coupon_id);
	PG_RETURN_TEXT_P(cstring_to_text(fs_status_name(status)));
}

Datum
fs_cancel_coupon(PG_FUNCTION_ARGS)
{
	int64		member_coupon_id;
	int64		coupon_id,
				member_id;
	bool		has_stripe;
	int32		stripe = 0;
	LOCKTAG		member_tag,
				stripe_tag;
	Datum		value;
	bool		isnull;
	int64		cancelled;

	fs_require_arg(fcinfo, 0, "member_coupon_id");
	member_coupon_id = PG_GETARG_INT64(0);
	value = Int64GetDatum(member_coupon_id);
	PreventCommandIfReadOnly("flashsale.cancel_coupon()");

	fs_spi_connect();
	if (fs_spi_run(&q_cancel_find, &value, NULL, true) == 0)
	{
		fs_spi_finish();
		PG_RETURN_BOOL(false);
	}
	coupon_id = DatumGetInt64(fs_spi_get(0, 1, &isnull));
	member_id = DatumGetInt64(fs_spi_get(0, 2, &isnull));
	stripe = DatumGetInt32(fs_spi_get(0, 3, &isnull));
	has_stripe = !isnull;

	/* same order as issuers: member, then stripe */
	lock_member(&member_tag, coupon_id, member_id);
	if (has_stripe)
		lock_stripe_wait(&stripe_tag, coupon_id, stripe);

	fs_spi_run(&q_cancel, &value, NULL, false);
	cancelled = DatumGetInt64(fs_spi_get(0, 1, &isnull));
	fs_spi_finish();

	if (cancelled == 0)
	{
		/* cancelled by someone else meanwhile */
		if (has_stripe)
			fs_lock_release(&stripe_tag);
		fs_lock_release(&member_tag);
	}
	PG_RETURN_BOOL(cancelled > 0);
}

Datum
fs_create_coupon(PG_FUNCTION_ARGS)
{
	int64		total;
	int32		limit;
	int32		nstripes;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		coupon_id;

	fs_require_arg(fcinfo, 0, "name");
	fs_require_arg(fcinfo, 1, "total_quantity");
	fs_require_arg(fcinfo, 2, "per_member_limit");
	fs_require_arg(fcinfo, 3, "starts_at");
	total = PG_GETARG_INT64(1);
	limit = PG_GETARG_INT32(2);

	if (total < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("total_quantity must be at least 1"),
				 errdetail("total_quantity was %lld.", (long long) total)));
	if (limit < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("per_member_limit must be at least 1"),
				 errdetail("per_member_limit was %d.", limit)));
	if (!PG_ARGISNULL(4) &&
		timestamp_cmp_internal(PG_GETARG_TIMESTAMPTZ(4), PG_GETARG_TIMESTAMPTZ(3)) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ends_at must be later than starts_at")));

	nstripes = (int32) Min((int64) fs_coupon_stripes, total);
	PreventCommandIfReadOnly("flashsale.create_coupon()");

	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int64GetDatum(total);
	values[2] = Int32GetDatum(limit);
	values[3] = PG_GETARG_DATUM(3);
	values[4] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	values[5] = Int32GetDatum(nstripes);
	if (PG_ARGISNULL(4))
		nulls[4] = 'n';

	fs_spi_connect();
	fs_spi_run(&q_create, values, nulls, false);
	coupon_id = DatumGetInt64(fs_spi_get(0, 1, &isnull));
	fs_spi_finish();

	PG_RETURN_INT64(coupon_id);
}
