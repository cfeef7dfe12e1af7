/*
 * sync.c: the sync pass, flashsale.sync_stock().  The background worker runs
 * it every flashsale.sync_interval; anyone can call it.  One code path.
 *
 * For every product:
 *   1. reload it if Redis lost it;
 *   2. settle the reservations of transactions that have ended: a commit
 *      keeps what its ledger rows recorded, the rest goes back; an abort
 *      (or a crash) gives everything back.  Reservations of transactions
 *      still in progress and of other instances are left alone;
 *   3. check drift: Redis' units left plus units in flight must equal the
 *      database truth (quantity minus ledger); on a mismatch the database
 *      wins, and the fix is logged and counted;
 *   4. fold the committed ledger rows into flashsale.stock.quantity, so the
 *      table shows the truth and the ledger does not grow without bound
 *      (the truth, quantity minus ledger, is unchanged by this).
 * The pass never waits for a sale.  Steps 1 and 3 need the product's lock
 * held exclusively (no reservation of this instance in flight), and the
 * pass only tries it: queued behind one long transaction holding a unit,
 * an exclusive request would stop every buyer behind it.  When the lock is
 * busy the product is counted "busy" and only settled and folded, which
 * need no lock (an ended transaction's fate and ledger rows are final, the
 * settle script never gives back more than the entry holds, and a fold
 * leaves the truth unchanged); a lost product is reloaded by its next
 * buyer anyway, and drift is checked at a quieter pass.
 * Each product runs in a subtransaction: a database error in one is counted
 * and the pass goes on.  A Redis error ends the pass (class 08).
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/xid8.h"

PG_FUNCTION_INFO_V1(fs_sync_stock);

static FsQuery q_products = {
	"SELECT product_id FROM flashsale.stock ORDER BY product_id", 0
};

/* (every name qualified: these run as the extension's owner, see spi.c) */
static FsQuery q_kept = {
	"SELECT coalesce(pg_catalog.sum(quantity), 0)::pg_catalog.int8 FROM flashsale.stock_ledger"
	" WHERE product_id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $2"
	"   AND quantity OPERATOR(pg_catalog.>) 0",
	2, {INT8OID, XID8OID}
};

static FsQuery q_fold = {
	"WITH d AS (DELETE FROM flashsale.stock_ledger WHERE product_id OPERATOR(pg_catalog.=) $1"
	"           RETURNING quantity)"
	" UPDATE flashsale.stock"
	"    SET quantity = quantity OPERATOR(pg_catalog.-)"
	"                   (SELECT coalesce(pg_catalog.sum(quantity), 0) FROM d),"
	"        updated_at = pg_catalog.now()"
	"  WHERE product_id OPERATOR(pg_catalog.=) $1"
	" RETURNING (SELECT pg_catalog.count(*) FROM d)",
	1, {INT8OID}
};

typedef enum TxnFate
{
	TXN_RUNNING,				/* or another instance's: leave alone */
	TXN_COMMITTED,
	TXN_ABORTED,				/* aborted or crashed */
	TXN_UNKNOWN					/* too old to tell: drop the entry, drift decides */
} TxnFate;

static TxnFate
txn_fate(const char *txn, FullTransactionId *fxid_out)
{
	char		mine[32];
	size_t		len;
	FullTransactionId fxid,
				next;
	TransactionId xid;
	TxnFate		fate;
	const char *own = fs_stock_txn_if_any();

	snprintf(mine, sizeof(mine), "%llu:", (unsigned long long) GetSystemIdentifier());
	len = strlen(mine);
	if (strncmp(txn, mine, len) != 0 || (own && strcmp(txn, own) == 0))
		return TXN_RUNNING;
	fxid = FullTransactionIdFromU64(strtoull(txn + len, NULL, 10));
	*fxid_out = fxid;
	next = ReadNextFullTransactionId();
	if (!FullTransactionIdPrecedes(fxid, next) ||
		U64FromFullTransactionId(next) - U64FromFullTransactionId(fxid) > (UINT64CONST(1) << 31))
		return TXN_UNKNOWN;
	xid = XidFromFullTransactionId(fxid);

	/* as pg_xact_status does: the clog must not be truncated under us */
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	if (TransactionIdPrecedes(xid, FS_TRANSAM_VARIABLES->oldestClogXid))
		fate = TXN_UNKNOWN;
	else if (TransactionIdIsInProgress(xid))
		fate = TXN_RUNNING;
	else if (TransactionIdDidCommit(xid))
		fate = TXN_COMMITTED;
	else
		fate = TXN_ABORTED;
	LWLockRelease(XactTruncationLock);
	return fate;
}

static int64
query_int8(FsQuery *q, Datum *values, bool *found)
{
	bool		isnull;
	Datum		d;

	fs_spi_connect();
	if (fs_spi_run(q, values, NULL, true) == 0)
	{
		fs_spi_finish();
		*found = false;
		return 0;
	}
	d = fs_spi_get(0, 1, &isnull);
	fs_spi_finish();
	*found = true;
	return isnull ? 0 : DatumGetInt64(d);
}

static void
sync_product(int64 product, FsSyncCounts *c)
{
	LOCKTAG		tag;
	Datum		value = Int64GetDatum(product);
	FsReply *r;
	int64		inflight = 0;
	bool		found;
	int64		truth;
	bool		quiet;

	fs_locktag(&tag, FS_LOCK_STOCK, product, 0);
	quiet = fs_lock_try_mode(&tag, ExclusiveLock);
	if (!quiet)
		c->busy++;

	/* 1. reload what Redis lost */
	r = fs_stock_info(product);
	if (r->element[0]->type != REDIS_REPLY_STRING)
	{
		if (quiet)
		{
			fs_stock_reload(product);
			c->reloaded++;
		}
	}
	else
	{
		/* 2. settle reservations of transactions that have ended */
		for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2)
		{
			const char *txn = r->element[1]->element[i]->str;
			int64		units = strtoll(r->element[1]->element[i + 1]->str, NULL, 10);
			FullTransactionId fxid = InvalidFullTransactionId;
			TxnFate		fate = txn_fate(txn, &fxid);
			int64		give = units;
			const char *argv[4];
			FsReply *s;

			if (fate == TXN_RUNNING)
				continue;
			if (fate == TXN_COMMITTED)
			{
				Datum		kv[2] = {value, FullTransactionIdGetDatum(fxid)};

				give = Max(0, units - query_int8(&q_kept, kv, &found));
			}
			else if (fate == TXN_UNKNOWN)
				give = 0;
			argv[0] = fs_stock_key(product);
			argv[1] = fs_reserved_key(argv[0]);
			argv[2] = txn;
			argv[3] = psprintf("%lld", (long long) give);
			s = fs_redis_script(&fs_script_settle, 2, 4, argv, NULL, true);
			c->settled++;
			c->units_returned += s->integer;
			if (s->integer > 0)
				fs_stock_units_back(product);
			fs_redis_free(s);
		}
	}
	fs_redis_free(r);

	/* 3. check drift: left + in flight must be the truth */
	found = quiet && fs_stock_truth(product, &truth);
	r = quiet ? fs_stock_info(product) : NULL;
	if (found && r->element[0]->type == REDIS_REPLY_STRING)
	{
		int64		left = strtoll(r->element[0]->str, NULL, 10);

		for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2)
			inflight += strtoll(r->element[1]->element[i + 1]->str, NULL, 10);
		if (left + inflight != truth && truth - inflight >= 0)
		{
			const char *argv[3];
			FsReply *f;

			argv[0] = fs_stock_key(product);
			argv[1] = r->element[0]->str;
			argv[2] = psprintf("%lld", (long long) (truth - inflight));
			f = fs_redis_script(&fs_script_fix, 1, 3, argv, NULL, true);
			if (f->integer == 1)
			{
				c->drift_fixed++;
				fs_stock_units_back(product);
				ereport(LOG,
						(errmsg("flashsale: product %lld had %lld units left in Redis, the database says %lld; set to %lld",
								(long long) product, (long long) left,
								(long long) (truth - inflight), (long long) (truth - inflight)),
						 errdetail("%lld units are reserved by transactions in flight.",
								   (long long) inflight)));
			}
			fs_redis_free(f);
		}
	}
	fs_redis_free(r);

	/* 4. fold the committed ledger into the table */
	fs_spi_connect();
	if (fs_spi_run(&q_fold, &value, NULL, false) > 0)
		c->ledger_rows_folded += DatumGetInt64(fs_spi_get(0, 1, &found));
	fs_spi_finish();

	if (quiet)
		fs_lock_release_mode(&tag, ExclusiveLock);
	c->products++;
}

typedef struct SyncArg
{
	int64		product;
	FsSyncCounts *counts;
} SyncArg;

static void
sync_product_cb(void *arg)
{
	SyncArg    *a = arg;

	sync_product(a->product, a->counts);
}

/* Run the pass; errors of one product are counted (WARNING) unless Redis'. */
void
fs_sync_all(FsSyncCounts *c)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint64		n;
	int64	   *products;

	memset(c, 0, sizeof(*c));
	PreventCommandIfReadOnly("flashsale.sync_stock()");
	if (fs_stock_has_reservations())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot sync stock in a transaction that holds stock reservations"),
				 errhint("Call flashsale.sync_stock() in a transaction of its own.")));

	fs_spi_connect();
	n = fs_spi_run(&q_products, NULL, NULL, true);
	products = MemoryContextAlloc(cxt, sizeof(int64) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		products[i] = DatumGetInt64(fs_spi_get(i, 1, &isnull));
	}
	fs_spi_finish();

	for (uint64 i = 0; i < n; i++)
	{
		SyncArg		a = {products[i], c};
		ErrorData  *edata = fs_try_subxact(sync_product_cb, &a);

		if (edata == NULL)
			continue;
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION)
			ReThrowError(edata);
		c->errors++;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("flashsale: could not sync product %lld: %s",
						(long long) products[i], edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0));
		FreeErrorData(edata);
	}
}

Datum
fs_sync_stock(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	FsSyncCounts c;
	Datum		values[8];
	bool		nulls[8] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	fs_sync_all(&c);
	values[0] = Int64GetDatum(c.products);
	values[1] = Int64GetDatum(c.reloaded);
	values[2] = Int64GetDatum(c.settled);
	values[3] = Int64GetDatum(c.units_returned);
	values[4] = Int64GetDatum(c.drift_fixed);
	values[5] = Int64GetDatum(c.ledger_rows_folded);
	values[6] = Int64GetDatum(c.errors);
	values[7] = Int64GetDatum(c.busy);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
