/*
 * table.c: direct access to flashsale's own tables for the issuance hot path.
 *
 * Issuing a coupon reads three rows and writes two.  Through SPI each of
 * those is a query whose executor start-up costs more than the work itself,
 * so the hot path reads through the tables' indexes and writes the heap the
 * way logical replication's apply does (execReplication.c): one small
 * executor state, the tables' CHECK and NOT NULL constraints, every index,
 * and the tables' triggers.
 *
 * Foreign-key triggers are the one exception, and only while they are the
 * table's only triggers: member_coupon's check on flashsale.coupon would
 * share-lock the hot coupon row from every issuing transaction at once.
 * Issuers hold the coupon's guard lock instead (coupon.c), which a DELETE or
 * a key UPDATE of the coupon row takes exclusively, so the reference holds.
 * A table with triggers of its users fires all of them, the foreign-key
 * checks included.
 *
 * The caller holds the advisory lock that guards the rows it reads, so reads
 * use the latest snapshot, as foreign-key checks do.
 */
#include "flashsale.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class_d.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * Open flashsale.<name> (the caller runs as the extension's owner: see
 * owner.c; EXECUTE on the calling function was the privilege check).  The
 * relation's OID is remembered per name; a remembered OID that no longer
 * opens flashsale.<name> (the extension was recreated) is looked up again.
 */
#define FS_TABLE_CACHE 4

static struct
{
	const char *name;			/* a string constant of the caller's */
	Oid			relid;
	Oid			nsp;
}			table_oids[FS_TABLE_CACHE];

Relation
fs_table_open(const char *name, LOCKMODE lockmode)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	int			slot = -1;

	for (int i = 0; i < FS_TABLE_CACHE && slot < 0; i++)
		if (table_oids[i].name == name || table_oids[i].name == NULL)
			slot = i;
	/* (the OID may belong to something else by now: only a table is opened) */
	if (slot >= 0 && table_oids[slot].name == name &&
		get_rel_relkind(table_oids[slot].relid) == RELKIND_RELATION &&
		(rel = try_table_open(table_oids[slot].relid, lockmode)) != NULL)
	{
		if (strcmp(RelationGetRelationName(rel), name) == 0 &&
			RelationGetNamespace(rel) == table_oids[slot].nsp)
			goto opened;
		table_close(rel, lockmode);
	}

	nsp = get_namespace_oid("flashsale", false);
	relid = get_relname_relid(name, nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"flashsale.%s\" does not exist", name),
				 errhint("Run ALTER EXTENSION flashsale UPDATE, or recreate the extension.")));
	rel = table_open(relid, lockmode);
	if (slot >= 0)
	{
		table_oids[slot].name = name;
		table_oids[slot].relid = relid;
		table_oids[slot].nsp = nsp;
	}

opened:
	return rel;
}

/*
 * The sequence behind a column's nextval() default (a serial column), so
 * that a direct insert can draw its value: nextval_internal(seq, true).
 * Remembered for a few relations, forgotten on their relcache invalidation.
 */
#define FS_SERIAL_CACHE 4

static struct
{
	Oid			relid;
	AttrNumber	attnum;
	Oid			seqid;
}			serials[FS_SERIAL_CACHE];

static void
forget_serials(Datum arg, Oid relid)
{
	for (int i = 0; i < FS_SERIAL_CACHE; i++)
		if (relid == InvalidOid || serials[i].relid == relid)
			serials[i].relid = InvalidOid;
}

Oid
fs_table_serial(Relation rel, const char *column)
{
	static bool registered = false;
	AttrNumber	attnum = fs_table_attnum(rel, column);
	int			slot = -1;
	Node	   *expr;

	for (int i = 0; i < FS_SERIAL_CACHE; i++)
	{
		if (serials[i].relid == RelationGetRelid(rel) && serials[i].attnum == attnum)
			return serials[i].seqid;
		if (slot < 0 && serials[i].relid == InvalidOid)
			slot = i;
	}
	if (!registered)
	{
		CacheRegisterRelcacheCallback(forget_serials, (Datum) 0);
		registered = true;
	}
	expr = build_column_default(rel, attnum);
	if (expr && IsA(expr, FuncExpr) && ((FuncExpr *) expr)->funcid == F_NEXTVAL &&
		list_length(((FuncExpr *) expr)->args) == 1 &&
		IsA(linitial(((FuncExpr *) expr)->args), Const))
	{
		Oid			seqid = DatumGetObjectId(((Const *) linitial(((FuncExpr *) expr)->args))->constvalue);

		if (slot < 0)
			slot = 0;
		serials[slot].relid = RelationGetRelid(rel);
		serials[slot].attnum = attnum;
		serials[slot].seqid = seqid;
		return seqid;
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("flashsale.%s.%s has no sequence default", RelationGetRelationName(rel), column),
			 errhint("Recreate the extension, or restore the column's default.")));
}

/* Attribute number of a column of rel, by name. */
AttrNumber
fs_table_attnum(Relation rel, const char *column)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), column) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of relation \"flashsale.%s\" does not exist",
					column, RelationGetRelationName(rel))));
}

/* The table's primary key index. */
Oid
fs_table_pkey(Relation rel)
{
	Oid			index = fs_primary_key_index(rel);

	if (!OidIsValid(index))
		elog(ERROR, "flashsale: relation \"%s\" has no primary key",
			 RelationGetRelationName(rel));
	return index;
}

/*
 * Key "column = value" for a systable scan (heap attribute numbers; the scan
 * maps them to index columns).  Every key flashsale scans by is bigint or int.
 */
void
fs_table_key(ScanKey key, Relation rel, const char *column, Datum value)
{
	AttrNumber	attnum = fs_table_attnum(rel, column);
	Oid			type = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;

	ScanKeyInit(key, attnum, BTEqualStrategyNumber,
				type == INT8OID ? F_INT8EQ : F_INT4EQ, value);
}

/*
 * The one row of rel matching keys through index, seen by the latest
 * snapshot: its columns in values/nulls and its tid.  False if none.
 */
bool
fs_table_get(Relation rel, Oid index, ScanKey keys, int nkeys,
			 Datum *values, bool *nulls, ItemPointer tid)
{
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	SysScanDesc scan = systable_beginscan(rel, index, true, snapshot, nkeys, keys);
	HeapTuple	tuple = systable_getnext(scan);
	bool		found = HeapTupleIsValid(tuple);

	if (found)
	{
		heap_deform_tuple(tuple, RelationGetDescr(rel), values, nulls);
		if (tid)
			*tid = tuple->t_self;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * The row version at tid, if the latest snapshot sees it: a cheap way back to
 * a row whose current version the caller remembers.  tid may be stale (the
 * caller checks the key columns: the slot may hold another row by now, or
 * belong to a table since recreated).
 */
bool
fs_table_fetch(Relation rel, ItemPointer tid, Datum *values, bool *nulls)
{
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	bool		found = ItemPointerIsValid(tid) &&
		/* vacuum may have truncated the table since */
		ItemPointerGetBlockNumber(tid) < RelationGetNumberOfBlocks(rel) &&
		table_tuple_fetch_row_version(rel, tid, snapshot, slot);

	if (found)
	{
		int			natts = RelationGetDescr(rel)->natts;

		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(Datum) * natts);
		memcpy(nulls, slot->tts_isnull, sizeof(bool) * natts);
	}
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	return found;
}

/* Does the table have an enabled trigger of that name? */
bool
fs_table_has_trigger(Relation rel, const char *name)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
		if (strcmp(trigdesc->triggers[i].tgname, name) == 0 &&
			trigdesc->triggers[i].tgenabled != TRIGGER_DISABLED)
			return true;
	return false;
}

/* Does the table have triggers other than foreign-key checks? */
static bool
has_user_triggers(Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
		if (RI_FKey_trigger_type(trigdesc->triggers[i].tgfoid) == RI_TRIGGER_NONE)
			return true;
	return false;
}

/*
 * The table's CHECK constraints, compiled once per backend rather than once
 * per write (the executor compiles them for every new ResultRelInfo, which
 * costs more than the rest of a write).  Dropped when the table's relcache
 * entry is invalidated; a dropped set is freed at the end of the transaction,
 * as a writer of it may still be open.
 */
#define FS_CHECK_CACHE 4

typedef struct FsChecks
{
	Oid			relid;
	ExprState **exprs;
	MemoryContext cxt;
} FsChecks;

static FsChecks check_cache[FS_CHECK_CACHE];

static void
forget_checks(Datum arg, Oid relid)
{
	for (int i = 0; i < FS_CHECK_CACHE; i++)
		if (relid == InvalidOid || check_cache[i].relid == relid)
			check_cache[i].relid = InvalidOid;
}

static ExprState **
table_checks(Relation rel)
{
	static bool registered = false;
	TupleConstr *constr = rel->rd_att->constr;
	FsChecks   *entry = &check_cache[0];
	MemoryContext old;

	if (constr == NULL || constr->num_check == 0)
		return NULL;
	for (int i = 0; i < FS_CHECK_CACHE; i++)
	{
		if (check_cache[i].relid == RelationGetRelid(rel))
			return check_cache[i].exprs;
		if (check_cache[i].relid == InvalidOid)
			entry = &check_cache[i];
	}
	if (!registered)
	{
		CacheRegisterRelcacheCallback(forget_checks, (Datum) 0);
		registered = true;
	}
	if (entry->cxt)
		MemoryContextSetParent(entry->cxt, TopTransactionContext);
	entry->relid = InvalidOid;
	entry->cxt = AllocSetContextCreate(CacheMemoryContext, "flashsale checks",
									   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(entry->cxt);
	entry->exprs = palloc0(sizeof(ExprState *) * constr->num_check);
	for (int i = 0; i < constr->num_check; i++)
		if (constr->check[i].ccvalid)
			entry->exprs[i] = ExecInitExpr(expression_planner(stringToNode(constr->check[i].ccbin)),
										   NULL);
	MemoryContextSwitchTo(old);
	entry->relid = RelationGetRelid(rel);
	return entry->exprs;
}

/*
 * Set up to write rel (opened with RowExclusiveLock by fs_table_open).
 * skip_fk: the caller holds locks that keep rel's foreign keys satisfied,
 * so their check triggers need not fire when they are rel's only triggers.
 */
void
fs_writer_begin(FsWriter *w, Relation rel, bool skip_fk)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	w->rel = rel;
	w->estate = CreateExecutorState();
	w->estate->es_output_cid = GetCurrentCommandId(true);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	fs_init_range_table(w->estate, rte);

	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, rel, 1, NULL, 0);
	if (skip_fk && !has_user_triggers(rel))
		w->rri->ri_TrigDesc = NULL;
	w->rri->FS_RRI_CHECK_EXPRS = table_checks(rel);
	ExecOpenIndices(w->rri, false);
	w->slot = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(rel), &TTSOpsVirtual);
	AfterTriggerBeginQuery();
}

/* An open index of the table whose leading key columns are cols[0..n-1]. */
Relation
fs_writer_index(FsWriter *w, const char *const *cols, int n)
{
	for (int i = 0; i < w->rri->ri_NumIndices; i++)
	{
		Relation	index = w->rri->ri_IndexRelationDescs[i];
		Form_pg_index form = index->rd_index;
		bool		match = form->indnkeyatts >= n && index->rd_rel->relam == BTREE_AM_OID;

		for (int k = 0; match && k < n; k++)
			match = form->indkey.values[k] == fs_table_attnum(w->rel, cols[k]);
		if (match)
			return index;
	}
	elog(ERROR, "flashsale: relation \"%s\" has no index on (%s, ...)",
		 RelationGetRelationName(w->rel), cols[0]);
}

static TupleTableSlot *
fill_slot(FsWriter *w, const Datum *values, const bool *nulls)
{
	TupleTableSlot *slot = w->slot;
	int			natts = slot->tts_tupleDescriptor->natts;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
	return ExecStoreVirtualTuple(slot);
}

/* Insert a row: constraints, indexes (a duplicate key raises 23505), triggers. */
void
fs_writer_insert(FsWriter *w, const Datum *values, const bool *nulls)
{
	ExecSimpleRelationInsert(w->rri, w->estate, fill_slot(w, values, nulls));
}

/*
 * Replace the row at tid, whose current version the caller's lock protects;
 * tid is set to the new version.  False if the row was changed meanwhile by
 * someone who did not take that lock (a direct UPDATE): the caller reads the
 * row again.  A table with triggers goes through the executor's own update,
 * which raises an error in that case instead.
 */
bool
fs_writer_update(FsWriter *w, ItemPointer tid, const Datum *values, const bool *nulls)
{
	TupleTableSlot *slot = fill_slot(w, values, nulls);
	Relation	rel = w->rel;

	if (w->rri->ri_TrigDesc == NULL &&
		!(rel->rd_att->constr && rel->rd_att->constr->has_generated_stored))
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		FsUpdateIndexes update_indexes;

		if (rel->rd_att->constr)
			ExecConstraints(w->rri, slot, w->estate);
		switch (table_tuple_update(rel, tid, slot, GetCurrentCommandId(true),
								   w->estate->es_snapshot, InvalidSnapshot, true,
								   &tmfd, &lockmode, &update_indexes))
		{
			case TM_Ok:
				break;
			case TM_Updated:
			case TM_Deleted:
				return false;
			default:
				elog(ERROR, "flashsale: unexpected outcome of an update of \"%s\"",
					 RelationGetRelationName(rel));
		}
		if (update_indexes != FS_UPDATE_NO_INDEXES && w->rri->ri_NumIndices > 0)
			list_free(fs_insert_update_index_tuples(w->rri, slot, w->estate, update_indexes));
	}
	else
	{
		EPQState	epq;
		TupleTableSlot *old = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(rel),
													 &TTSOpsVirtual);

		old->tts_tid = *tid;
		fs_epq_init(&epq, w->estate);
		ExecSimpleRelationUpdate(w->rri, w->estate, &epq, old, slot);
		EvalPlanQualEnd(&epq);
	}
	*tid = slot->tts_tid;
	return true;
}

/* Fire queued triggers, close everything; later reads of this transaction see the writes. */
void
fs_writer_end(FsWriter *w)
{
	AfterTriggerEndQuery(w->estate);
	ExecCloseResultRelations(w->estate);	/* what trigger firing opened */
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	CommandCounterIncrement();
}
