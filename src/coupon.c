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

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_create_coupon);
PG_FUNCTION_INFO_V1(fs_issue_coupon);
PG_FUNCTION_INFO_V1(fs_try_issue_coupon);
PG_FUNCTION_INFO_V1(fs_cancel_coupon);

static FsQuery q_create = {
	"WITH c AS (INSERT INTO flashsale.coupon"
	"             (name, total_quantity, per_member_limit, starts_at, ends_at, stripes)"
	"           VALUES ($1, $2, $3, $4, $5, $6) RETURNING coupon_id),"
	"     s AS (INSERT INTO flashsale.coupon_stripe (coupon_id, stripe, quantity)"
	"           SELECT c.coupon_id, g, $2 / $6 + CASE WHEN g < $2 % $6 THEN 1 ELSE 0 END"
	"           FROM c, generate_series(0, $6 - 1) g)"
	" SELECT coupon_id FROM c",
	6, {TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
};

/* Read under the member lock: the coupon and the member's units, one row each. */
static FsQuery q_context = {
	"SELECT c.per_member_limit,"
	"       c.starts_at <= statement_timestamp()"
	"         AND (c.ends_at IS NULL OR c.ends_at > statement_timestamp()),"
	"       c.stripes, m.seq"
	" FROM flashsale.coupon c"
	" LEFT JOIN flashsale.member_coupon m"
	"   ON m.coupon_id = c.coupon_id AND m.member_id = $2"
	" WHERE c.coupon_id = $1",
	2, {INT8OID, INT8OID}
};

/* The stripes that still have units (only read when the cache says none). */
static FsQuery q_open_stripes = {
	"SELECT stripe FROM flashsale.coupon_stripe"
	" WHERE coupon_id = $1 AND issued < quantity",
	1, {INT8OID}
};

/* Under the stripe lock: take one unit of the stripe, or nothing if it is empty. */
static FsQuery q_take = {
	"UPDATE flashsale.coupon_stripe SET issued = issued + 1"
	" WHERE coupon_id = $1 AND stripe = $2 AND issued < quantity",
	2, {INT8OID, INT4OID}
};

/* ... and give it to the member. */
static FsQuery q_give = {
	"INSERT INTO flashsale.member_coupon"
	" (coupon_id, member_id, seq, per_member_limit, stripe)"
	" VALUES ($1, $2, $3, $4, $5)"
	" ON CONFLICT DO NOTHING RETURNING member_coupon_id",
	5, {INT8OID, INT8OID, INT4OID, INT4OID, INT4OID}
};

static FsQuery q_untake = {
	"UPDATE flashsale.coupon_stripe SET issued = issued - 1"
	" WHERE coupon_id = $1 AND stripe = $2",
	2, {INT8OID, INT4OID}
};

static FsQuery q_cancel_find = {
	"SELECT coupon_id, member_id, stripe FROM flashsale.member_coupon"
	" WHERE member_coupon_id = $1",
	1, {INT8OID}
};

static FsQuery q_cancel = {
	"WITH d AS (DELETE FROM flashsale.member_coupon WHERE member_coupon_id = $1"
	"           RETURNING coupon_id, stripe),"
	"     u AS (UPDATE flashsale.coupon_stripe s SET issued = s.issued - 1 FROM d"
	"           WHERE s.coupon_id = d.coupon_id AND s.stripe = d.stripe RETURNING 1)"
	" SELECT count(*) FROM d",
	1, {INT8OID}
};

static void
lock_member(LOCKTAG *tag, int64 coupon_id, int64 member_id)
{
	fs_locktag(tag, FS_LOCK_COUPON_MEMBER, coupon_id, member_id);
	if (!fs_lock_try(tag))
		fs_lock_wait(tag, psprintf("member %lld of coupon %lld",
								   (long long) member_id, (long long) coupon_id));
}

static void
lock_stripe_wait(LOCKTAG *tag, int64 coupon_id, int32 stripe)
{
	fs_locktag(tag, FS_LOCK_COUPON_STRIPE, coupon_id, stripe);
	fs_lock_wait(tag, psprintf("stripe %d of coupon %lld", stripe, (long long) coupon_id));
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

static void
refresh_dry(DryStripes *dry)
{
	Datum		value = Int64GetDatum(dry->coupon_id);
	uint64		n = fs_spi_run(&q_open_stripes, &value, NULL, true);
	bool		isnull;

	memset(dry->bits, 0xFF, sizeof(dry->bits));
	for (uint64 i = 0; i < n; i++)
	{
		int32		stripe = DatumGetInt32(fs_spi_get(i, 1, &isnull));

		if (stripe >= 0 && stripe < dry->nstripes)
			set_dry(dry, stripe, false);
	}
}

/*
 * Give the member one unit from the first stripe of cand[] that has one:
 * stripes free right now first, waiting only when all are busy.
 * FS_SOLD_OUT means every candidate proved empty under its lock.
 */
static FsStatus
take_from(DryStripes *dry, int64 member_id, int32 seq, int32 limit,
		  int32 *cand, int n, int64 *member_coupon_id)
{
	int64		coupon_id = dry->coupon_id;

	while (n > 0)
	{
		LOCKTAG		tag;
		int			pick = -1;
		Datum		values[2];
		bool		isnull;

		for (int i = 0; i < n && pick < 0; i++)
		{
			fs_locktag(&tag, FS_LOCK_COUPON_STRIPE, coupon_id, cand[i]);
			if (fs_lock_try(&tag))
				pick = i;
		}
		if (pick < 0)
		{
			pick = 0;
			lock_stripe_wait(&tag, coupon_id, cand[0]);
		}

		values[0] = Int64GetDatum(coupon_id);
		values[1] = Int32GetDatum(cand[pick]);
		if (fs_spi_run(&q_take, values, NULL, false) > 0)
		{
			Datum		give[5];

			give[0] = Int64GetDatum(coupon_id);
			give[1] = Int64GetDatum(member_id);
			give[2] = Int32GetDatum(seq);
			give[3] = Int32GetDatum(limit);
			give[4] = Int32GetDatum(cand[pick]);
			if (fs_spi_run(&q_give, give, NULL, false) > 0)
			{
				*member_coupon_id = DatumGetInt64(fs_spi_get(0, 1, &isnull));
				return FS_ISSUED;
			}

			/*
			 * The member's seq was taken by an INSERT that bypassed the
			 * functions (and so the member lock): give the unit back.
			 */
			fs_spi_run(&q_untake, values, NULL, false);
			fs_lock_release(&tag);
			return FS_ALREADY_ISSUED;
		}

		/* the stripe is empty: let it go, try the others */
		set_dry(dry, cand[pick], true);
		fs_lock_release(&tag);
		n--;
		memmove(&cand[pick], &cand[pick + 1], sizeof(int32) * (n - pick));
	}
	return FS_SOLD_OUT;
}

/* Steps 3 and 4 for a coupon of nstripes stripes. */
static FsStatus
take_unit(int64 coupon_id, int32 nstripes, int64 member_id, int32 seq, int32 limit,
		  int64 *member_coupon_id)
{
	DryStripes *dry = dry_stripes(coupon_id, nstripes);
	int32	   *cand = palloc(sizeof(int32) * dry->nstripes);
	int			start = MyProc->pgprocno % dry->nstripes;

	for (bool fresh = false;; fresh = true)
	{
		int			n = 0;

		if (fresh)
			refresh_dry(dry);

		/* start at this backend's own stripe, so issuers spread out */
		for (int i = 0; i < dry->nstripes; i++)
		{
			int32		stripe = (start + i) % dry->nstripes;

			if (!is_dry(dry, stripe))
				cand[n++] = stripe;
		}
		if (n > 0)
		{
			FsStatus	status = take_from(dry, member_id, seq, limit, cand, n,
										   member_coupon_id);

			if (status != FS_SOLD_OUT)
				return status;
		}
		if (fresh)
			return FS_SOLD_OUT;
	}
}

static FsStatus
issue_core(int64 member_id, int64 coupon_id, int64 *member_coupon_id)
{
	LOCKTAG		member_tag;
	Datum		values[2];
	bool		isnull;
	FsStatus	status;

	lock_member(&member_tag, coupon_id, member_id);

	fs_spi_connect();
	values[0] = Int64GetDatum(coupon_id);
	values[1] = Int64GetDatum(member_id);
	if (fs_spi_run(&q_context, values, NULL, true) == 0)
		status = FS_NOT_FOUND;
	else if (!DatumGetBool(fs_spi_get(0, 2, &isnull)))
		status = FS_NOT_ACTIVE;
	else
	{
		int32		limit = DatumGetInt32(fs_spi_get(0, 1, &isnull));
		int32		nstripes = DatumGetInt32(fs_spi_get(0, 3, &isnull));
		uint64		nrows = SPI_processed;
		int32	   *seqs = palloc(sizeof(int32) * nrows);
		int			nseqs = 0;
		int32		seq;

		for (uint64 i = 0; i < nrows; i++)
		{
			Datum		d = fs_spi_get(i, 4, &isnull);

			if (!isnull)
				seqs[nseqs++] = DatumGetInt32(d);
		}
		qsort(seqs, nseqs, sizeof(int32), cmp_int32);
		seq = free_seq(seqs, nseqs, limit);

		if (seq == 0)
			status = FS_ALREADY_ISSUED;
		else
			status = take_unit(coupon_id, nstripes, member_id, seq, limit,
							   member_coupon_id);
	}
	fs_spi_finish();

	if (status != FS_ISSUED)
		fs_lock_release(&member_tag);
	return status;
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
