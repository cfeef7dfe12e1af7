/*
 * stock.c: stock sold from allotments, bound to the calling transaction.
 *
 * A decrement takes units from this instance's allotment of the product in
 * shared memory (allot.c), which leases them from the pool in Redis in
 * batches: most sales make no Redis call.  The units belong to the calling
 * transaction:
 *  - the same transaction appends a row to flashsale.stock_ledger, written
 *    straight into the table (no executor), so a commit records the sale
 *    durably without touching the product's row;
 *  - rollback, an error or ROLLBACK TO SAVEPOINT gives the units back to
 *    the allotment from the (sub)transaction abort callback, in shared
 *    memory: nothing there can fail, and the next buyer sells them at once;
 *  - the commit callback only counts them sold (shared memory, no Redis).
 * A crash of any backend restarts the server with fresh shared memory: its
 * allotments are gone, the in-flight transactions with them, and the next
 * lease finds the instance's Redis record stale and rebuilds the pool from
 * the database truth (quantity minus committed ledger), exactly.
 *
 * Decrementers hold the product's advisory lock in share mode until their
 * transaction ends.  A rebuild (allot.c says when one is due) takes it in
 * exclusive mode, so no transaction has units in flight while the truth is
 * read.  set_stock takes it exclusively too, changes the truth in the
 * database, drops the product's Redis keys just before commit and empties
 * the allotment at commit: the next sale rebuilds the pool.  restore_stock
 * takes it in share mode and adds its units to the allotment at commit
 * (they are for sale at once); deleting a product's row from
 * flashsale.stock (trigger stock_forget) works as set_stock does.
 *
 * Keys name the installation they belong to: the system identifier, the
 * database and the relfilenode of flashsale.stock (new at every CREATE
 * EXTENSION, and at every TRUNCATE or VACUUM FULL of the table), beside
 * flashsale.key_prefix.  Two databases on one Redis never share a product,
 * and a dropped and re-created (or truncated) stock table never reads what
 * was left in Redis: a product exists only through its row in
 * flashsale.stock, from which Redis is rebuilt.  A physical standby
 * promoted after a failover has the same three, and a new shared memory:
 * its first lease rebuilds every product it sells.
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(fs_set_stock);
PG_FUNCTION_INFO_V1(fs_decrement_stock);
PG_FUNCTION_INFO_V1(fs_try_decrement_stock);
PG_FUNCTION_INFO_V1(fs_decrement_stock_multi);
PG_FUNCTION_INFO_V1(fs_restore_stock);
PG_FUNCTION_INFO_V1(fs_stock_level);
PG_FUNCTION_INFO_V1(fs_stock_redis);
PG_FUNCTION_INFO_V1(fs_reload_stock);
PG_FUNCTION_INFO_V1(fs_stock_keys);
PG_FUNCTION_INFO_V1(fs_stock_forget);
PG_FUNCTION_INFO_V1(fs_allotments);

/* Lua numbers are doubles: every stock figure stays at or below 2^53 - 1 (FS_MAX_STOCK). */
#define FS_MAX_ITEMS 100


/* (every name qualified: these run as the extension's owner, see spi.c) */
static FsQuery q_truth = {
	"SELECT (s.quantity OPERATOR(pg_catalog.-)"
	"        coalesce((SELECT pg_catalog.sum(l.quantity) FROM flashsale.stock_ledger l"
	"                  WHERE l.product_id OPERATOR(pg_catalog.=) s.product_id), 0))::pg_catalog.int8,"
	"       s.set_quantity"
	" FROM flashsale.stock s WHERE s.product_id OPERATOR(pg_catalog.=) $1",
	1, {INT8OID}
};

/* waits for a sync pass folding the ledger into this row to commit */
static FsQuery q_lock_row = {
	"SELECT 1 FROM flashsale.stock WHERE product_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
	1, {INT8OID}
};

static FsQuery q_set = {
	"INSERT INTO flashsale.stock AS s (product_id, quantity, set_quantity)"
	" VALUES ($1, $2 OPERATOR(pg_catalog.+)"
	"             coalesce((SELECT pg_catalog.sum(l.quantity) FROM flashsale.stock_ledger l"
	"                       WHERE l.product_id OPERATOR(pg_catalog.=) $1), 0), $2)"
	" ON CONFLICT (product_id) DO UPDATE"
	" SET quantity = EXCLUDED.quantity, set_quantity = EXCLUDED.set_quantity,"
	"     updated_at = pg_catalog.now()",
	2, {INT8OID, INT8OID}
};

/* ---- per-transaction state ---- */

/*
 * Units of an allotment this transaction holds: taken by a decrement (sold
 * at commit, back at abort), or given back by restore_stock (added at
 * commit; the entry stays pinned until then).  qty is 0 until the take
 * happened, so a record made before an error undoes nothing.
 */
typedef struct Take
{
	FsAllot    *allot;
	int64		product;
	int64		qty;
	bool		restore;
	SubTransactionId subid;
} Take;

/*
 * A product whose truth this transaction set anew: keys dropped at
 * pre-commit, the allotment emptied at commit.  Also at (sub)transaction
 * abort: a pool rebuilt meanwhile read the truth this transaction set, which
 * the abort takes back.
 */
typedef struct Dirty
{
	int64		product;
	Oid			gen;
	char	   *stock;
	SubTransactionId subid;
} Dirty;

static MemoryContext xact_cxt = NULL;
static List *takes = NIL;
static List *dirty = NIL;

/* The generation of this database's stock keys: flashsale.stock's relfilenode. */
Oid
fs_stock_generation(void)
{
	Oid			gen;

	fs_extension_table("stock", NULL, &gen);
	return gen;
}

/* "<system identifier>.<database>.<generation>": see the top */
static const char *
installation(Oid gen)
{
	static Oid	node = InvalidOid;
	static Oid	dbid = InvalidOid;
	static char ident[64];

	if (gen != node || dbid != MyDatabaseId)
	{
		snprintf(ident, sizeof(ident), "%llu.%u.%u",
				 (unsigned long long) GetSystemIdentifier(), MyDatabaseId, gen);
		node = gen;
		dbid = MyDatabaseId;
	}
	return ident;
}

/* The product's keys share the hash tag {product}; the allotments' is the stock key's + ":allot". */
char *
fs_stock_key(int64 product)
{
	return psprintf("%sstock:%s:{%lld}", fs_key_prefix, installation(fs_stock_generation()),
					(long long) product);
}

bool
fs_stock_has_takes(void)
{
	return takes != NIL;
}

static void
ensure_memory(void)
{
	if (xact_cxt == NULL)
		xact_cxt = AllocSetContextCreate(TopMemoryContext, "flashsale stock transaction",
										 ALLOCSET_SMALL_SIZES);
}

static void
forget_transaction(void)
{
	if (takes == NIL && dirty == NIL)
		return;
	takes = NIL;
	dirty = NIL;
	MemoryContextReset(xact_cxt);
}

static void
check_quantity(int64 qty, int64 min, const char *what)
{
	if (qty < min)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at least %lld", what, (long long) min),
				 errdetail("%s was %lld.", what, (long long) qty)));
	if (qty > FS_MAX_STOCK)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", what),
				 errdetail("Stock figures are at most %lld (2^53 - 1), so that Redis' Lua keeps them exact.",
						   (long long) FS_MAX_STOCK)));
}

static void
unknown_product(int64 product)
{
	ereport(ERROR,
			(errcode(ERRCODE_FS_UNKNOWN_PRODUCT),
			 errmsg("product %lld has no stock", (long long) product),
			 errhint("Create it with flashsale.set_stock(product_id, quantity).")));
}

static void
stock_locktag(LOCKTAG *tag, int64 product)
{
	fs_locktag(tag, FS_LOCK_STOCK, product, 0);
}

static void
lock_product(int64 product, LOCKMODE mode)
{
	LOCKTAG		tag;

	stock_locktag(&tag, product);
	fs_lock_wait_mode(&tag, mode, psprintf("product %lld", (long long) product));
}

static void
mark_dirty(int64 product)
{
	MemoryContext old = MemoryContextSwitchTo(xact_cxt);
	Dirty	   *d = palloc(sizeof(Dirty));

	d->product = product;
	d->gen = fs_stock_generation();
	d->stock = fs_stock_key(product);
	d->subid = GetCurrentSubTransactionId();
	dirty = lappend(dirty, d);
	MemoryContextSwitchTo(old);
}

/* A new record of units this transaction holds (qty 0 until they are). */
static Take *
new_take(FsAllot *a, int64 product, bool restore)
{
	MemoryContext old = MemoryContextSwitchTo(xact_cxt);
	Take	   *t = palloc(sizeof(Take));

	t->allot = a;
	t->product = product;
	t->qty = 0;
	t->restore = restore;
	t->subid = GetCurrentSubTransactionId();
	takes = lappend(takes, t);
	MemoryContextSwitchTo(old);
	return t;
}

/*
 * A (sub)transaction's records end: committed or not (counted as sold or
 * given back when counted).  Shared memory only.
 */
static void
end_take_counted(Take *t, bool committed, bool counted)
{
	if (t->restore)
	{
		if (committed)
			fs_allot_add(t->allot, t->qty);
		fs_allot_unpin(t->allot);
	}
	else if (t->qty > 0)
	{
		fs_allot_end_take(t->allot, t->qty, committed);
		if (counted)
			fs_stat_sale(t->product, t->qty, 1, committed);
	}
}

static void
end_take(Take *t, bool committed)
{
	end_take_counted(t, committed, true);
}

/*
 * The transaction ended: every take ends, counted in the statistics one
 * product at a time (a run of takes of one product is one update).
 */
static void
end_all_takes(bool committed)
{
	int64		product = 0,
				units = 0,
				sales = 0;
	ListCell   *lc;

	foreach(lc, takes)
	{
		Take	   *t = lfirst(lc);

		end_take_counted(t, committed, false);
		if (t->restore || t->qty == 0)
			continue;
		if (sales > 0 && t->product != product)
		{
			fs_stat_sale(product, units, sales, committed);
			units = sales = 0;
		}
		product = t->product;
		units += t->qty;
		sales++;
	}
	if (sales > 0)
		fs_stat_sale(product, units, sales, committed);
}

/*
 * Drop the Redis keys of products whose truth this transaction set anew:
 * one DEL, or in a cluster one per product (each product's keys share a slot).
 */
static void
drop_dirty_keys(void)
{
	int			n = list_length(dirty);
	const char **argv = palloc(sizeof(char *) * (3 * n + 1));
	int			k = 0;
	ListCell   *lc;

	argv[k++] = "DEL";
	foreach(lc, dirty)
	{
		Dirty	   *d = lfirst(lc);

		argv[k++] = d->stock;
		argv[k++] = psprintf("%s:allot", d->stock);
		argv[k++] = psprintf("%s:reserved", d->stock);
		if (fs_redis_cluster)
		{
			fs_redis_free(fs_redis_command(k, argv, NULL, true));
			k = 1;
		}
	}
	if (k > 1)
		fs_redis_free(fs_redis_command(k, argv, NULL, true));
}

static void
stock_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (dirty != NIL)
				drop_dirty_keys();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (takes != NIL || dirty != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed flashsale stock"),
						 errdetail("Its units are held in this instance's shared memory, bound to this session."),
						 errhint("Commit or roll back the transaction instead.")));
			break;
		case XACT_EVENT_COMMIT:
			/* durable already: shared memory only, nothing that can fail */
			end_all_takes(true);
			foreach(lc, dirty)
				fs_allot_invalidate(((Dirty *) lfirst(lc))->gen, ((Dirty *) lfirst(lc))->product, true);
			forget_transaction();
			break;
		case XACT_EVENT_ABORT:
			end_all_takes(false);
			foreach(lc, dirty)
				fs_allot_invalidate(((Dirty *) lfirst(lc))->gen, ((Dirty *) lfirst(lc))->product, true);
			forget_transaction();
			break;
		default:
			break;
	}
}

static void
stock_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	foreach(lc, takes)
	{
		Take	   *t = lfirst(lc);

		if (t->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			t->subid = parentSubid;
		else
		{
			end_take(t, false);
			takes = foreach_delete_current(takes, lc);
		}
	}
	/* (the keys still go at pre-commit: dropping them is always safe) */
	foreach(lc, dirty)
	{
		Dirty	   *d = lfirst(lc);

		if (d->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			d->subid = parentSubid;
		else
			fs_allot_invalidate(d->gen, d->product, true);
	}
}

void
fs_stock_init(void)
{
	RegisterXactCallback(stock_xact_callback, NULL);
	RegisterSubXactCallback(stock_subxact_callback, NULL);
}

/* ---- the database truth: quantity minus ledger ---- */

/*
 * The truth, and (when set_level) the level set_stock last set, -1 when not
 * known (a row from before 1.5).  False when the product has no stock row.
 */
static bool
truth_and_level(int64 product, int64 *truth, int64 *set_level)
{
	Datum		value = Int64GetDatum(product);
	bool		isnull;
	bool		found;

	fs_spi_connect();
	found = fs_spi_run(&q_truth, &value, NULL, true) > 0;
	if (found)
	{
		*truth = DatumGetInt64(fs_spi_get(0, 1, &isnull));
		if (set_level)
		{
			Datum		level = fs_spi_get(0, 2, &isnull);

			*set_level = isnull ? -1 : DatumGetInt64(level);
		}
	}
	fs_spi_finish();
	return found;
}

/*
 * Units left of product according to the database (committed ledger rows,
 * and this transaction's own); false when the product has no stock row.
 */
bool
fs_stock_truth(int64 product, int64 *truth)
{
	return truth_and_level(product, truth, NULL);
}

/* ---- rebuild ---- */

/*
 * Rebuild the product's pool in Redis from the database truth minus what
 * this instance holds.  Under the product's lock in exclusive mode (taken
 * here unless locked): no other transaction has units of it in flight, and
 * the caller's own are already out of the truth it reads (its ledger rows).
 * The caller's share lock on it, if taken by the current call, was released.
 * Unless force, nothing is done when another backend rebuilt it meanwhile:
 * the buyers that found it stale at once queue for the lock, and each then
 * costs only the lock.
 */
void
fs_stock_rebuild(int64 product, bool locked, bool force)
{
	LOCKTAG		tag;
	int64		truth;
	FsAllot    *a;
	char	   *stock;

	stock_locktag(&tag, product);
	if (!locked)
		lock_product(product, ExclusiveLock);
	a = fs_allot_get(fs_stock_generation(), product, fs_stock_key);

	PG_TRY();
	{
		if (force || fs_allot_stale(a))
		{
			if (!fs_stock_truth(product, &truth))
				unknown_product(product);
			if (truth < 0 || truth > FS_MAX_STOCK)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("product %lld has %lld units left in the database", (long long) product,
								(long long) truth),
						 errdetail("Stock figures must lie between 0 and 2^53 - 1.")));
			stock = fs_stock_key(product);
			fs_allot_rebuild(a, truth, psprintf("%s:reserved", stock));
		}
	}
	PG_CATCH();
	{
		fs_allot_unpin(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	fs_allot_unpin(a);

	if (!locked)
		fs_lock_release_mode(&tag, ExclusiveLock);
}

/* ---- decrement ---- */

typedef enum ReserveResult
{
	RESERVED,
	NOT_ENOUGH
} ReserveResult;

/*
 * Take qtys[i] units of products[i] for the calling transaction, all or
 * nothing.  On RESERVED, left[i] is what each has left as far as this
 * instance knows (its allotment and the pool at its last lease); on
 * NOT_ENOUGH, *short_item and *short_left say which one fell short, and
 * nothing changed.
 */
static ReserveResult
reserve(int n, const int64 *products, const int64 *qtys, int64 *left,
		int *short_item, int64 *short_left)
{
	Oid			gen = fs_stock_generation();
	bool	   *had_lock;
	LOCKTAG	   *tags;
	FsAllot    *volatile pinned = NULL;
	Take	  **mine;
	int			attempts = 0;

	ensure_memory();

	/* known sold out on this instance: no lock, no transaction id, no Redis */
	for (int i = 0; i < n; i++)
		if (fs_allot_short_known(gen, products[i], qtys[i], short_left))
		{
			*short_item = i;
			fs_stat_entry_add(FS_STAT_PRODUCT, products[i], FS_SP_SOLD_OUT, 1, true);
			return NOT_ENOUGH;
		}

	had_lock = palloc(sizeof(bool) * n);
	tags = palloc(sizeof(LOCKTAG) * n);
	mine = palloc0(sizeof(Take *) * n);
	for (int i = 0; i < n; i++)
	{
		stock_locktag(&tags[i], products[i]);
		had_lock[i] = fs_lock_held_by_me(&tags[i], ShareLock);
	}

	for (;;)
	{
		volatile FsTakeResult result = TAKE_OK;
		volatile int at = 0;

		for (int i = 0; i < n; i++)
			lock_product(products[i], ShareLock);

		PG_TRY();
		{
			for (at = 0; at < n; at++)
			{
				pinned = fs_allot_get(gen, products[at], fs_stock_key);
				mine[at] = new_take(pinned, products[at], false);
				result = fs_allot_take(pinned, qtys[at], &left[at], &mine[at]->qty);
				fs_allot_unpin(pinned);
				pinned = NULL;
				if (result != TAKE_OK)
					break;
			}
		}
		PG_CATCH();
		{
			/* the takes made are undone at abort; the entry in hand is unpinned */
			if (pinned != NULL)
				fs_allot_unpin(pinned);
			PG_RE_THROW();
		}
		PG_END_TRY();

		if (result == TAKE_OK)
		{
			/*
			 * The entries the commit will count in, made now (a commit makes
			 * none); once per product and transaction is enough.
			 */
			static int64 touched_product;
			static TimestampTz touched_xact;
			TimestampTz now = GetCurrentTransactionStartTimestamp();

			for (int i = 0; i < n; i++)
				if (products[i] != touched_product || now != touched_xact)
				{
					fs_stat_entry_add(FS_STAT_PRODUCT, products[i], FS_SP_LAST_SALE, now, true);
					touched_product = products[i];
					touched_xact = now;
				}
			return RESERVED;
		}

		/* not all: give back what this call took, let go of new locks */
		for (int i = 0; i <= at; i++)
		{
			end_take_counted(mine[i], false, false);
			takes = list_delete_ptr(takes, mine[i]);
		}
		for (int i = 0; i < n; i++)
			if (!had_lock[i])
				fs_lock_release_mode(&tags[i], ShareLock);

		if (result == TAKE_SHORT)
		{
			*short_item = at;
			*short_left = left[at];
			fs_stat_entry_add(FS_STAT_PRODUCT, products[at], FS_SP_SOLD_OUT, 1, true);
			return NOT_ENOUGH;
		}

		/* TAKE_REBUILD: Redis' record is not this instance's; rebuild it and try again */
		if (++attempts > n + 2)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("product %lld keeps disappearing from Redis", (long long) products[at]),
					 errhint("Check Redis' maxmemory-policy: stock keys must not be evicted.")));
		fs_stock_rebuild(products[at], false, false);
	}
}

/*
 * The durable record of a sale: a ledger row per item, in the caller's
 * transaction, written straight into the table and its index as coupon
 * issuance writes (table.c): no executor start-up, no plan, no SPI.
 */
static void
record_sales(int n, const int64 *products, const int64 *qtys)
{
	FsUser		caller;
	Relation	rel;
	FsWriter	w;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	Oid			seq;
	AttrNumber	a_id,
				a_product,
				a_qty,
				a_xid,
				a_at;

	fs_become_owner(&caller);
	rel = fs_table_open("stock_ledger", RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != 5)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flashsale.stock_ledger has %d columns, not the 5 of this version",
						RelationGetDescr(rel)->natts),
				 errhint("Run ALTER EXTENSION flashsale UPDATE.")));
	seq = fs_table_serial(rel, "entry_id");
	a_id = fs_table_attnum(rel, "entry_id");
	a_product = fs_table_attnum(rel, "product_id");
	a_qty = fs_table_attnum(rel, "quantity");
	a_xid = fs_table_attnum(rel, "xid");
	a_at = fs_table_attnum(rel, "created_at");
	fs_writer_begin(&w, rel, false);
	for (int i = 0; i < n; i++)
	{
		values[a_id - 1] = Int64GetDatum(nextval_internal(seq, true));
		values[a_product - 1] = Int64GetDatum(products[i]);
		values[a_qty - 1] = Int64GetDatum(qtys[i]);
		values[a_xid - 1] = FullTransactionIdGetDatum(GetTopFullTransactionId());
		values[a_at - 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		fs_writer_insert(&w, values, nulls);
	}
	fs_writer_end(&w);
	table_close(rel, NoLock);
	fs_restore_user(&caller);
}

static void
not_enough(int64 product, int64 wanted, int64 left)
{
	ereport(ERROR,
			(errcode(ERRCODE_FS_INSUFFICIENT_STOCK),
			 errmsg("not enough stock of product %lld", (long long) product),
			 errdetail("%lld requested, %lld left.", (long long) wanted, (long long) left)));
}

/* decrement_stock(product_id, quantity) and try_decrement_stock: NULL when short */
static Datum
decrement_one(FunctionCallInfo fcinfo, bool raise)
{
	int64		product,
				qty,
				left,
				short_left;
	int			short_item;

	fs_require_arg(fcinfo, 0, "product_id");
	fs_require_arg(fcinfo, 1, "quantity");
	product = PG_GETARG_INT64(0);
	qty = PG_GETARG_INT64(1);
	check_quantity(qty, 1, "quantity");
	PreventCommandIfReadOnly(raise ? "flashsale.decrement_stock()" : "flashsale.try_decrement_stock()");

	if (reserve(1, &product, &qty, &left, &short_item, &short_left) == NOT_ENOUGH)
	{
		if (raise)
			not_enough(product, qty, short_left);
		PG_RETURN_NULL();
	}
	record_sales(1, &product, &qty);
	PG_RETURN_INT64(left);
}

Datum
fs_decrement_stock(PG_FUNCTION_ARGS)
{
	return decrement_one(fcinfo, true);
}

Datum
fs_try_decrement_stock(PG_FUNCTION_ARGS)
{
	return decrement_one(fcinfo, false);
}

static int64 *
int8_array_arg(FunctionCallInfo fcinfo, int argno, const char *name, int *n)
{
	ArrayType  *a;
	Datum	   *elems;
	bool	   *nulls;
	int64	   *out;

	fs_require_arg(fcinfo, argno, name);
	a = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", name)));
	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, n);
	out = palloc(sizeof(int64) * (*n + 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", name)));
		out[i] = DatumGetInt64(elems[i]);
	}
	return out;
}

Datum
fs_decrement_stock_multi(PG_FUNCTION_ARGS)
{
	int			n,
				nq,
				short_item;
	int64	   *products = int8_array_arg(fcinfo, 0, "product_ids", &n);
	int64	   *qtys = int8_array_arg(fcinfo, 1, "quantities", &nq);
	int64	   *left;
	int64		short_left;
	Datum	   *out;

	if (n != nq)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("product_ids and quantities must have the same length"),
				 errdetail("%d product_ids, %d quantities.", n, nq)));
	if (n < 1 || n > FS_MAX_ITEMS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an order must have between 1 and %d items", FS_MAX_ITEMS),
				 errdetail("It has %d.", n)));
	for (int i = 0; i < n; i++)
	{
		check_quantity(qtys[i], 1, "quantity");
		for (int j = 0; j < i; j++)
			if (products[j] == products[i])
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("product %lld appears more than once", (long long) products[i]),
						 errhint("Add up its quantities into one item.")));
	}

	PreventCommandIfReadOnly("flashsale.decrement_stock()");
	left = palloc(sizeof(int64) * n);
	if (reserve(n, products, qtys, left, &short_item, &short_left) == NOT_ENOUGH)
		not_enough(products[short_item], qtys[short_item], short_left);
	record_sales(n, products, qtys);

	out = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		out[i] = Int64GetDatum(left[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(out, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* ---- set, restore, level ---- */

Datum
fs_set_stock(PG_FUNCTION_ARGS)
{
	int64		product,
				qty;
	Datum		values[2];

	fs_require_arg(fcinfo, 0, "product_id");
	fs_require_arg(fcinfo, 1, "quantity");
	product = PG_GETARG_INT64(0);
	qty = PG_GETARG_INT64(1);
	check_quantity(qty, 0, "quantity");
	PreventCommandIfReadOnly("flashsale.set_stock()");
	ensure_memory();

	values[0] = Int64GetDatum(product);
	values[1] = Int64GetDatum(qty);
	/*
	 * The row first (a sync pass that folded the ledger into it holds it
	 * until the pass commits), then the product's lock, exclusively: no units
	 * of it may be in flight while its truth changes.  In the other order,
	 * every buyer would queue behind set_stock while it waits for the pass.
	 */
	fs_spi_connect();
	fs_spi_run(&q_lock_row, values, NULL, false);
	lock_product(product, ExclusiveLock);
	fs_spi_run(&q_set, values, NULL, false);
	fs_spi_finish();
	mark_dirty(product);
	PG_RETURN_VOID();
}

Datum
fs_restore_stock(PG_FUNCTION_ARGS)
{
	int64		product,
				qty,
				left,
				level;
	LOCKTAG		restores;

	fs_require_arg(fcinfo, 0, "product_id");
	fs_require_arg(fcinfo, 1, "quantity");
	product = PG_GETARG_INT64(0);
	qty = PG_GETARG_INT64(1);
	check_quantity(qty, 1, "quantity");
	PreventCommandIfReadOnly("flashsale.restore_stock()");
	ensure_memory();

	/* share mode, like decrementers: a rebuild waits until this commits */
	lock_product(product, ShareLock);
	/* restores of one product one at a time, each reading the last's commit */
	fs_locktag(&restores, FS_LOCK_STOCK, product, 1);
	fs_lock_wait(&restores, psprintf("restores of product %lld", (long long) product));
	if (!truth_and_level(product, &left, &level))
		unknown_product(product);
	check_quantity(left + qty, 0, "stock after the restore");
	/* units in flight are not counted as sold yet: the bound errs on the safe side */
	if (level >= 0 && left + qty > level)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_plural("cannot restore %lld unit of product %lld",
							   "cannot restore %lld units of product %lld", qty,
							   (long long) qty, (long long) product),
				 errdetail("Since set_stock set it to %lld, %lld were sold and not given back.",
						   (long long) level, (long long) Max(level - left, 0)),
				 errhint("restore_stock gives back units of committed orders; to raise the stock, use set_stock.")));

	{
		int64		sale = -qty;
		FsAllot    *a = fs_allot_get(fs_stock_generation(), product, fs_stock_key);
		Take	   *t;

		/* pinned until the transaction ends: at commit the units join the allotment */
		PG_TRY();
		{
			t = new_take(a, product, true);
		}
		PG_CATCH();
		{
			fs_allot_unpin(a);
			PG_RE_THROW();
		}
		PG_END_TRY();
		t->qty = qty;
		record_sales(1, &product, &sale);
	}
	PG_RETURN_INT64(left + qty);
}

/*
 * Pool and allotment of a product, read together.  False when Redis' record
 * is not this instance's; with rebuild, the pool is rebuilt then and read again.
 */
static bool
read_once(int64 product, FsAllotFigures *f)
{
	FsAllot    *a = fs_allot_get(fs_stock_generation(), product, fs_stock_key);
	volatile bool ok = false;

	PG_TRY();
	{
		ok = fs_allot_read(a, f);
	}
	PG_CATCH();
	{
		fs_allot_unpin(a);
		PG_RE_THROW();
	}
	PG_END_TRY();
	fs_allot_unpin(a);
	return ok;
}

bool
fs_stock_figures(int64 product, FsAllotFigures *f, bool rebuild)
{
	if (read_once(product, f))
		return true;
	if (!rebuild)
		return false;
	fs_stock_rebuild(product, false, false);
	if (!read_once(product, f))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("product %lld disappeared from Redis right after its rebuild",
						(long long) product)));
	return true;
}

/* stock_level(product_id): units left to sell, the pool plus this instance's allotment */
Datum
fs_stock_level(PG_FUNCTION_ARGS)
{
	FsAllotFigures f;

	fs_require_arg(fcinfo, 0, "product_id");
	(void) fs_stock_figures(PG_GETARG_INT64(0), &f, true);
	PG_RETURN_INT64(f.pool + f.available);
}

/*
 * stock_redis(product_id) -> (pool, allotted, available, in_flight): the
 * pool and the units allotted to instances as Redis records them, and this
 * instance's allotment, read together; nothing rebuilt (pool is NULL when
 * Redis does not have it).
 */
Datum
fs_stock_redis(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	FsAllotFigures f;

	fs_require_arg(fcinfo, 0, "product_id");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	(void) fs_stock_figures(PG_GETARG_INT64(0), &f, false);
	values[0] = Int64GetDatum(f.pool);
	nulls[0] = !f.pool_known;
	values[1] = Int64GetDatum(f.allotted);
	values[2] = Int64GetDatum(f.available);
	values[3] = Int64GetDatum(f.in_flight);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * reload_stock(product_id): drop what Redis holds of a product, now (not at
 * commit), so that its next sale rebuilds the pool from the database truth
 * minus what this instance holds.  Always safe: a rebuild waits for every
 * transaction with units of it in flight.
 */
Datum
fs_reload_stock(PG_FUNCTION_ARGS)
{
	int64		product;
	const char *argv[4];
	FsReply    *r;
	bool		had;

	fs_require_arg(fcinfo, 0, "product_id");
	product = PG_GETARG_INT64(0);
	argv[0] = "DEL";
	argv[1] = fs_stock_key(product);
	argv[2] = psprintf("%s:allot", argv[1]);
	argv[3] = psprintf("%s:reserved", argv[1]);
	r = fs_redis_command(4, argv, NULL, true);
	had = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	fs_redis_free(r);
	fs_allot_invalidate(fs_stock_generation(), product, false);
	PG_RETURN_BOOL(had);
}

/* stock_keys(product_id) -> (stock_key, allot_key): the product's Redis keys here */
Datum
fs_stock_keys(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char	   *stock_key;

	fs_require_arg(fcinfo, 0, "product_id");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	stock_key = fs_stock_key(PG_GETARG_INT64(0));
	values[0] = CStringGetTextDatum(stock_key);
	values[1] = CStringGetTextDatum(psprintf("%s:allot", stock_key));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * Trigger stock_forget on flashsale.stock: a product whose row is deleted
 * stops being sellable.  Like set_stock, it waits for the transactions with
 * units of it in flight and drops its Redis keys just before commit; the
 * next decrement finds no row and fails with FS011.  (A TRUNCATE needs no
 * trigger: it gives the table a new relfilenode, hence new keys.)
 */
Datum
fs_stock_forget(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	bool		isnull;
	int64		product;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stock_forget must be called as a trigger")));
	if (!TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stock_forget must be a row trigger on DELETE")));
	product = DatumGetInt64(heap_getattr(trigdata->tg_trigtuple,
										 fs_table_attnum(trigdata->tg_relation, "product_id"),
										 RelationGetDescr(trigdata->tg_relation), &isnull));
	ensure_memory();
	lock_product(product, ExclusiveLock);
	mark_dirty(product);
	return PointerGetDatum(NULL);
}

/*
 * allotments() -> setof (product_id, available, in_flight, batch, last_used,
 * stale): this instance's allotments of this database's products.
 */
Datum
fs_allotments(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FsAllotRow *rows;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	rows = fs_allot_list(fs_stock_generation(), &n);
	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		values[0] = Int64GetDatum(rows[i].product);
		values[1] = Int64GetDatum(rows[i].available);
		values[2] = Int64GetDatum(rows[i].in_flight);
		values[3] = Int64GetDatum(rows[i].batch);
		values[4] = TimestampTzGetDatum(rows[i].last_used);
		values[5] = BoolGetDatum(rows[i].stale);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
