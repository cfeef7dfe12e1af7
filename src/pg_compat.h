/*
 * pg_compat.h: the one place where PostgreSQL versions differ.
 *
 * flashsale builds against PostgreSQL 15 (Debian 12), 17 (Debian 13) and
 * 18 (Debian unstable) from one source tree.  Every call whose signature or
 * name changed between them goes through a shim here, named for what it
 * does; the rest of the code never tests PG_VERSION_NUM.
 */
#ifndef FS_PG_COMPAT_H
#define FS_PG_COMPAT_H

#include "access/tableam.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/memutils.h"

/* pg_attribute_noreturn() gave way to a leading pg_noreturn in 18 */
#ifndef pg_attribute_noreturn
#define pg_attribute_noreturn() __attribute__((noreturn))
#endif

/* LockHeldByMe() gained "or a stronger mode" in 17 */
#if PG_VERSION_NUM >= 170000
#define fs_lock_held_by_me(tag, mode) LockHeldByMe((tag), (mode), false)
#else
#define fs_lock_held_by_me(tag, mode) LockHeldByMe((tag), (mode))
#endif

/* a relation's primary key index; 18 asks whether a deferrable one will do */
#if PG_VERSION_NUM >= 180000
#define fs_primary_key_index(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define fs_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/* a result relation's compiled CHECK constraints: renamed in 18 */
#if PG_VERSION_NUM >= 180000
#define FS_RRI_CHECK_EXPRS ri_CheckConstraintExprs
#else
#define FS_RRI_CHECK_EXPRS ri_ConstraintExprs
#endif

/* this backend's number among the PGPROCs: MyProcNumber since 17 */
#if PG_VERSION_NUM >= 170000
#define FS_MY_PROC_NUMBER ((int) MyProcNumber)
#else
#define FS_MY_PROC_NUMBER (MyProc->pgprocno)
#endif

/* the shared transaction-id counters: TransamVariables since 17 */
#if PG_VERSION_NUM >= 170000
#define FS_TRANSAM_VARIABLES TransamVariables
#else
#define FS_TRANSAM_VARIABLES ShmemVariableCache
#endif

/* a wait set that lives as long as the backend (no resource owner since 17) */
static inline WaitEventSet *
fs_create_wait_event_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

/*
 * An executor state for one relation as range table index 1.  Since 16 a
 * relation's entry points at its permission info, which the executor reads
 * (a constraint violation's error report asks which columns it may show);
 * flashsale checked privileges already: the info is never checked here.
 */
static inline void
fs_init_range_table(EState *estate, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
	RTEPermissionInfo *perminfo = addRTEPermissionInfo(&perminfos, rte);

	perminfo->requiredPerms = ACL_SELECT | ACL_INSERT | ACL_UPDATE;
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
}

/* which indexes an update must maintain: a bool before 16, then all / summarizing / none */
#if PG_VERSION_NUM >= 160000
typedef TU_UpdateIndexes FsUpdateIndexes;
#define FS_UPDATE_NO_INDEXES TU_None
#else
typedef bool FsUpdateIndexes;
#define FS_UPDATE_NO_INDEXES false
#endif

/* index entries for an updated row, as the executor's simple update makes them */
static inline List *
fs_insert_update_index_tuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate,
							  FsUpdateIndexes how)
{
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, true, false, NULL, NIL, how == TU_Summarizing);
#else
	return ExecInsertIndexTuples(rri, slot, estate, true, false, NULL, NIL);
#endif
}

/* an EvalPlanQual state with no plan of its own (the simple update's re-check) */
static inline void
fs_epq_init(EPQState *epq, EState *estate)
{
#if PG_VERSION_NUM >= 160000
	EvalPlanQualInit(epq, estate, NULL, NIL, -1, NIL);
#else
	EvalPlanQualInit(epq, estate, NULL, NIL, -1);
#endif
}

#endif							/* FS_PG_COMPAT_H */
