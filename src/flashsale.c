/*
 * flashsale.c: module entry point and GUCs.
 *
 * The library is meant to be in shared_preload_libraries (the background
 * worker needs that), but everything here also works when it is loaded on
 * demand by the first call of one of its functions.
 */
#include "flashsale.h"

#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

int			fs_lock_timeout_ms = 5000;
int			fs_coupon_stripes = 64;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("flashsale.lock_timeout",
							"Longest wait for one of flashsale's locks (0 waits forever).",
							"A wait that runs out raises SQLSTATE 55P03.",
							&fs_lock_timeout_ms,
							5000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flashsale.coupon_stripes",
							"Number of stripes a new coupon's quantity is split into.",
							"Each stripe has its own lock, so this many issuers of one "
							"coupon can commit in parallel. Capped at the coupon's quantity.",
							&fs_coupon_stripes,
							64, 1, 4096,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("flashsale");
}
