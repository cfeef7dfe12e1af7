/*
 * owner.c: flashsale's own work runs as the owner of its tables.
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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

/* the owner, remembered for the schema OID it was read for */
static Oid	owner_nsp = InvalidOid;
static Oid	owner = InvalidOid;

/*
 * The extension's owner (the superuser who created it), read from
 * pg_extension when flashsale's schema is not the one seen last (the
 * extension was recreated): one syscache look-up per call otherwise.
 */
Oid
fs_owner(void)
{
	Oid			nsp = get_namespace_oid("flashsale", false);

	if (nsp != owner_nsp || !OidIsValid(owner))
	{
		Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tup;

		ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
					CStringGetDatum("flashsale"));
		scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
		tup = systable_getnext(scan);
		if (!HeapTupleIsValid(tup))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension \"flashsale\" is not installed in this database"),
					 errhint("Run CREATE EXTENSION flashsale.")));
		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
		owner_nsp = nsp;
	}
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
