/*
 * redis_call.c: flashsale.redis_call(VARIADIC text[]), one Redis command
 * from SQL, for operators (and the lock benchmark's spin-lock baseline).
 *
 * It runs on a connection of its own (redis.c's fs_redis_call_command), so
 * nothing an operator runs can redirect or jam the connection that stock
 * and locks use, or the one waiters listen on.  It still refuses, before
 * anything is sent, the commands that change the state of a connection or
 * of its database (SELECT, MULTI, SUBSCRIBE, CLIENT, ...): they would leave
 * its connection unlike the one flashsale opened, or (SWAPDB) move the
 * data flashsale relies on.  Only scalar replies are returned, as text.
 *
 * Anything in Redis can be done with it: nothing is granted to PUBLIC, and
 * the README says to grant it to no one you would not give Redis itself.
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(fs_redis_call);

/*
 * Commands redis_call refuses, before anything is sent: they change the
 * state of the connection they run on (its database, login, subscriptions,
 * transaction, replies, replication mode), or with SWAPDB what its database
 * holds.
 */
static const char *const state_commands[] = {
	"SELECT", "SWAPDB", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE",
	"PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR", "MULTI", "EXEC", "DISCARD", "WATCH",
	"UNWATCH", "CLIENT", "AUTH", "HELLO", "RESET", "QUIT", "SYNC", "PSYNC",
	"REPLCONF", "READONLY", "READWRITE", "ASKING"
};

static void
refuse_state_command(const char *command)
{
	for (int i = 0; i < lengthof(state_commands); i++)
		if (pg_strcasecmp(command, state_commands[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("redis_call cannot run %s", state_commands[i]),
					 errdetail("%s changes the state of the connection or of its database, "
							   "which flashsale relies on.", state_commands[i]),
					 errhint("Run it with redis-cli; flashsale.redis_database chooses the database "
							 "and EVAL runs several commands atomically.")));
}

/*
 * redis_call(VARIADIC args): one command, on a connection of its own; a
 * scalar reply as text (nil: NULL).
 */
Datum
fs_redis_call(PG_FUNCTION_ARGS)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	const char **argv;
	FsReply    *r;
	text	   *result = NULL;

	fs_require_arg(fcinfo, 0, "args");
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a Redis command needs at least its name")));
	argv = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
							errmsg("Redis command arguments must not be null")));
		argv[i] = TextDatumGetCString(elems[i]);
	}
	refuse_state_command(argv[0]);
	r = fs_redis_call_command(n, argv, NULL, true);
	switch (r->type)
	{
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_STATUS:
			result = cstring_to_text_with_len(r->str, r->len);
			break;
		case REDIS_REPLY_INTEGER:
			result = cstring_to_text(psprintf("%lld", (long long) r->integer));
			break;
		case REDIS_REPLY_NIL:
			break;
		case REDIS_REPLY_ERROR:
			{
				char	   *msg = pstrdup(r->str);

				fs_redis_free(r);
				ereport(ERROR, (errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
								errmsg("Redis: %s", msg)));
			}
			break;
		default:
			fs_redis_free(r);
			ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							errmsg("redis_call returns scalar replies only")));
	}
	fs_redis_free(r);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}
