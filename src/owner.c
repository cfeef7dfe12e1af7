/*
 * owner.c: flashsale's own work runs as the owner of its tables (and where
 * those tables are: fs_extension_table).
 *
 * The privilege model: EXECUTE on a flashsale function is the capability.
 * A buyer granted EXECUTE on decrement_stock or issue_coupon needs no
 * privilege on flashsale's tables, and holds none: it can sell a unit only
 * through the function, which keeps the invariants, never by writing a
 * ledger row or a coupon unit itself.  So every query flashsale runs
 * internally (spi.c) and the direct table access of coupon issuance
 * (coupon.c) switch to the extension's owner for their duration, as
 * PostgreSQL itself does for REFRESH MATERIALIZED VIEW and index
 * maintenance: SECURITY_LOCAL_USERID_CHANGE (no SET ROLE inside) and
 * SECURITY_RESTRICTED_OPERATION (no temporary objects, no session state).
 *
 * What runs as the owner never depends on the caller's search_path: every
 * table, function and operator of flashsale's internal SQL is qualified by
 * its schema (pg_catalog or flashsale), because a role that can create an
 * operator in a schema on that path could otherwise have it run as the
 * owner — a superuser (CREATE EXTENSION needs one).
 *
 * A transaction or subtransaction abort puts the caller's identity back by
 * itself (xact.c saves it at every start), so an error between the switch
 * and fs_restore_user() leaves nothing behind.
 */
#include "flashsale.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/*
 * The pg_class row of flashsale.<name>, from the syscache: its owner and
 * relfilenode.  Always current: a dropped and re-created extension is seen
 * at once (its schema may survive DROP EXTENSION, its tables do not).  The
 * answers are kept per backend until any pg_class or pg_namespace row
 * changes (the same invalidations the syscache itself obeys): the sale
 * asks three times per call.
 */
#define FS_TABLE_ROWS 4

typedef struct TableRow
{
	const char *name;			/* a string constant of the caller's */
	Oid			owner;
	Oid			filenode;
} TableRow;

static TableRow rows[FS_TABLE_ROWS];
static bool callbacks = false;

static void
forget_rows(Datum arg, int cacheid, uint32 hashvalue)
{
	memset(rows, 0, sizeof(rows));
}

void
fs_extension_table(const char *name, Oid *owner, Oid *filenode)
{
	Oid			relid;
	HeapTuple	tup;
	int			slot = -1;

	for (int i = 0; i < FS_TABLE_ROWS; i++)
	{
		if (rows[i].name != NULL && strcmp(rows[i].name, name) == 0)
		{
			if (owner)
				*owner = rows[i].owner;
			if (filenode)
				*filenode = rows[i].filenode;
			return;
		}
		if (slot < 0 && rows[i].name == NULL)
			slot = i;
	}
	if (!callbacks)
	{
		CacheRegisterSyscacheCallback(RELOID, forget_rows, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, forget_rows, (Datum) 0);
		callbacks = true;
	}

	relid = get_relname_relid(name, get_namespace_oid("flashsale", false));
	tup = OidIsValid(relid) ? SearchSysCache1(RELOID, ObjectIdGetDatum(relid)) : NULL;
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"flashsale.%s\" does not exist", name),
				 errhint("Run ALTER EXTENSION flashsale UPDATE, or recreate the extension.")));
	if (slot >= 0)
	{
		rows[slot].name = name;
		rows[slot].owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		rows[slot].filenode = ((Form_pg_class) GETSTRUCT(tup))->relfilenode;
	}
	if (owner)
		*owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	if (filenode)
		*filenode = ((Form_pg_class) GETSTRUCT(tup))->relfilenode;
	ReleaseSysCache(tup);
}

/* The extension's owner: the owner of the tables CREATE EXTENSION made. */
Oid
fs_owner(void)
{
	Oid			owner;

	fs_extension_table("coupon", &owner, NULL);
	return owner;
}

/* Become the extension's owner; fs_restore_user(saved) goes back. */
void
fs_become_owner(FsUser *saved)
{
	Oid			to = fs_owner();

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(to, saved->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
fs_restore_user(const FsUser *saved)
{
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
