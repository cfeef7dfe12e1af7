/*
 * subxact.c: running a piece of work in a subtransaction, as PL/pgSQL's
 * EXCEPTION blocks do.
 *
 * Some errors are answers: a named lock's bounded wait that ran out is
 * "false", a product the sync pass could not settle is counted and skipped.
 * An error can only be caught safely if what it interrupted is rolled back,
 * locks, buffers and memory included; a subtransaction does exactly that.
 * The caller gets the error (copied out of the error context, the state
 * flushed) and decides: turn it into an answer, or re-throw it.
 */
#include "flashsale.h"

#include "access/xact.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/*
 * Run fn(arg) in a subtransaction.  NULL when it succeeded (the
 * subtransaction is committed into the caller's); otherwise the error, not
 * re-thrown, with the subtransaction rolled back, as PL/pgSQL's EXCEPTION
 * blocks do.  The caller decides whether to re-throw (ReThrowError).
 */
ErrorData *
fs_try_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}
