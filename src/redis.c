/*
 * redis.c: the one call path to Redis.
 *
 * One lazily opened connection per backend, reused across calls and
 * transactions.  hiredis' blocking calls cannot be interrupted, so the
 * context is non-blocking and this file drives the socket itself with
 * WaitLatchOrSocket: every call is bounded by flashsale.redis_timeout (the
 * connect by flashsale.redis_connect_timeout), and a query cancel or
 * statement_timeout interrupts a call waiting on Redis.  A connection that
 * failed, timed out or was interrupted mid-call is discarded and reopened on
 * the next call.  Failures are SQLSTATE class 08 with the address in the
 * detail; callers that must not raise (transaction callbacks) get NULL.
 */
#include "flashsale.h"

#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "common/cryptohash.h"
#include "common/sha1.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

static redisContext *conn = NULL;
static bool conn_busy = false;	/* a command is out and its reply unread */
static char *conn_settings = NULL;	/* the settings conn was opened with */

/* Commands handed to a socket so far: lets callers tell "never sent" apart. */
uint64		fs_redis_sent = 0;

/*
 * Set while transaction callbacks clean up: interrupts are held there, so a
 * cancel cannot cut a wait short, and each call is bounded by the shorter of
 * the two timeouts.  What cannot be told to Redis in time is left to the
 * worker and to reloads.
 */
bool		fs_redis_cleanup = false;

static int
call_timeout_ms(void)
{
	if (fs_redis_cleanup)
		return Min(fs_redis_timeout_ms, fs_redis_connect_timeout_ms);
	return fs_redis_timeout_ms;
}

char *
fs_redis_address(void)
{
	return psprintf("%s:%d", fs_redis_host, fs_redis_port);
}

static char *
current_settings(void)
{
	return psprintf("%s|%d|%d|%s", fs_redis_host, fs_redis_port, fs_redis_database,
					fs_redis_password ? fs_redis_password : "");
}

static void
discard(void)
{
	if (conn)
		redisFree(conn);
	conn = NULL;
	conn_busy = false;
}

/* Wait until fd is ready for events, the deadline passes (false), or an interrupt. */
static bool
wait_socket(int events, TimestampTz deadline)
{
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		int			rc;

		if (ms <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
							   conn->fd, ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			/* a cancel throws here; conn_busy makes the next call reconnect */
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & events)
			return true;
	}
}

/* One command, one reply, by the deadline; NULL and *err on failure. */
static redisReply *
roundtrip(int argc, const char **argv, const size_t *lens, TimestampTz deadline, char **err)
{
	int			done = 0;
	void	   *reply = NULL;

	if (redisAppendCommandArgv(conn, argc, argv, lens) != REDIS_OK)
	{
		*err = pstrdup(conn->errstr);
		return NULL;
	}
	conn_busy = true;
	fs_redis_sent++;
	while (!done)
	{
		if (redisBufferWrite(conn, &done) != REDIS_OK)
		{
			*err = pstrdup(conn->errstr);
			return NULL;
		}
		if (!done && !wait_socket(WL_SOCKET_WRITEABLE, deadline))
		{
			*err = pstrdup("timed out sending a command");
			return NULL;
		}
	}
	for (;;)
	{
		if (redisGetReplyFromReader(conn, &reply) != REDIS_OK)
		{
			*err = pstrdup(conn->errstr);
			return NULL;
		}
		if (reply)
			break;
		if (!wait_socket(WL_SOCKET_READABLE, deadline))
		{
			*err = pstrdup("timed out waiting for a reply");
			return NULL;
		}
		if (redisBufferRead(conn) != REDIS_OK)
		{
			*err = pstrdup(conn->errstr[0] ? conn->errstr : "connection closed");
			return NULL;
		}
	}
	conn_busy = false;
	return (redisReply *) reply;
}

/* A command of the connection set-up whose reply must be OK. */
static bool
setup_command(int argc, const char **argv, TimestampTz deadline, char **err)
{
	redisReply *r = roundtrip(argc, argv, NULL, deadline, err);
	bool		ok = r && r->type != REDIS_REPLY_ERROR;

	if (r && !ok)
		*err = psprintf("%s failed: %s", argv[0], r->str);
	if (r)
		freeReplyObject(r);
	return ok;
}

static bool
connect_redis(char **err)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   fs_redis_connect_timeout_ms);
	int			soerr = 0;
	socklen_t	len = sizeof(soerr);

	discard();
	conn = redisConnectNonBlock(fs_redis_host, fs_redis_port);
	if (conn == NULL)
	{
		*err = pstrdup("out of memory");
		return false;
	}
	if (conn->err)
	{
		*err = pstrdup(conn->errstr);
		return false;
	}
	if (!wait_socket(WL_SOCKET_WRITEABLE, deadline))
	{
		*err = psprintf("timed out connecting after %d ms", fs_redis_connect_timeout_ms);
		return false;
	}
	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
	{
		*err = pstrdup(strerror(soerr ? soerr : errno));
		return false;
	}
	if (fs_redis_password && fs_redis_password[0])
	{
		const char *auth[] = {"AUTH", fs_redis_password};

		if (!setup_command(2, auth, deadline, err))
			return false;
	}
	if (fs_redis_database != 0)
	{
		char		db[16];
		const char *sel[] = {"SELECT", db};

		snprintf(db, sizeof(db), "%d", fs_redis_database);
		if (!setup_command(2, sel, deadline, err))
			return false;
	}
	if (conn_settings)
		pfree(conn_settings);
	conn_settings = MemoryContextStrdup(TopMemoryContext, current_settings());
	return true;
}

static redisReply *
fail(bool throw, bool connecting, const char *err)
{
	char	   *address = fs_redis_address();

	discard();
	if (throw)
		ereport(ERROR,
				(errcode(connecting ? ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
						 : ERRCODE_CONNECTION_FAILURE),
				 errmsg(connecting ? "could not connect to Redis" : "lost the connection to Redis"),
				 errdetail("Redis at %s: %s.", address, err),
				 errhint("Check that Redis runs there and flashsale.redis_host, flashsale.redis_port "
						 "and flashsale.redis_timeout are right.")));
	elog(DEBUG1, "flashsale: Redis at %s: %s", address, err);
	return NULL;
}

/*
 * An idle connection whose server went away (restart) reads as EOF; one with
 * unexpected bytes waiting is out of step.  Either is reopened before use.
 */
static bool
idle_conn_broken(void)
{
	char		c;
	ssize_t		n = recv(conn->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/*
 * Run one command and return its reply (free it with fs_redis_free).  An
 * error reply is returned as it is.  On failure: ERROR when throw, else NULL.
 */
redisReply *
fs_redis_command(int argc, const char **argv, const size_t *lens, bool throw)
{
	char	   *err = NULL;
	redisReply *reply;

	if (conn && (conn_busy || idle_conn_broken() ||
				 strcmp(conn_settings, current_settings()) != 0))
		discard();
	if (conn == NULL && !connect_redis(&err))
		return fail(throw, true, err);

	reply = roundtrip(argc, argv, lens,
					  TimestampTzPlusMilliseconds(GetCurrentTimestamp(), call_timeout_ms()),
					  &err);
	if (reply == NULL)
		return fail(throw, false, err);
	return reply;
}

void
fs_redis_free(redisReply *reply)
{
	if (reply)
		freeReplyObject(reply);
}

static void
script_sha(FsScript *script)
{
	uint8		digest[SHA1_DIGEST_LENGTH];
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA1);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) script->body, strlen(script->body)) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "flashsale: could not hash Lua script %s", script->name);
	pg_cryptohash_free(ctx);
	for (int i = 0; i < SHA1_DIGEST_LENGTH; i++)
		snprintf(script->sha + 2 * i, 3, "%02x", digest[i]);
}

/*
 * Run a Lua script with EVALSHA (one round trip); a Redis that does not know
 * it (restarted, SCRIPT FLUSH) gets it with SCRIPT LOAD, then EVALSHA again.
 * argv/lens: nkeys keys then the arguments, argc in all.
 */
redisReply *
fs_redis_script(FsScript *script, int nkeys, int argc, const char **argv,
				const size_t *lens, bool throw)
{
	const char **av = palloc(sizeof(char *) * (argc + 3));
	size_t	   *al = palloc(sizeof(size_t) * (argc + 3));
	char		nk[16];
	redisReply *reply;

	if (script->sha[0] == '\0')
		script_sha(script);
	snprintf(nk, sizeof(nk), "%d", nkeys);
	av[0] = "EVALSHA";
	av[1] = script->sha;
	av[2] = nk;
	for (int i = 0; i < argc; i++)
	{
		av[i + 3] = argv[i];
		al[i + 3] = lens ? lens[i] : strlen(argv[i]);
	}
	for (int i = 0; i < 3; i++)
		al[i] = strlen(av[i]);

	reply = fs_redis_command(argc + 3, av, al, throw);
	if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0)
	{
		const char *load[] = {"SCRIPT", "LOAD", script->body};

		fs_redis_free(reply);
		reply = fs_redis_command(3, load, NULL, throw);
		if (reply == NULL)
			return NULL;
		fs_redis_free(reply);
		reply = fs_redis_command(argc + 3, av, al, throw);
	}
	if (reply && reply->type == REDIS_REPLY_ERROR)
	{
		char	   *msg = pstrdup(reply->str);

		fs_redis_free(reply);
		if (throw)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("flashsale's Redis script \"%s\" failed", script->name),
					 errdetail("Redis at %s: %s", fs_redis_address(), msg)));
		return NULL;
	}
	return reply;
}
