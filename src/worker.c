/*
 * worker.c: the background worker that runs the sync pass (sync.c).
 *
 * Registered when flashsale is in shared_preload_libraries; connects to the
 * database named by flashsale.database; shows in pg_stat_activity with
 * backend_type "flashsale worker"; reloads its settings on SIGHUP; exits on
 * SIGTERM and is restarted by the postmaster after 5 s (also after a crash
 * restart).  It runs a pass at start (settling what a crash left behind),
 * then every flashsale.sync_interval, or at once on flashsale.sync_now().
 * Between passes it renews the watchdog leases of Redis locks
 * (redis_locks.c).  Everything one turn of its loop allocates outside a
 * transaction goes into a memory context reset at the next turn, so a
 * worker that runs for months does not grow.  Redis down: the worker keeps
 * running, retries with a backoff doubling from 1 s up to the interval, and
 * logs once per outage.  Its figures are in
 * shared memory, shown by the view flashsale.worker_status.
 */
#include "flashsale.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(fs_sync_now);
PG_FUNCTION_INFO_V1(fs_worker_status);
PG_FUNCTION_INFO_V1(fs_check_worker);

PGDLLEXPORT void fs_worker_main(Datum arg);

typedef struct FsWorkerState
{
	slock_t		mutex;
	pid_t		pid;			/* 0 when not running */
	TimestampTz started_at;
	TimestampTz last_start;
	TimestampTz last_end;
	int64		passes;
	FsSyncCounts last;			/* the last completed pass */
	FsSyncCounts total;			/* since the worker started */
	bool		redis_ok;
	bool		sync_requested; /* by sync_now() */
	TimestampTz last_error_at;
	char		last_error[256];
} FsWorkerState;

static FsWorkerState *state = NULL;

Size
fs_worker_shmem_size(void)
{
	return MAXALIGN(sizeof(FsWorkerState));
}

void
fs_worker_shmem_init(void)
{
	bool		found;

	state = ShmemInitStruct("flashsale worker", sizeof(FsWorkerState), &found);
	if (!found)
	{
		memset(state, 0, sizeof(*state));
		SpinLockInit(&state->mutex);
	}
}

/* Called from _PG_init when preloading. */
void
fs_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "flashsale");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "fs_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "flashsale worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "flashsale worker");
	RegisterBackgroundWorker(&worker);
}

static void
clear_pid(int code, Datum arg)
{
	fs_shmem_set_worker_latch(NULL);
	SpinLockAcquire(&state->mutex);
	state->pid = 0;
	SpinLockRelease(&state->mutex);
}

static void
add_counts(FsSyncCounts *to, const FsSyncCounts *c)
{
	to->products += c->products;
	to->reloaded += c->reloaded;
	to->allotments_returned += c->allotments_returned;
	to->units_returned += c->units_returned;
	to->drift_fixed += c->drift_fixed;
	to->ledger_rows_folded += c->ledger_rows_folded;
	to->errors += c->errors;
	to->busy += c->busy;
}

/*
 * One pass in a transaction of its own.  Returns false when Redis could not
 * be reached (the caller backs off), true otherwise.
 */
static bool
run_pass(bool *logged_outage)
{
	MemoryContext cxt = CurrentMemoryContext;
	FsSyncCounts c;
	volatile bool redis_ok = true;
	TimestampTz start = GetCurrentTimestamp();

	SpinLockAcquire(&state->mutex);
	state->last_start = start;
	SpinLockRelease(&state->mutex);

	PG_TRY();
	{
		bool		installed;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "flashsale: sync pass");
		installed = OidIsValid(get_extension_oid("flashsale", true));
		memset(&c, 0, sizeof(c));
		if (installed)
			fs_sync_all(&c);
		PopActiveSnapshot();
		CommitTransactionCommand();

		SpinLockAcquire(&state->mutex);
		state->last_end = GetCurrentTimestamp();
		state->passes++;
		state->last = c;
		add_counts(&state->total, &c);
		state->redis_ok = true;
		SpinLockRelease(&state->mutex);
		if (*logged_outage)
			ereport(LOG, (errmsg("flashsale worker: Redis is reachable again at %s",
								 fs_redis_address())));
		*logged_outage = false;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();

		redis_ok = ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION;
		SpinLockAcquire(&state->mutex);
		state->last_error_at = GetCurrentTimestamp();
		snprintf(state->last_error, sizeof(state->last_error), "%s%s%s", edata->message,
				 edata->detail ? " " : "", edata->detail ? edata->detail : "");
		state->redis_ok = redis_ok;
		SpinLockRelease(&state->mutex);

		/* once per outage, not once per retry */
		if (redis_ok || !*logged_outage)
			ereport(LOG,
					(errmsg("flashsale worker: sync pass failed: %s", edata->message),
					 edata->detail ? errdetail("%s", edata->detail) : 0,
					 redis_ok ? 0 : errhint("Retrying with a backoff; this is logged once per outage.")));
		if (!redis_ok)
			*logged_outage = true;
		FreeErrorData(edata);
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return redis_ok;
}

/* Was a pass asked for with sync_now()?  Clears the request. */
static bool
sync_requested_flag(void)
{
	bool		requested;

	SpinLockAcquire(&state->mutex);
	requested = state->sync_requested;
	state->sync_requested = false;
	SpinLockRelease(&state->mutex);
	return requested;
}

void
fs_worker_main(Datum arg)
{
	bool		logged_outage = false;
	long		backoff_ms = 0;
	TimestampTz next_pass = 0;
	TimestampTz next_idle = 0;
	bool		sync_requested = false;
	uint64		failovers = fs_shmem_failovers();
	TimestampTz last_pass = 0;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(fs_database, NULL, 0);
	/*
	 * The worker runs as a superuser: whatever search_path the database's
	 * settings give it, look in pg_catalog only (flashsale's queries also
	 * qualify every name; this is the second lock on the door).
	 */
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);

	SpinLockAcquire(&state->mutex);
	state->pid = MyProcPid;
	state->started_at = GetCurrentTimestamp();
	memset(&state->total, 0, sizeof(state->total));
	SpinLockRelease(&state->mutex);
	before_shmem_exit(clear_pid, (Datum) 0);
	fs_shmem_set_worker_latch(MyLatch);
	/* each turn of the loop allocates here, and it is reset at the next (as pg_cron does) */
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "flashsale worker loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		wait_ms;
		long		renew_ms;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		if (now >= next_pass || sync_requested)
		{
			sync_requested = false;
			last_pass = now;
			if (run_pass(&logged_outage))
			{
				backoff_ms = 0;
				wait_ms = fs_sync_interval_s * 1000L;
			}
			else
			{
				backoff_ms = backoff_ms ? Min(backoff_ms * 2, fs_sync_interval_s * 1000L) : 1000;
				wait_ms = backoff_ms;
			}
			next_pass = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
			/* a transaction's end leaves TopMemoryContext current */
			MemoryContextSwitchTo(loop_cxt);
		}

		/* between passes too: idle allotments back to the pool (shared memory and Redis only) */
		if (GetCurrentTimestamp() >= next_idle)
		{
			int64		units;
			int64		returned = fs_allot_return_idle(&units);

			SpinLockAcquire(&state->mutex);
			state->total.allotments_returned += returned;
			state->total.units_returned += units;
			SpinLockRelease(&state->mutex);
			next_idle = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													Max(fs_allotment_idle_ms / 2, 100));
		}

		/* the watchdog: renew the leases of Redis locks held by live backends */
		renew_ms = fs_redis_locks_renew();

		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_pass);
		wait_ms = Min(wait_ms, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_idle));
		if (renew_ms >= 0)
			wait_ms = Min(wait_ms, renew_ms);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a new interval applies from now */
			next_pass = Min(next_pass, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																  fs_sync_interval_s * 1000L));
		}
		if (sync_requested_flag())
			sync_requested = true;
		if (fs_shmem_failovers() != failovers)
		{
			/*
			 * A backend noticed a failover (or a cluster node that did not
			 * answer): the products it may have cost are checked at once,
			 * but not more than a pass a second (a node down makes every
			 * buyer's call notice it).
			 */
			TimestampTz soon = TimestampTzPlusMilliseconds(last_pass, 1000);

			failovers = fs_shmem_failovers();
			if (soon < next_pass)
			{
				ereport(LOG, (errmsg("flashsale: a Redis failover was noticed; a sync pass follows")));
				next_pass = soon;
			}
		}
	}
}

static pid_t
worker_pid(void)
{
	pid_t		pid = 0;

	if (state)
	{
		SpinLockAcquire(&state->mutex);
		pid = state->pid;
		SpinLockRelease(&state->mutex);
	}
	return pid;
}

/* sync_now(): wake the worker for a pass at once; false if it is not running. */
Datum
fs_sync_now(PG_FUNCTION_ARGS)
{
	pid_t		pid = worker_pid();
	PGPROC	   *proc = pid ? BackendPidGetProc(pid) : NULL;

	if (proc == NULL)
	{
		ereport(NOTICE,
				(errmsg("flashsale's background worker is not running"),
				 errhint(fs_preloaded ? "It is restarted a few seconds after it stops."
						 : "Add flashsale to shared_preload_libraries.")));
		PG_RETURN_BOOL(false);
	}
	SpinLockAcquire(&state->mutex);
	state->sync_requested = true;
	SpinLockRelease(&state->mutex);
	SetLatch(&proc->procLatch);
	PG_RETURN_BOOL(true);
}

/* The row behind the view flashsale.worker_status (none when not preloaded). */
Datum
fs_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	FsWorkerState s;
	Datum		v[18];
	bool		n[18] = {0};
	int			k = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (state == NULL)
		PG_RETURN_NULL();
	SpinLockAcquire(&state->mutex);
	s = *state;
	SpinLockRelease(&state->mutex);

#define TS(t) (n[k] = (t) == 0, v[k++] = TimestampTzGetDatum(t))
	n[k] = s.pid == 0;
	v[k++] = Int32GetDatum(s.pid);
	v[k++] = CStringGetTextDatum(fs_database);
	v[k++] = Int32GetDatum(fs_sync_interval_s);
	TS(s.started_at);
	TS(s.last_start);
	TS(s.last_end);
	v[k++] = Int64GetDatum(s.passes);
	v[k++] = Int64GetDatum(s.last.products);
	v[k++] = Int64GetDatum(s.total.allotments_returned);
	v[k++] = Int64GetDatum(s.total.units_returned);
	v[k++] = Int64GetDatum(s.total.drift_fixed);
	v[k++] = Int64GetDatum(s.total.reloaded);
	v[k++] = Int64GetDatum(s.total.ledger_rows_folded);
	v[k++] = Int64GetDatum(s.total.errors);
	v[k++] = Int64GetDatum(s.total.busy);
	v[k++] = BoolGetDatum(s.redis_ok);
	n[k] = s.last_error[0] == '\0';
	v[k++] = CStringGetTextDatum(s.last_error);
	TS(s.last_error_at);
#undef TS
	Assert(k == 18);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), v, n)));
}

/* Called by the install script: say when stock here will not be synced. */
Datum
fs_check_worker(PG_FUNCTION_ARGS)
{
	if (!fs_preloaded)
		ereport(WARNING,
				(errmsg("flashsale's background worker is not running"),
				 errdetail("flashsale is not in shared_preload_libraries: its functions work, but "
						   "nothing settles reservations left by crashed transactions or syncs "
						   "stock into tables."),
				 errhint("Add flashsale to shared_preload_libraries and restart; "
						 "flashsale.sync_stock() does the same pass by hand.")));
	else if (strcmp(get_database_name(MyDatabaseId), fs_database) != 0)
		ereport(WARNING,
				(errmsg("flashsale's background worker works in database \"%s\", not this one",
						fs_database),
				 errhint("Set flashsale.database, or call flashsale.sync_stock() here.")));
	PG_RETURN_VOID();
}
