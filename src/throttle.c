/*
 * throttle.c: rate limits and double-submit guards from SQL, shared by every
 * session: throttle() in Redis (every instance using the same Redis and key
 * prefix), throttle_local() in this instance's shared memory
 * (throttle_local.c), once() in Redis.
 *
 * The limit.  GCRA with redis-cell's semantics (CL.THROTTLE key max_burst
 * count period quantity): a burst of max_burst + 1, then count per period.
 * Each key keeps one value, its theoretical arrival time; the emission
 * interval T = period / count, the tolerance T x (max_burst + 1).  throttle()
 * runs src/lua/throttle.lua, one EVALSHA, with the time taken from Redis
 * (TIME inside the script): no client's clock is ever compared with
 * another's, so instances whose clocks disagree still share one limit
 * exactly, and the script's atomicity makes it exact under any concurrency.
 * Figures are microseconds; increments are rounded up and T must be at least
 * 1 us (a million a second per key).
 *
 * Bound to the transaction where asked.  With refund_on_rollback, an
 * admission is remembered until the transaction ends: a rollback, or the
 * rollback of the savepoint it was made under, gives its increment back (a
 * business limit, "3 orders per member per minute", should not count orders
 * that failed): the part of it still ahead of now, since the part already
 * past was paid for by time and later admissions may have used it.  Without it the attempt counts whatever happens (abuse
 * protection).  once(key, ttl) is always bound: a rolled-back transaction
 * releases the key, if it is still this call's, so that the retry passes.
 * The give-backs run in the abort callbacks, within redis.c's fixed
 * clean-up deadline, stopping at the first failure; an admission whose reply
 * never came (the call was cancelled or timed out), a backend that crashed,
 * or a give-back Redis was not told in time all keep counting: a limit
 * errs on the side of admitting fewer, never more.  A transaction with
 * something to give back cannot be prepared (0A000): another backend would
 * decide its outcome.
 *
 * Keys.  "<key_prefix>throttle:{<length>:<key>}" and
 * "<key_prefix>once:{<length>:<key>}", as Redis locks' keys: the length
 * makes them unambiguous, the braces a Redis Cluster hash tag, and every
 * script touches one key.
 *
 * Redis down: SQLSTATE class 08 within flashsale.redis_connect_timeout, or,
 * with flashsale.throttle_fail_open (a superuser's setting, off by default),
 * throttle() allows (remaining and reset_after NULL: the caller can tell)
 * and once() answers true, as Stripe's limiters do.
 */
#include "flashsale.h"

#include <math.h>
#include <hiredis/hiredis.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(fs_throttle);
PG_FUNCTION_INFO_V1(fs_throttle_local);
PG_FUNCTION_INFO_V1(fs_once);

/* a limit or ttl may span up to 2^50 us (35 years) */
#define MAX_SPAN_US ((double) (INT64CONST(1) << 50))

/* flashsale.throttle_fail_open */
static bool fail_open = false;

/* ---- what a rollback gives back ---- */

typedef enum PendingKind
{
	PENDING_THROTTLE,			/* a throttle() admission: its increment */
	PENDING_LOCAL,				/* a throttle_local() admission: its increment */
	PENDING_ONCE				/* a once() key: released if still its token */
} PendingKind;

typedef struct Pending
{
	PendingKind kind;
	SubTransactionId subid;
	Oid			db;				/* PENDING_LOCAL */
	char	   *key;			/* the Redis key, or throttle_local's key */
	int64		increment;
	int64		tat;			/* the TAT the admission left */
	char	   *token;			/* PENDING_ONCE */
} Pending;

/* in TopTransactionContext; NIL between transactions */
static List *pending = NIL;

static Pending *
new_pending(PendingKind kind, const char *key)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	Pending    *p = palloc0(sizeof(Pending));

	p->kind = kind;
	p->key = pstrdup(key);
	MemoryContextSwitchTo(old);
	return p;
}

/* Forget p, made by new_pending but not needed (nothing to give back). */
static void
drop_pending(Pending *p)
{
	if (p == NULL)
		return;
	pfree(p->key);
	if (p->token)
		pfree(p->token);
	pfree(p);
}

/* Remember p (made by new_pending) for the current (sub)transaction. */
static void
add_pending(Pending *p)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	p->subid = GetCurrentSubTransactionId();
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

/*
 * After an admission: remember p (refund_on_rollback) when the call was
 * allowed and took something, else forget it.
 */
static void
keep_admission(Pending *p, const FsGcra *g, const FsGcraResult *r)
{
	if (p && r->allowed && g->increment > 0)
	{
		p->increment = g->increment;
		p->tat = r->tat;
		add_pending(p);
	}
	else
		drop_pending(p);
}

/* Give p back (abort callbacks: nothing may throw). */
static void
give_back(Pending *p)
{
	char		inc[32],
				tat[32];
	const char *argv[3];

	switch (p->kind)
	{
		case PENDING_LOCAL:
			fs_throttle_local_refund(p->db, p->key, p->increment, p->tat);
			break;
		case PENDING_THROTTLE:
			snprintf(inc, sizeof(inc), INT64_FORMAT, p->increment);
			snprintf(tat, sizeof(tat), INT64_FORMAT, p->tat);
			argv[0] = p->key;
			argv[1] = inc;
			argv[2] = tat;
			fs_redis_free(fs_redis_script(&fs_script_throttle_refund, 1, 3, argv, NULL, false));
			break;
		case PENDING_ONCE:
			argv[0] = p->key;
			argv[1] = p->token;
			fs_redis_free(fs_redis_script(&fs_script_once_release, 1, 2, argv, NULL, false));
			break;
	}
}

/* Give back what (sub)transaction subid holds (InvalidSubTransactionId: all). */
static void
give_back_all(SubTransactionId subid)
{
	ListCell   *lc;

	fs_redis_cleanup_begin();
	foreach(lc, pending)
	{
		Pending    *p = lfirst(lc);

		if (subid != InvalidSubTransactionId && p->subid != subid)
			continue;
		give_back(p);
		pending = foreach_delete_current(pending, lc);
	}
	fs_redis_cleanup_end();
}

static void
throttle_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (pending != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that holds a refundable throttle admission "
								"or a once() key"),
						 errdetail("They are given back if the transaction rolls back, which this session "
								   "must see."),
						 errhint("Commit or roll back the transaction instead, or throttle without "
								 "refund_on_rollback.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PREPARE:
			pending = NIL;		/* the memory goes with the transaction */
			break;
		case XACT_EVENT_ABORT:
			give_back_all(InvalidSubTransactionId);
			pending = NIL;
			break;
		default:
			break;
	}
}

static void
throttle_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
		give_back_all(mySubid);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		foreach(lc, pending)
		{
			Pending    *p = lfirst(lc);

			if (p->subid == mySubid)
				p->subid = parentSubid;
		}
}

/*
 * Called from _PG_init, before the files whose abort callbacks read a late
 * reply on the command connection (redis_locks.c): callbacks run newest
 * first, so this file's give-backs come after them.
 */
void
fs_throttle_init(void)
{
	DefineCustomBoolVariable("flashsale.throttle_fail_open",
							 "When Redis cannot be reached, throttle() allows and once() answers true.",
							 "Off: they raise an error of SQLSTATE class 08.",
							 &fail_open, false, PGC_SUSET, 0, NULL, NULL, NULL);
	fs_shmem_define_size("flashsale.max_throttle_keys",
						 "Most keys throttle_local() keeps in this instance's shared memory.",
						 "Keys back to their full burst go first, then the least recently used.",
						 &fs_max_throttle_keys);
	RegisterXactCallback(throttle_xact_callback, NULL);
	RegisterSubXactCallback(throttle_subxact_callback, NULL);
}

/* ---- arguments ---- */

static char *
limit_key(FunctionCallInfo fcinfo)
{
	char	   *key;
	size_t		len;

	fs_require_arg(fcinfo, 0, "key");
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	len = strlen(key);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key must not be empty")));
	if (len > FS_THROTTLE_KEY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("key is too long"),
				 errdetail("It is %zu bytes long; the limit is %d.", len, FS_THROTTLE_KEY_MAX)));
	return key;
}

/* An interval in microseconds (a month as 30 days, as interval comparison does). */
static double
interval_us(const Interval *i)
{
	return ((double) i->month * DAYS_PER_MONTH + (double) i->day) * (double) USECS_PER_DAY
		+ (double) i->time;
}

static void
bad_argument(const char *msg, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg_internal("%s", msg),
			 detail ? errdetail_internal("%s", detail) : 0));
}

/*
 * The limit of throttle(key, max_burst, count, period, quantity, ...) in
 * microseconds; every argument is checked before anything is asked.
 */
static void
limit_args(FunctionCallInfo fcinfo, FsGcra *g, int64 *limit, bool *refund)
{
	int64		max_burst,
				count,
				quantity;
	double		period;

	fs_require_arg(fcinfo, 1, "max_burst");
	fs_require_arg(fcinfo, 2, "count");
	fs_require_arg(fcinfo, 3, "period");
	fs_require_arg(fcinfo, 4, "quantity");
	fs_require_arg(fcinfo, 5, "refund_on_rollback");
	max_burst = PG_GETARG_INT64(1);
	count = PG_GETARG_INT64(2);
	period = interval_us(PG_GETARG_INTERVAL_P(3));
	quantity = PG_GETARG_INT64(4);
	*refund = PG_GETARG_BOOL(5);

	if (max_burst < 0)
		bad_argument("max_burst must not be negative", NULL);
	if (count < 1)
		bad_argument("count must be at least 1", NULL);
	if (!(period > 0))
		bad_argument("period must be positive", NULL);
	if (quantity < 0)
		bad_argument("quantity must not be negative", NULL);
	g->interval = period / (double) count;
	if (g->interval < 1.0)
		bad_argument("the rate is above 1000000 a second",
					 "throttle counts in microseconds: count / period can be at most one per microsecond.");
	if (g->interval * ((double) max_burst + 1.0) > MAX_SPAN_US)
		bad_argument("the limit spans more than 35 years",
					 "period / count x (max_burst + 1) must be at most 2^50 microseconds.");
	g->tolerance = (int64) ceil(g->interval * ((double) max_burst + 1.0));
	/* a quantity above the burst can never be allowed: any increment above the tolerance says so */
	g->increment = quantity > max_burst + 1 ? g->tolerance + 1
		: (int64) ceil(g->interval * (double) quantity);
	*limit = max_burst + 1;
}

static Interval *
us_interval(int64 us)
{
	Interval   *i = palloc0(sizeof(Interval));

	i->time = us;
	return i;
}

/* The one row of throttle() and throttle_local(); r NULL: failed open. */
static Datum
limit_row(FunctionCallInfo fcinfo, int64 limit, const FsGcraResult *r)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	values[0] = BoolGetDatum(r == NULL || r->allowed);
	values[1] = Int64GetDatum(limit);
	if (r == NULL)
		nulls[2] = nulls[3] = nulls[4] = true;
	else
	{
		values[2] = Int64GetDatum(r->remaining);
		nulls[3] = r->retry_after < 0;
		if (!nulls[3])
			values[3] = IntervalPGetDatum(us_interval(r->retry_after));
		values[4] = IntervalPGetDatum(us_interval(r->reset_after));
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* ---- Redis calls, failing open when asked ---- */

typedef struct RedisCall
{
	FsScript   *script;			/* NULL: a plain command */
	int			nkeys;
	int			argc;
	const char **argv;
	FsReply    *reply;
} RedisCall;

static void
run_call(void *arg)
{
	RedisCall  *c = arg;

	c->reply = c->script ? fs_redis_script(c->script, c->nkeys, c->argc, c->argv, NULL, true)
		: fs_redis_command(c->argc, c->argv, NULL, true);
}

/*
 * The call's reply, or NULL when Redis could not be reached and
 * flashsale.throttle_fail_open is on (only then is the call run in a
 * subtransaction, so that the error can be caught).
 */
static FsReply *
call_redis(RedisCall *c)
{
	ErrorData  *edata;

	if (!fail_open)
	{
		run_call(c);
		return c->reply;
	}
	edata = fs_try_subxact(run_call, c);
	if (edata == NULL)
		return c->reply;
	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION)
		ReThrowError(edata);
	elog(DEBUG1, "flashsale: failing open: %s", edata->detail ? edata->detail : edata->message);
	FreeErrorData(edata);
	return NULL;
}

/* "<key_prefix><kind>:{<length>:<key>}" */
static char *
redis_key(const char *kind, const char *key)
{
	return psprintf("%s%s:{%zu:%s}", fs_key_prefix ? fs_key_prefix : "", kind, strlen(key), key);
}

static void
bad_reply(const char *script)
{
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("unexpected reply from flashsale's Redis script \"%s\"", script)));
}

/* ---- the SQL functions ---- */

/*
 * throttle(key, max_burst, count, period, quantity DEFAULT 1,
 *          refund_on_rollback DEFAULT false)
 *   -> (allowed, limit, remaining, retry_after, reset_after)
 */
Datum
fs_throttle(PG_FUNCTION_ARGS)
{
	char	   *key = limit_key(fcinfo);
	FsGcra		g;
	int64		limit;
	bool		refund;
	char		tolerance[32],
				increment[32];
	const char *argv[4];
	RedisCall	call = {&fs_script_throttle, 1, 3, argv, NULL};
	Pending    *p = NULL;
	FsReply    *reply;
	const FsReply *x;
	FsGcraResult r;
	int64		d,
				now = 0;

	limit_args(fcinfo, &g, &limit, &refund);
	argv[0] = redis_key("throttle", key);
	snprintf(tolerance, sizeof(tolerance), INT64_FORMAT, g.tolerance);
	snprintf(increment, sizeof(increment), INT64_FORMAT, g.increment);
	argv[1] = tolerance;
	argv[2] = increment;
	if (refund)
	{
		argv[3] = "now";		/* a refund needs the TAT in Redis' time */
		call.argc = 4;
		p = new_pending(PENDING_THROTTLE, argv[0]);	/* before: nothing can fail after the reply */
	}

	reply = call_redis(&call);
	if (reply == NULL)
	{
		drop_pending(p);
		return limit_row(fcinfo, limit, NULL);
	}
	/*
	 * d (allowed) or -1 - d (limited), d how far the key's TAT was ahead of
	 * Redis' now; {that, now} when asked for the time.  The figures follow
	 * from d; the TAT left is absolute only when now came too.
	 */
	x = reply;
	if (refund)
	{
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
			reply->element[1]->type != REDIS_REPLY_INTEGER)
			bad_reply("throttle");
		x = reply->element[0];
		now = reply->element[1]->integer;
	}
	if (x->type != REDIS_REPLY_INTEGER)
		bad_reply("throttle");
	d = x->integer >= 0 ? x->integer : -1 - x->integer;
	d += now;
	fs_gcra_step(&g, &d, now, &r);
	if (r.allowed != (x->integer >= 0))
		bad_reply("throttle");
	fs_redis_free(reply);
	keep_admission(p, &g, &r);
	fs_stat_limit(FS_LIM_THROTTLE, r.allowed);
	return limit_row(fcinfo, limit, &r);
}

/* throttle_local(...): the same, in this instance's shared memory */
Datum
fs_throttle_local(PG_FUNCTION_ARGS)
{
	char	   *key = limit_key(fcinfo);
	FsGcra		g;
	int64		limit;
	bool		refund;
	Pending    *p = NULL;
	FsGcraResult r;

	limit_args(fcinfo, &g, &limit, &refund);
	if (refund)
	{
		p = new_pending(PENDING_LOCAL, key);
		p->db = MyDatabaseId;
	}
	fs_throttle_local_admit(key, &g, &r);
	keep_admission(p, &g, &r);
	fs_stat_limit(FS_LIM_LOCAL, r.allowed);
	return limit_row(fcinfo, limit, &r);
}

/*
 * once(key, ttl) -> true for the first call with key within ttl, false for
 * repeats; a rollback of the calling transaction (or savepoint) releases it.
 */
Datum
fs_once(PG_FUNCTION_ARGS)
{
	static uint64 calls = 0;
	char	   *key = limit_key(fcinfo);
	double		ttl;
	char		ms[32];
	const char *argv[6];
	RedisCall	call = {NULL, 0, 6, argv, NULL};
	Pending    *p;
	FsReply    *reply;
	bool		first;

	fs_require_arg(fcinfo, 1, "ttl");
	ttl = interval_us(PG_GETARG_INTERVAL_P(1));
	if (!(ttl > 0))
		bad_argument("ttl must be positive", NULL);
	if (ttl > MAX_SPAN_US)
		bad_argument("ttl is longer than 35 years", NULL);
	snprintf(ms, sizeof(ms), "%.0f", ceil(ttl / 1000.0));

	p = new_pending(PENDING_ONCE, redis_key("once", key));
	p->token = MemoryContextStrdup(TopTransactionContext,
								   psprintf(UINT64_FORMAT ":%d:" INT64_FORMAT ":" UINT64_FORMAT,
											GetSystemIdentifier(), MyProcPid,
											(int64) MyStartTimestamp, ++calls));
	argv[0] = "SET";
	argv[1] = p->key;
	argv[2] = p->token;
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = ms;
	reply = call_redis(&call);
	if (reply == NULL)
	{
		drop_pending(p);
		PG_RETURN_BOOL(true);	/* failed open */
	}
	if (reply->type == REDIS_REPLY_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Redis refused once()'s SET"),
				 errdetail("Redis at %s: %s", fs_redis_address(), reply->str)));
	first = reply->type == REDIS_REPLY_STATUS;
	if (!first && reply->type != REDIS_REPLY_NIL)
		bad_reply("once");
	fs_redis_free(reply);
	if (first)
		add_pending(p);
	else
		drop_pending(p);
	fs_stat_limit(FS_LIM_ONCE, first);
	PG_RETURN_BOOL(first);
}
