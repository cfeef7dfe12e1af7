/*
 * sync.c: the sync pass, flashsale.sync_stock().  The background worker runs
 * it every flashsale.sync_interval; anyone can call it.  One code path.
 *
 *   1. idle allotments (every database's) go back to the pool, and empty
 *      idle entries are forgotten (allot.c);
 *   2. fold the committed ledger rows into flashsale.stock.quantity, so the
 *      table shows the truth and the ledger does not grow without bound
 *      (the truth, quantity minus ledger, is unchanged by this);
 *   3. for every product sold from here since its last check and idle for
 *      flashsale.allotment_idle since (a hot product's Redis record is
 *      checked at every lease meanwhile), or whose allotment is stale: check
 *      Redis against the database.  The pool plus
 *      this instance's allotment must equal the database truth (quantity
 *      minus ledger); when Redis lost the product, holds another
 *      incarnation's record, or disagrees, the database wins: the pool is
 *      rebuilt, and a disagreement is logged and counted as drift.
 * Products nobody bought since their last check cost no Redis call: a
 * product Redis lost meanwhile is rebuilt by its next sale.  The fold comes
 * first, so that a product's truth sums a short ledger; set_stock takes the
 * product's row before its lock, so that waiting for a pass that folded it
 * stops no buyer.
 * The pass never waits for a sale.  Step 3 needs the product's lock held
 * exclusively (no units of it in flight), and the pass only tries it:
 * queued behind one long transaction holding a unit, an exclusive request
 * would stop every buyer behind it.  When the lock is busy the product is
 * counted "busy" and checked at a quieter pass.
 * Each product runs in a subtransaction: a database error in one is counted
 * and the pass goes on.  A Redis error ends the pass (class 08); the pass
 * starts with a PING, so that one with nothing to ask Redis still notices.
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
/*
 * Fold the committed ledger into the stock rows, every product in one
 * statement: the ledger has no index (the sale's hot path pays for none),
 * and one scan of it is the plan that fits.  Rows of transactions in
 * progress are not visible to it: it waits for nobody.  Rows of products
 * whose stock row is gone are dropped (set_stock counts the ledger in,
 * should the product come back).
 */
static FsQuery q_fold = {
	"WITH d AS (DELETE FROM flashsale.stock_ledger RETURNING product_id, quantity),"
	"     s AS (SELECT product_id, pg_catalog.sum(quantity) AS sold, pg_catalog.count(*) AS n"
	"           FROM d GROUP BY product_id),"
	"     u AS (UPDATE flashsale.stock t"
	"              SET quantity = t.quantity OPERATOR(pg_catalog.-) s.sold,"
	"                  updated_at = pg_catalog.now()"
	"             FROM s WHERE t.product_id OPERATOR(pg_catalog.=) s.product_id"
	"           RETURNING s.n)"
	" SELECT coalesce((SELECT pg_catalog.sum(n) FROM u), 0)::pg_catalog.int8",
	0
};

/* Check a product sold from here against the database, when nobody has units of it in flight. */
static void
sync_product(int64 product, FsSyncCounts *c)
{
	LOCKTAG		tag;
	FsAllotFigures f;
	int64		truth;
	bool		mine;

	c->products++;
	fs_locktag(&tag, FS_LOCK_STOCK, product, 0);
	if (!fs_lock_try_mode(&tag, ExclusiveLock))
	{
		c->busy++;
		return;
	}
	mine = fs_stock_figures(product, &f, false);
	if (fs_stock_truth(product, &truth) && (!mine || f.pool + f.available + f.in_flight != truth))
	{
		fs_stock_rebuild(product, true, true);
		if (!mine)
			c->reloaded++;
		else
		{
			c->drift_fixed++;
			ereport(LOG,
					(errmsg("flashsale: product %lld had %lld units in the pool and %lld allotted here, the database says %lld; pool set to %lld",
							(long long) product, (long long) f.pool,
							(long long) (f.available + f.in_flight), (long long) truth,
							(long long) (truth - f.available - f.in_flight))));
		}
	}
	fs_lock_release_mode(&tag, ExclusiveLock);
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

static void sync_all(FsSyncCounts *c);

/*
 * Run the pass; errors of one product are counted (WARNING) unless Redis'.
 * Its Redis calls count as "sync", and the pass in flashsale.stat_worker.
 */
void
fs_sync_all(FsSyncCounts *c)
{
	TimestampTz start = GetCurrentTimestamp();
	int			prev = fs_redis_kind_override(FS_RK_SYNC);

	PG_TRY();
	{
		sync_all(c);
	}
	PG_CATCH();
	{
		fs_redis_kind_override(prev);
		fs_stat_worker(FS_WORKER_ERRORS, 1);
		PG_RE_THROW();
	}
	PG_END_TRY();
	fs_redis_kind_override(prev);
	fs_stat_worker(FS_WORKER_PASSES, 1);
	fs_stat_worker(FS_WORKER_LAST_PASS_US, GetCurrentTimestamp() - start);
	fs_stat_worker(FS_WORKER_PRODUCTS_SYNCED, c->products);
	fs_stat_worker(FS_WORKER_PRODUCTS_BUSY, c->busy);
	fs_stat_worker(FS_WORKER_DRIFT_FIXED, c->drift_fixed);
	fs_stat_worker(FS_WORKER_ERRORS, c->errors);
}

static void
sync_all(FsSyncCounts *c)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint64		n;
	int64	   *products;

	memset(c, 0, sizeof(*c));
	PreventCommandIfReadOnly("flashsale.sync_stock()");
	if (fs_stock_has_takes())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot sync stock in a transaction that holds units of stock"),
				 errhint("Call flashsale.sync_stock() in a transaction of its own.")));

	/* Redis answers (a pass that needs no other call still notices an outage) */
	{
		const char *ping[] = {"PING"};

		fs_redis_free(fs_redis_command(1, ping, NULL, true));
	}

	/* 1. idle allotments back to the pool */
	c->allotments_returned = fs_allot_return_idle(&c->units_returned);

	/* 2. fold the committed ledger into the table (before the checks: they sum what is left) */
	fs_spi_connect();
	if (fs_spi_run(&q_fold, NULL, NULL, false) > 0)
	{
		bool		isnull;

		c->ledger_rows_folded = DatumGetInt64(fs_spi_get(0, 1, &isnull));
	}
	fs_spi_finish();

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
		ErrorData  *edata;

		/* 3. only what was sold from here since its last check and is idle now, or is stale */
		if (!fs_allot_check_due(fs_stock_generation(), products[i]))
		{
			c->products++;
			continue;
		}
		edata = fs_try_subxact(sync_product_cb, &a);

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
	values[2] = Int64GetDatum(c.allotments_returned);
	values[3] = Int64GetDatum(c.units_returned);
	values[4] = Int64GetDatum(c.drift_fixed);
	values[5] = Int64GetDatum(c.ledger_rows_folded);
	values[6] = Int64GetDatum(c.errors);
	values[7] = Int64GetDatum(c.busy);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
