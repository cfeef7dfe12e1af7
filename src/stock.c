/*
 * stock.c: stock decremented in Redis, bound to the calling transaction.
 *
 * A decrement is a reservation that belongs to the calling transaction:
 *  - Redis takes the units and records them under the transaction's identity
 *    (system identifier : full xid) in the product's reservation hash, in
 *    one Lua script: one round trip per decrement;
 *  - the same transaction appends a row to flashsale.stock_ledger, so a
 *    commit records the sale durably without touching the product's row;
 *  - rollback, an error or ROLLBACK TO SAVEPOINT gives the units back from
 *    the (sub)transaction abort callback; a failure there leaves the
 *    reservation in Redis for the background worker to settle;
 *  - after a commit nothing is sent from the commit callback: the
 *    reservation's entry is dropped by this backend's next script call (or
 *    by the worker).
 * Decrementers hold the product's advisory lock in share mode until their
 * transaction ends.  A product Redis does not know is reloaded from the
 * database truth (quantity minus ledger) under that lock in exclusive mode,
 * so no reservation can be in flight while it is computed.  set_stock and
 * restore_stock change the truth in the database and delete the product's
 * Redis keys just before commit, so the next decrement reloads it; so does
 * deleting a product's row from flashsale.stock (trigger stock_forget).
 *
 * Keys name the installation they belong to: the system identifier, the
 * database and the relfilenode of flashsale.stock (new at every CREATE
 * EXTENSION, and at every TRUNCATE or VACUUM FULL of the table), beside
 * flashsale.key_prefix.  Two databases on one Redis never share a product,
 * and a dropped and re-created (or truncated) stock table never reads what
 * was left in Redis: a product exists only through its row in
 * flashsale.stock, from which Redis is (re)loaded.  A new generation of keys
 * is always safe: a reload waits for the reservations in flight, which give
 * back (if they abort) to the keys they were made under.  A physical
 * standby promoted after a failover has the same three, and goes on with
 * the keys.
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
#include "storage/ipc.h"
#include "storage/procarray.h"
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

/* Lua numbers are doubles: every stock figure stays at or below 2^53 - 1 (FS_MAX_STOCK). */
#define FS_MAX_ITEMS 100
#define FS_MAX_SETTLE 32


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
 * A product's Redis keys, named while the transaction can read the catalog:
 * abort and commit callbacks and the exit hook use them as they were.
 */
typedef struct ProductKeys
{
	int64		product;
	char	   *stock;
	char	   *reserved;
	uint64		soldout;		/* its key in soldout.c */
} ProductKeys;

typedef struct Reservation
{
	int64		product;
	ProductKeys keys;
	int64		qty;
	SubTransactionId subid;
	bool		uncertain;		/* the call failed: it may or may not have taken units */
	uint64		sent_before;	/* fs_redis_sent before the call */
} Reservation;

/*
 * A committed reservation whose entry Redis still holds: dropped by the
 * backend's next script call (it rides along) or at exit.  A fixed ring,
 * allocated once: the COMMIT callback allocates nothing and cannot fail.
 * What does not fit (a key longer than FS_SETTLE_KEY, a full ring) is left
 * to the worker's pass, which settles every ended transaction by its real
 * outcome anyway.
 */
#define FS_SETTLE_RING 128
#define FS_SETTLE_KEY 256

typedef struct Settle
{
	char		reserved[FS_SETTLE_KEY];	/* the product's reservation key */
	char		txn[64];
} Settle;

static MemoryContext xact_cxt = NULL;	/* reservations, dirty products, key names */
static bool xact_cxt_used = false;	/* something of this transaction is in it */
static List *reservations = NIL;
static List *dirty = NIL;		/* ProductKeys whose keys go at pre-commit */
static char txn_ident[64] = "";

static Settle *settle_ring = NULL;	/* FS_SETTLE_RING entries, in TopMemoryContext */
static int	settle_head = 0;	/* the oldest */
static int	settle_count = 0;

#define SETTLE(i) (&settle_ring[(settle_head + (i)) % FS_SETTLE_RING])
static bool exit_hook = false;

/* "<system identifier>.<database>.<flashsale.stock's relfilenode>": see the top */
static const char *
installation(void)
{
	static Oid	node = InvalidOid;
	static Oid	dbid = InvalidOid;
	static char ident[64];
	Oid			now;

	fs_extension_table("stock", NULL, &now);
	if (now != node || dbid != MyDatabaseId)
	{
		snprintf(ident, sizeof(ident), "%llu.%u.%u",
				 (unsigned long long) GetSystemIdentifier(), MyDatabaseId, now);
		node = now;
		dbid = MyDatabaseId;
	}
	return ident;
}

/* The product's keys share the hash tag {product}; the reservations' is the stock key's + ":reserved". */
char *
fs_stock_key(int64 product)
{
	return psprintf("%sstock:%s:{%lld}", fs_key_prefix, installation(), (long long) product);
}

char *
fs_reserved_key(const char *stock_key)
{
	return psprintf("%s:reserved", stock_key);
}

static const char *
current_txn(void)
{
	if (txn_ident[0] == '\0')
		snprintf(txn_ident, sizeof(txn_ident), "%llu:%llu",
				 (unsigned long long) GetSystemIdentifier(),
				 (unsigned long long) U64FromFullTransactionId(GetTopFullTransactionId()));
	return txn_ident;
}

/* This transaction's identity in Redis if it has one, else NULL. */
const char *
fs_stock_txn_if_any(void)
{
	return txn_ident[0] ? txn_ident : NULL;
}

bool
fs_stock_has_reservations(void)
{
	return reservations != NIL;
}

static void
forget_transaction(void)
{
	if (!xact_cxt_used && txn_ident[0] == '\0')
		return;
	reservations = NIL;
	dirty = NIL;
	txn_ident[0] = '\0';
	MemoryContextReset(xact_cxt);
	xact_cxt_used = false;
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
name_keys(ProductKeys *k, int64 product)
{
	k->product = product;
	k->stock = fs_stock_key(product);
	k->reserved = fs_reserved_key(k->stock);
	k->soldout = fs_soldout_key(k->stock);
}

/* Units of product came back in Redis: a sold-out verdict no longer holds. */
void
fs_stock_units_back(int64 product)
{
	fs_soldout_forget(fs_soldout_key(fs_stock_key(product)));
}

static void
mark_dirty(int64 product)
{
	MemoryContext old = MemoryContextSwitchTo(xact_cxt);
	ProductKeys *k = palloc(sizeof(ProductKeys));

	xact_cxt_used = true;
	name_keys(k, product);
	dirty = lappend(dirty, k);
	MemoryContextSwitchTo(old);
}

/* ---- giving units back ---- */

/*
 * Give back the given reservations of this transaction (never raises).
 * When Redis cannot be told, the reservations stay recorded there and the
 * worker settles them once the transaction has ended.
 */
static void
give_back(List *items)
{
	int			n = list_length(items);
	const char **argv;
	int			k = 0;
	ListCell   *lc;

	if (n == 0)
		return;
	foreach(lc, items)
		fs_soldout_forget(((Reservation *) lfirst(lc))->keys.soldout);
	argv = palloc(sizeof(char *) * (4 * n + 2));
	foreach(lc, items)
		argv[k++] = ((Reservation *) lfirst(lc))->keys.stock;
	foreach(lc, items)
		argv[k++] = ((Reservation *) lfirst(lc))->keys.reserved;
	argv[k++] = psprintf("%d", n);
	argv[k++] = txn_ident;
	foreach(lc, items)
		argv[k++] = psprintf("%lld", (long long) ((Reservation *) lfirst(lc))->qty);
	fs_redis_free(fs_redis_script(&fs_script_giveback, 2 * n, k, argv, NULL, false));
}

/*
 * Undo reservations at (sub)transaction abort, never raising.  A reservation
 * whose call failed after it was sent may or may not have taken units, and
 * that call may still reach Redis after this one (a hung server runs both
 * once it wakes up): its product's keys are dropped instead, which is right
 * in any order, and the product is reloaded from the truth on next use.  A
 * call that failed before anything was sent took nothing.
 */
static void
undo_reservations(List *items)
{
	List	   *certain = NIL;
	List	   *doubtful = NIL;
	ListCell   *lc;

	foreach(lc, items)
	{
		Reservation *r = lfirst(lc);

		if (r->uncertain && r->sent_before != fs_redis_sent)
			doubtful = list_append_unique_ptr(doubtful, r);
	}
	foreach(lc, items)
	{
		Reservation *r = lfirst(lc);
		bool		drop = false;
		ListCell   *lc2;

		foreach(lc2, doubtful)
			drop |= ((Reservation *) lfirst(lc2))->product == r->product;
		if (!drop && !r->uncertain)
			certain = lappend(certain, r);
	}
	fs_redis_cleanup_begin();
	give_back(certain);
	if (doubtful != NIL)
	{
		const char **argv = palloc(sizeof(char *) * (2 * list_length(doubtful) + 1));
		int			k = 0;

		argv[k++] = "DEL";
		foreach(lc, doubtful)
		{
			argv[k++] = ((Reservation *) lfirst(lc))->keys.stock;
			argv[k++] = ((Reservation *) lfirst(lc))->keys.reserved;
		}
		fs_redis_free(fs_redis_command(k, argv, NULL, false));
	}
	fs_redis_cleanup_end();
}

/* Drop the Redis keys of products whose truth this transaction changed. */
static void
drop_dirty_keys(void)
{
	int			n = list_length(dirty);
	const char **argv = palloc(sizeof(char *) * (2 * n + 1));
	int			k = 0;
	ListCell   *lc;

	argv[k++] = "DEL";
	foreach(lc, dirty)
	{
		argv[k++] = ((ProductKeys *) lfirst(lc))->stock;
		argv[k++] = ((ProductKeys *) lfirst(lc))->reserved;
	}
	fs_redis_free(fs_redis_command(k, argv, NULL, true));
}

/*
 * At backend exit, tell Redis about the commits it has not heard of yet (best
 * effort: what is left, the worker settles).  The decrement script with no
 * item does only that.
 */
static void
flush_settles_at_exit(int code, Datum arg)
{
	int			n = settle_count;
	const char **argv;
	int			k = 0;

	if (n == 0)
		return;
	argv = palloc(sizeof(char *) * (2 * n + 3));
	for (int i = 0; i < n; i++)
		argv[k++] = SETTLE(i)->reserved;
	argv[k++] = "0";
	argv[k++] = "";
	argv[k++] = psprintf("%d", n);
	for (int i = 0; i < n; i++)
		argv[k++] = SETTLE(i)->txn;
	fs_redis_cleanup_begin();
	fs_redis_free(fs_redis_script(&fs_script_decrement, n, k, argv, NULL, false));
	fs_redis_cleanup_end();
	settle_count = 0;
}

/*
 * At commit: remember this transaction's reservations, one per product (a
 * product decremented twice has two records with one entry in Redis).
 * Compares only with what this call added: O(r^2) in the transaction's own
 * products, never in the ring's length.
 */
static void
remember_settles(void)
{
	int			first = settle_count;
	ListCell   *lc;

	foreach(lc, reservations)
	{
		Reservation *r = lfirst(lc);
		bool		seen = false;

		for (int i = first; i < settle_count && !seen; i++)
			seen = strcmp(SETTLE(i)->reserved, r->keys.reserved) == 0;
		if (seen || settle_count == FS_SETTLE_RING || strlen(r->keys.reserved) >= FS_SETTLE_KEY)
			continue;
		strcpy(SETTLE(settle_count)->reserved, r->keys.reserved);
		strcpy(SETTLE(settle_count)->txn, txn_ident);
		settle_count++;
	}
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
			if (reservations != NIL || dirty != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed flashsale stock"),
						 errdetail("Its reservations in Redis are bound to this session."),
						 errhint("Commit or roll back the transaction instead.")));
			break;
		case XACT_EVENT_COMMIT:
			/* durable already: only remember what Redis is to be told later */
			foreach(lc, dirty)
				fs_soldout_forget(((ProductKeys *) lfirst(lc))->soldout);
			remember_settles();
			forget_transaction();
			break;
		case XACT_EVENT_ABORT:
			undo_reservations(reservations);
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
	List	   *undo = NIL;

	if (reservations == NIL)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, reservations)
		{
			Reservation *r = lfirst(lc);

			if (r->subid == mySubid)
				r->subid = parentSubid;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, reservations)
		{
			Reservation *r = lfirst(lc);

			if (r->subid == mySubid)
			{
				undo = lappend(undo, r);
				reservations = foreach_delete_current(reservations, lc);
			}
		}
		undo_reservations(undo);
	}
}

void
fs_stock_init(void)
{
	RegisterXactCallback(stock_xact_callback, NULL);
	RegisterSubXactCallback(stock_subxact_callback, NULL);
}

static void
ensure_memory(void)
{
	if (xact_cxt == NULL)
	{
		xact_cxt = AllocSetContextCreate(TopMemoryContext, "flashsale stock transaction",
										 ALLOCSET_SMALL_SIZES);
		settle_ring = MemoryContextAlloc(TopMemoryContext, sizeof(Settle) * FS_SETTLE_RING);
	}
	if (!exit_hook)
	{
		before_shmem_exit(flush_settles_at_exit, (Datum) 0);
		exit_hook = true;
	}
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

/* ---- reload ---- */

int64
fs_stock_own_units(int64 product)
{
	int64		units = 0;
	ListCell   *lc;

	foreach(lc, reservations)
	{
		Reservation *r = lfirst(lc);

		if (r->product == product && !r->uncertain)
			units += r->qty;
	}
	return units;
}

/*
 * Load a product Redis does not know, under its lock in exclusive mode.  The
 * caller's share lock on it, if taken by the current call, was released.
 */
void
fs_stock_reload(int64 product)
{
	LOCKTAG		tag;
	int64		truth;
	int64		own;
	const char *argv[5];
	FsReply *r;

	stock_locktag(&tag, product);
	lock_product(product, ExclusiveLock);

	if (!fs_stock_truth(product, &truth))
	{
		fs_lock_release_mode(&tag, ExclusiveLock);
		unknown_product(product);
	}
	if (truth < 0 || truth > FS_MAX_STOCK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("product %lld has %lld units left in the database", (long long) product,
						(long long) truth),
				 errdetail("Stock figures must lie between 0 and 2^53 - 1.")));

	own = fs_stock_own_units(product);
	argv[0] = fs_stock_key(product);
	argv[1] = fs_reserved_key(argv[0]);
	argv[2] = psprintf("%lld", (long long) truth);
	argv[3] = own > 0 ? current_txn() : "";
	argv[4] = psprintf("%lld", (long long) own);
	r = fs_redis_script(&fs_script_reload, 2, 5, argv, NULL, true);
	fs_redis_free(r);
	fs_soldout_forget(fs_soldout_key(argv[0]));

	fs_lock_release_mode(&tag, ExclusiveLock);
}

/* ---- decrement ---- */

/*
 * The decrement script's reply for n items: {1, left...n}, {0, item, left}
 * or {-1, item...}, all integers, items within 1..n.
 */
static bool
is_item(const FsReply *e, int n)
{
	return e->integer >= 1 && e->integer <= n;
}

static bool
decrement_reply_ok(const FsReply *r, int n)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
		return false;
	for (size_t i = 0; i < r->elements; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return false;
	switch (r->element[0]->integer)
	{
		case 1:
			return r->elements == (size_t) n + 1;
		case 0:
			return r->elements == 3 && is_item(r->element[1], n);
		case -1:
			if (r->elements > (size_t) n + 1)
				return false;
			for (size_t i = 1; i < r->elements; i++)
				if (!is_item(r->element[i], n))
					return false;
			return true;
		default:
			return false;
	}
}

typedef enum ReserveResult
{
	RESERVED,
	NOT_ENOUGH
} ReserveResult;

/*
 * Reserve qtys[i] units of products[i] for the calling transaction, all or
 * nothing.  On RESERVED, left[i] is what each has left; on NOT_ENOUGH,
 * *short_item and *short_left say which one fell short, and nothing changed.
 */
static ReserveResult
reserve(int n, const int64 *products, const int64 *qtys, int64 *left,
		int *short_item, int64 *short_left)
{
	bool	   *had_lock;
	LOCKTAG	   *tags;
	ProductKeys *keys;
	int			attempts = 0;
	MemoryContext old;

	/* named once, where the reservations made of them live */
	ensure_memory();
	xact_cxt_used = true;
	old = MemoryContextSwitchTo(xact_cxt);
	keys = palloc(sizeof(ProductKeys) * n);
	for (int i = 0; i < n; i++)
		name_keys(&keys[i], products[i]);
	MemoryContextSwitchTo(old);

	/* known sold out on this instance: no lock, no transaction id, no Redis */
	for (int i = 0; i < n; i++)
		if (fs_soldout_known(keys[i].soldout))
		{
			*short_item = i;
			*short_left = 0;
			return NOT_ENOUGH;
		}

	had_lock = palloc(sizeof(bool) * n);
	tags = palloc(sizeof(LOCKTAG) * n);
	(void) current_txn();

	for (int i = 0; i < n; i++)
	{
		stock_locktag(&tags[i], products[i]);
		had_lock[i] = fs_lock_held_by_me(&tags[i], ShareLock);
	}

	for (;;)
	{
		int			nsettle = Min(settle_count, FS_MAX_SETTLE);
		int			argc = 0;
		const char **argv = palloc(sizeof(char *) * (4 * n + 2 * nsettle + 3));
		List	   *mine = NIL;
		FsReply    *r;
		int64		status;

		for (int i = 0; i < n; i++)
			lock_product(products[i], ShareLock);

		/* recorded before the call: if it fails midway, abort gives back what it took */
		old = MemoryContextSwitchTo(xact_cxt);
		for (int i = 0; i < n; i++)
		{
			Reservation *res = palloc(sizeof(Reservation));

			res->product = products[i];
			res->keys = keys[i];
			res->qty = qtys[i];
			res->subid = GetCurrentSubTransactionId();
			res->uncertain = true;
			res->sent_before = fs_redis_sent;
			mine = lappend(mine, res);
			reservations = lappend(reservations, res);
		}
		MemoryContextSwitchTo(old);

		/* keys: stock, reservations, reservations to settle */
		for (int i = 0; i < n; i++)
			argv[argc++] = ((Reservation *) list_nth(mine, i))->keys.stock;
		for (int i = 0; i < n; i++)
			argv[argc++] = ((Reservation *) list_nth(mine, i))->keys.reserved;
		for (int i = 0; i < nsettle; i++)
			argv[argc++] = SETTLE(i)->reserved;
		argv[argc++] = psprintf("%d", n);
		argv[argc++] = txn_ident;
		for (int i = 0; i < n; i++)
			argv[argc++] = psprintf("%lld", (long long) qtys[i]);
		argv[argc++] = psprintf("%d", nsettle);
		for (int i = 0; i < nsettle; i++)
			argv[argc++] = SETTLE(i)->txn;

		r = fs_redis_script(&fs_script_decrement, 2 * n + nsettle, argc, argv, NULL, true);

		/* the settles went along: forget them */
		settle_head = (settle_head + nsettle) % FS_SETTLE_RING;
		settle_count -= nsettle;

		if (!decrement_reply_ok(r, n))
		{
			fs_redis_free(r);
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("unexpected reply from flashsale's Redis script \"decrement\"")));
		}
		status = r->element[0]->integer;

		if (status == 1)
		{
			ListCell   *lc;

			for (int i = 0; i < n; i++)
				left[i] = r->element[i + 1]->integer;
			foreach(lc, mine)
				((Reservation *) lfirst(lc))->uncertain = false;
			fs_redis_free(r);
			return RESERVED;
		}

		/* nothing was taken: forget the records, let go of new locks */
		{
			ListCell   *lc;

			foreach(lc, reservations)
				if (list_member_ptr(mine, lfirst(lc)))
					reservations = foreach_delete_current(reservations, lc);
		}
		for (int i = 0; i < n; i++)
			if (!had_lock[i])
				fs_lock_release_mode(&tags[i], ShareLock);

		if (status == 0)
		{
			*short_item = (int) r->element[1]->integer - 1;
			*short_left = r->element[2]->integer;
			fs_redis_free(r);
			if (*short_left <= 0)
				fs_soldout_mark(((Reservation *) list_nth(mine, *short_item))->keys.soldout);
			return NOT_ENOUGH;
		}

		/* Redis does not know some products: load them all and try again */
		{
			int			nmissing = (int) r->elements - 1;
			int		   *missing = palloc(sizeof(int) * nmissing);

			for (int i = 0; i < nmissing; i++)
				missing[i] = (int) r->element[i + 1]->integer - 1;
			fs_redis_free(r);
			if (++attempts > 3)
				ereport(ERROR,
						(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
						 errmsg("product %lld keeps disappearing from Redis",
								(long long) products[missing[0]]),
						 errhint("Check Redis' maxmemory-policy: stock keys must not be evicted.")));
			for (int i = 0; i < nmissing; i++)
				fs_stock_reload(products[missing[i]]);
		}
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

	/* no reservation of it may be in flight while its truth changes */
	lock_product(product, ExclusiveLock);
	values[0] = Int64GetDatum(product);
	values[1] = Int64GetDatum(qty);
	fs_spi_connect();
	fs_spi_run(&q_lock_row, values, NULL, false);
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

	/* share mode, like decrementers: a reload waits until this commits */
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

	qty = -qty;
	record_sales(1, &product, &qty);
	mark_dirty(product);
	PG_RETURN_INT64(left - qty);
}

/*
 * What Redis holds of a product, without reloading: {units left or nil,
 * [transaction, units, ...]}.  Free the reply with fs_redis_free.
 */
FsReply *
fs_stock_info(int64 product)
{
	char	   *stock_key = fs_stock_key(product);
	const char *argv[] = {stock_key, fs_reserved_key(stock_key)};
	FsReply    *r = fs_redis_script(&fs_script_info, 2, 2, argv, NULL, true);
	bool		ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		(r->element[0]->type == REDIS_REPLY_STRING || r->element[0]->type == REDIS_REPLY_NIL) &&
		r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements % 2 == 0;

	for (size_t i = 0; ok && i < r->element[1]->elements; i++)
		ok = r->element[1]->element[i]->type == REDIS_REPLY_STRING;
	if (!ok)
	{
		fs_redis_free(r);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("unexpected reply from flashsale's Redis script \"info\""),
				 errdetail("Redis at %s, product %lld.", fs_redis_address(), (long long) product)));
	}
	return r;
}

Datum
fs_stock_level(PG_FUNCTION_ARGS)
{
	int64		product;

	fs_require_arg(fcinfo, 0, "product_id");
	product = PG_GETARG_INT64(0);
	ensure_memory();
	for (int attempt = 0;; attempt++)
	{
		FsReply *r = fs_stock_info(product);

		if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			r->element[0]->type == REDIS_REPLY_STRING)
		{
			int64		left = strtoll(r->element[0]->str, NULL, 10);

			fs_redis_free(r);
			PG_RETURN_INT64(left);
		}
		fs_redis_free(r);
		if (attempt > 0)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("product %lld disappeared from Redis right after its reload",
							(long long) product)));
		fs_stock_reload(product);
	}
}

/*
 * stock_redis(product_id) -> (redis_left, reserved_in_flight): what Redis
 * holds, without reloading.  Reservations of this instance count only while
 * their transaction is in progress; other instances' count as in flight.
 */
Datum
fs_stock_redis(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	FsReply *r;
	int64		reserved = 0;
	char		mine[32];

	fs_require_arg(fcinfo, 0, "product_id");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	snprintf(mine, sizeof(mine), "%llu:", (unsigned long long) GetSystemIdentifier());
	r = fs_stock_info(PG_GETARG_INT64(0));
	if (r->element[0]->type == REDIS_REPLY_STRING)
		values[0] = Int64GetDatum(strtoll(r->element[0]->str, NULL, 10));
	else
		nulls[0] = true;
	for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2)
	{
		const char *txn = r->element[1]->element[i]->str;
		int64		units = strtoll(r->element[1]->element[i + 1]->str, NULL, 10);

		if (strncmp(txn, mine, strlen(mine)) == 0)
		{
			FullTransactionId fxid = FullTransactionIdFromU64(strtoull(txn + strlen(mine), NULL, 10));

			if (!TransactionIdIsInProgress(XidFromFullTransactionId(fxid)))
				continue;
		}
		reserved += units;
	}
	fs_redis_free(r);
	values[1] = Int64GetDatum(reserved);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * reload_stock(product_id): drop what Redis holds of a product, now (not at
 * commit), so that its next use reloads it from the database truth.  Always
 * safe: a reload waits for every transaction with units of it in flight.
 */
Datum
fs_reload_stock(PG_FUNCTION_ARGS)
{
	int64		product;
	const char *argv[3];
	FsReply *r;
	bool		had;

	fs_require_arg(fcinfo, 0, "product_id");
	product = PG_GETARG_INT64(0);
	argv[0] = "DEL";
	argv[1] = fs_stock_key(product);
	argv[2] = fs_reserved_key(argv[1]);
	r = fs_redis_command(3, argv, NULL, true);
	had = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	fs_redis_free(r);
	PG_RETURN_BOOL(had);
}

/* stock_keys(product_id) -> (stock_key, reserved_key): the product's Redis keys here */
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
	values[1] = CStringGetTextDatum(fs_reserved_key(stock_key));
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
