/*
 * errors.c: the one table that maps flashsale's outcomes to status text,
 * SQLSTATE and message.  try_* functions return the text; the raising
 * variants report the error from this table.
 */
#include "flashsale.h"

#include "fmgr.h"
#include "utils/elog.h"

typedef struct FsStatusInfo
{
	const char *name;			/* what try_* returns */
	int			sqlstate;		/* what the raising variant reports */
	const char *message;		/* printf format taking the coupon id */
	const char *hint;
} FsStatusInfo;

static const FsStatusInfo fs_status_table[FS_STATUS_COUNT] = {
	[FS_ISSUED] = {"issued", 0, NULL, NULL},
	[FS_ALREADY_ISSUED] = {"already_issued", ERRCODE_FS_ALREADY_ISSUED,
		"member already holds the most units of coupon %lld allowed",
	"Each member may hold at most the coupon's per_member_limit units."},
	[FS_SOLD_OUT] = {"sold_out", ERRCODE_FS_SOLD_OUT,
		"coupon %lld is sold out",
	"A cancelled unit returns to the pool and can be issued again."},
	[FS_NOT_ACTIVE] = {"not_active", ERRCODE_FS_NOT_ACTIVE,
		"coupon %lld is not active",
	"A coupon can be issued from its starts_at up to (not including) its ends_at."},
	[FS_NOT_FOUND] = {"not_found", ERRCODE_FS_NOT_FOUND,
		"coupon %lld does not exist",
	NULL},
};

const char *
fs_status_name(FsStatus status)
{
	Assert(status >= 0 && status < FS_STATUS_COUNT);
	return fs_status_table[status].name;
}

void
fs_raise_status(FsStatus status, int64 member_id, int64 coupon_id)
{
	const FsStatusInfo *info = &fs_status_table[status];

	Assert(status != FS_ISSUED);
	ereport(ERROR,
			(errcode(info->sqlstate),
			 errmsg_internal(info->message, (long long) coupon_id),
			 errdetail("Member %lld, status %s.", (long long) member_id, info->name),
			 info->hint ? errhint("%s", info->hint) : 0));
	pg_unreachable();
}

/*
 * Arguments are never silently NULL: the functions are not STRICT so that a
 * NULL is reported (22004) instead of quietly returning NULL.
 */
void
fs_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
}
