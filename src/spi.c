/*
 * spi.c: the one path every flashsale query takes.
 *
 * Each query is prepared once per backend and kept.  It runs with the latest
 * snapshot rather than the transaction's, as PostgreSQL's own foreign-key
 * checks do: flashsale reads counters and a member's units only while holding
 * the advisory lock that guards them, so the latest committed state is the
 * truth, under READ COMMITTED and REPEATABLE READ alike.
 *
 * Queries run as the extension's owner (owner.c): the caller's EXECUTE on
 * the flashsale function is what allowed them, not privileges on the
 * tables.  So every query text qualifies all it names — flashsale.<table>,
 * pg_catalog.<function>, OPERATOR(pg_catalog.<op>), parenthesised since
 * OPERATOR() has the precedence of "any other operator" — and nothing of
 * the caller's search_path can run in its place.
 */
#include "flashsale.h"

#include "utils/snapmgr.h"

void
fs_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "flashsale: SPI_connect failed");
}

void
fs_spi_finish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "flashsale: SPI_finish failed");
}

/*
 * Run a query (between fs_spi_connect and fs_spi_finish); returns the number
 * of rows it returned or processed.  Rows are read with fs_spi_get.
 */
uint64
fs_spi_run(FsQuery *query, Datum *values, const char *nulls, bool read_only)
{
	int			rc;
	FsUser		caller;

	fs_become_owner(&caller);
	if (query->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(query->sql, query->nargs, query->argtypes);

		if (plan == NULL)
			elog(ERROR, "flashsale: SPI_prepare failed for \"%s\": %s",
				 query->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "flashsale: SPI_keepplan failed");
		query->plan = plan;
	}

	rc = SPI_execute_snapshot(query->plan, values, nulls,
							  GetLatestSnapshot(), InvalidSnapshot,
							  read_only, true, 0);
	fs_restore_user(&caller);
	if (rc < 0)
		elog(ERROR, "flashsale: query failed: %s: \"%s\"",
			 SPI_result_code_string(rc), query->sql);
	return SPI_processed;
}

Datum
fs_spi_get(uint64 row, int col, bool *isnull)
{
	Assert(SPI_tuptable != NULL && row < SPI_processed);
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}
