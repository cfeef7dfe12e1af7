/*
 * redis.c: the one call path to Redis.
 *
 * Up to three lazily opened connections per backend, reused across calls
 * and transactions: one for stock and lock commands and scripts, one that
 * listens (SUBSCRIBE) for waiters of Redis locks, and one for redis_call, so
 * that nothing an operator runs can redirect or jam the other two.  Each is
 * opened the same way (connect_redis: AUTH, as a Redis 6+ ACL user when
 * flashsale.redis_user is set, then SELECT) and reopened when a setting it
 * was opened with changes.  redis_call itself, and what it refuses to run,
 * is in redis_call.c: this file is the transport only.
 *
 * hiredis' blocking calls cannot be interrupted, so the
 * context is non-blocking and this file drives the socket itself with a
 * wait set made once per connection (the latch, postmaster death and the
 * socket; WaitLatchOrSocket would create and close an epoll set at every
 * wait, four system calls more per call): every call is bounded by flashsale.redis_timeout (the
 * connect by flashsale.redis_connect_timeout), and a query cancel or
 * statement_timeout interrupts a call waiting on Redis.  A connection that
 * failed, timed out or was interrupted mid-call is discarded and reopened on
 * the next call.  Failures are SQLSTATE class 08 with the address in the
 * detail; callers that must not raise (transaction callbacks) get NULL.
 *
 * The server is one address, the master the sentinels name
 * (flashsale.redis_sentinels), or a Redis Cluster (flashsale.redis_cluster):
 * then each kind of connection is a small set, one per node as calls need
 * them (at most FS_NODE_CONNS, the least recently used closed beyond), and
 * a call goes where cluster.c's slot map says its first key lives; MOVED
 * (the map learns it) and ASK (ASKING first, this once) are followed, and
 * TRYAGAIN and CLUSTERDOWN (a slot mid-migration, a failover under way)
 * retried for as long as flashsale.redis_timeout allows.  A redirection
 * means the command was not run, so retrying it is safe; a call that broke
 * on the wire is not retried (it may have run), it fails with class 08 and
 * the next call reads the map again.
 */
#include "flashsale.h"

#include <errno.h>
#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

typedef struct FsConn
{
	redisContext *ctx;
	bool		busy;			/* a command is out and its reply unread */
	char	   *settings;		/* the settings it was opened with */
	char	   *channel;		/* subscriber: the channel it listens to */
	WaitEventSet *wes;			/* latch, postmaster death, the socket */
	int			sock_pos;		/* the socket's event in wes */
	int			sock_events;	/* what it waits for now */
	char		host[256];		/* cluster: the node it is open to */
	int			port;
	uint64		used;			/* cluster: when it was last used */
} FsConn;

/* A kind of connection: one, or one per cluster node (up to FS_NODE_CONNS). */
#define FS_NODE_CONNS 16
typedef struct FsConnSet
{
	FsConn		conn[FS_NODE_CONNS];
	FsConn	   *last;			/* the one the last command went to */
} FsConnSet;

static FsConnSet cmd_set;		/* commands and scripts */
static FsConn sub_conn;			/* SUBSCRIBE, for waiters of Redis locks */
static FsConnSet call_set;		/* redis_call */
static uint64 use_clock = 0;
static char *map_settings = NULL;	/* the settings the slot map was read with */
static char node_address[300];	/* cluster: the node of the last call, for messages */

/*
 * The kind of the call under way, for the statistics (stats.c): set by the
 * public entry points; the sync pass sets it for all of its calls.
 */
static FsRedisKind cur_kind = FS_RK_STOCK;
static int	kind_override = -1;

int
fs_redis_kind_override(int kind)
{
	int			prev = kind_override;

	kind_override = kind;
	return prev;
}

/* What went wrong: decides the SQLSTATE, message and hint of the error. */
typedef enum FsFailure
{
	FS_OK = 0,
	FS_CONNECT,					/* Redis unreachable, or SELECT refused */
	FS_AUTH,					/* Redis refused AUTH */
	FS_CALL,					/* a call timed out or the connection broke */
	FS_CLUSTER					/* the cluster redirected or deferred it until the deadline */
} FsFailure;

/* Commands handed to a socket so far: lets callers tell "never sent" apart. */
uint64		fs_redis_sent = 0;

/*
 * Clean-up: abort and exit callbacks, where interrupts are held (a cancel
 * cannot cut a wait short) and an error is too late.  As postgres_fdw does,
 * one phase (fs_redis_cleanup_begin .. _end) has a fixed deadline no user
 * can raise, shared by every call in it, connecting included; after the
 * first failure the rest are not sent.  What Redis is not told in time is
 * left to the worker, to reloads and to leases.
 */
#define FS_CLEANUP_MS 500

static int	cleanup_depth = 0;
static TimestampTz cleanup_deadline;
static bool cleanup_failed;

void
fs_redis_cleanup_begin(void)
{
	if (cleanup_depth++ == 0)
	{
		cleanup_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FS_CLEANUP_MS);
		cleanup_failed = false;
	}
}

void
fs_redis_cleanup_end(void)
{
	Assert(cleanup_depth > 0);
	cleanup_depth--;
}

/* The deadline of a call (or a connect, of connect_ms) starting now. */
static TimestampTz
call_deadline(int ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	if (cleanup_depth > 0 && cleanup_deadline < deadline)
		return cleanup_deadline;
	return deadline;
}

/*
 * Sentinel (flashsale.redis_sentinels and flashsale.redis_sentinel_master):
 * the master's address as the sentinels last told it, this backend's; empty
 * until a connection resolved it.  Every new connection resolves it again,
 * so a connection lost to a failover, or told READONLY by a demoted master,
 * finds the new master.
 */
static char master_host[256];
static int	master_port;

static bool
use_sentinels(void)
{
	return fs_redis_sentinels && fs_redis_sentinels[0];
}

char *
fs_redis_address(void)
{
	if (fs_redis_cluster)
		return node_address[0] ? psprintf("%s (cluster node)", node_address)
			: psprintf("%s:%d (cluster seed node)", fs_redis_host, fs_redis_port);
	if (use_sentinels())
		return master_host[0] ? psprintf("%s:%d (master \"%s\")", master_host, master_port,
										 fs_redis_sentinel_master)
			: psprintf("master \"%s\" of sentinels %s", fs_redis_sentinel_master, fs_redis_sentinels);
	return psprintf("%s:%d", fs_redis_host, fs_redis_port);
}

/* The settings a connection is opened with; one that differs reopens it. */
static char *
current_settings(void)
{
	const char *user = fs_redis_user ? fs_redis_user : "";

	/* the user's length keeps "a|b" + "c" apart from "a" + "b|c" */
	return psprintf("%s|%d|%d|%zu:%s|%s|%s|%s|%s|%d|%s", fs_redis_host, fs_redis_port, fs_redis_database,
					strlen(user), user, fs_redis_password ? fs_redis_password : "",
					fs_redis_sentinels ? fs_redis_sentinels : "",
					fs_redis_sentinel_master ? fs_redis_sentinel_master : "", fs_tls_settings(),
					(int) fs_redis_cluster, fs_redis_cluster_seeds ? fs_redis_cluster_seeds : "");
}

static void
discard(FsConn *c)
{
	if (c->ctx)
		redisFree(c->ctx);
	c->ctx = NULL;
	c->busy = false;
	if (c->wes)
		FreeWaitEventSet(c->wes);
	c->wes = NULL;
	if (c->channel)
		pfree(c->channel);
	c->channel = NULL;
}

/* Wait until fd is ready for events, the deadline passes (false), or an interrupt. */
static bool
wait_socket(FsConn *c, int events, TimestampTz deadline)
{
	if (c->wes == NULL)
	{
		c->wes = fs_create_wait_event_set(3);
		AddWaitEventToSet(c->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(c->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		c->sock_pos = AddWaitEventToSet(c->wes, events, c->ctx->fd, NULL, NULL);
		c->sock_events = events;
	}
	else if (c->sock_events != events)
	{
		ModifyWaitEvent(c->wes, c->sock_pos, events, NULL);
		c->sock_events = events;
	}
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		WaitEvent	ev;

		if (ms <= 0)
			return false;
		if (WaitEventSetWait(c->wes, ms, &ev, 1, PG_WAIT_EXTENSION) == 0)
			continue;			/* timed out: the deadline decides */
		if (ev.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			/* a cancel throws here; busy makes the next call reconnect */
			CHECK_FOR_INTERRUPTS();
		}
		if (ev.events & events)
			return true;
	}
}

/* One command, one reply, by the deadline; NULL and *err on failure. */
/*
 * The next reply (or pushed message) by the deadline: NULL with *err on
 * failure, NULL with *err NULL when the deadline passed and timeout_ok.
 */
static redisReply *
read_reply(FsConn *c, TimestampTz deadline, bool timeout_ok, char **err)
{
	void	   *reply = NULL;

	for (;;)
	{
		if (redisGetReplyFromReader(c->ctx, &reply) != REDIS_OK)
		{
			*err = pstrdup(c->ctx->errstr);
			return NULL;
		}
		if (reply)
			return (redisReply *) reply;
		if (!wait_socket(c, WL_SOCKET_READABLE, deadline))
		{
			*err = timeout_ok ? NULL : pstrdup("timed out waiting for a reply");
			return NULL;
		}
		if (redisBufferRead(c->ctx) != REDIS_OK)
		{
			*err = pstrdup(c->ctx->errstr[0] ? c->ctx->errstr : "connection closed");
			return NULL;
		}
	}
}

/* One command, one reply, by the deadline; NULL and *err on failure. */
static redisReply *
roundtrip(FsConn *c, int argc, const char **argv, const size_t *lens, TimestampTz deadline,
		  char **err)
{
	int			done = 0;
	redisReply *reply;

	if (redisAppendCommandArgv(c->ctx, argc, argv, lens) != REDIS_OK)
	{
		*err = pstrdup(c->ctx->errstr);
		return NULL;
	}
	c->busy = true;
	fs_redis_sent++;
	while (!done)
	{
		if (redisBufferWrite(c->ctx, &done) != REDIS_OK)
		{
			*err = pstrdup(c->ctx->errstr);
			return NULL;
		}
		if (!done && !wait_socket(c, WL_SOCKET_WRITEABLE, deadline))
		{
			*err = pstrdup("timed out sending a command");
			return NULL;
		}
	}
	reply = read_reply(c, deadline, false, err);
	if (reply)
		c->busy = false;
	return reply;
}

/* A command of the connection set-up whose reply must be OK. */
static bool
setup_command(FsConn *c, int argc, const char **argv, TimestampTz deadline, char **err)
{
	redisReply *r = roundtrip(c, argc, argv, NULL, deadline, err);
	bool		ok = r && r->type != REDIS_REPLY_ERROR;

	if (r && !ok)
	{
		/* it goes into an errdetail ending in a full stop */
		*err = psprintf("%s failed: %s", argv[0], r->str);
		if ((*err)[0] && (*err)[strlen(*err) - 1] == '.')
			(*err)[strlen(*err) - 1] = '\0';
	}
	if (r)
		freeReplyObject(r);
	return ok;
}

/*
 * Log in on a new connection, the same way on each: "AUTH user password"
 * for a Redis 6+ ACL user (flashsale.redis_user), else "AUTH password" for
 * the default user when there is a password, else nothing.
 */
static bool
authenticate(FsConn *c, TimestampTz deadline, char **err)
{
	const char *argv[3];
	int			argc = 0;
	bool		has_user = fs_redis_user && fs_redis_user[0];
	bool		has_password = fs_redis_password && fs_redis_password[0];

	if (!has_user && !has_password)
		return true;
	argv[argc++] = "AUTH";
	if (has_user)
		argv[argc++] = fs_redis_user;
	argv[argc++] = has_password ? fs_redis_password : "";
	return setup_command(c, argc, argv, deadline, err);
}

/*
 * TLS on c's connected socket: tls.c makes the session and hands it to
 * hiredis, this waits for the socket as the handshake asks.  A failure
 * leaves the session to hiredis' context, which the caller discards.
 */
static bool
start_tls(FsConn *c, const char *host, TimestampTz deadline, char **err)
{
	FsTls	   *volatile t = fs_tls_begin(host, err);
	volatile bool ok;

	if (t == NULL)
		return false;
	ok = fs_tls_attach(t, c->ctx, err);
	PG_TRY();
	{
		while (ok)
		{
			int			wait = fs_tls_handshake(t, err);

			if (wait == 0)
				break;
			if (wait < 0)
				ok = false;
			else if (!wait_socket(c, wait, deadline))
			{
				*err = psprintf("TLS: timed out in the handshake after %d ms", fs_redis_connect_timeout_ms);
				ok = false;
			}
		}
	}
	PG_CATCH();
	{
		fs_tls_end(t);			/* interrupted */
		PG_RE_THROW();
	}
	PG_END_TRY();
	fs_tls_end(t);
	return ok;
}

/*
 * Open c to host:port and log in (not SELECT: a sentinel has no databases),
 * by the deadline.
 */
static FsFailure
open_conn(FsConn *c, const char *host, int port, TimestampTz deadline, char **err)
{
	int			soerr = 0;
	socklen_t	len = sizeof(soerr);

	discard(c);
	c->ctx = redisConnectNonBlock(host, port);
	if (c->ctx == NULL)
	{
		*err = pstrdup("out of memory");
		return FS_CONNECT;
	}
	if (c->ctx->err)
	{
		*err = pstrdup(c->ctx->errstr);
		return FS_CONNECT;
	}
	if (!wait_socket(c, WL_SOCKET_WRITEABLE, deadline))
	{
		*err = psprintf("timed out connecting after %d ms", fs_redis_connect_timeout_ms);
		return FS_CONNECT;
	}
	if (getsockopt(c->ctx->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
	{
		*err = pstrdup(strerror(soerr ? soerr : errno));
		return FS_CONNECT;
	}
	if (fs_redis_tls && !start_tls(c, host, deadline, err))
		return FS_CONNECT;
	if (!authenticate(c, deadline, err))
		return FS_AUTH;
	return FS_OK;
}

/* One command of the sentinel protocol: its reply, or NULL and *err. */
static redisReply *
ask(FsConn *c, int argc, const char **argv, TimestampTz deadline, char **err)
{
	redisReply *r = roundtrip(c, argc, argv, NULL, deadline, err);

	if (r && r->type == REDIS_REPLY_ERROR)
	{
		*err = psprintf("%s: %s", argv[0], r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/*
 * Connect c to the master as the sentinels name it, the way their client
 * guidelines say: ask each sentinel in turn (each within the connect
 * timeout) for SENTINEL get-master-addr-by-name, connect to that address and
 * check with ROLE that it is a master (a failover may be under way); the
 * first that answers so wins.  *err says what each one answered otherwise.
 */
static FsFailure
connect_master(FsConn *c, TimestampTz deadline, char **err)
{
	char	   *list = pstrdup(fs_redis_sentinels);
	char	   *save = NULL;
	StringInfoData why;
	FsFailure	failure = FS_CONNECT;

	initStringInfo(&why);
	for (char *item = strtok_r(list, ", ", &save); item; item = strtok_r(NULL, ", ", &save))
	{
		char	   *colon = strrchr(item, ':');
		char	   *e = NULL;
		const char *get[] = {"SENTINEL", "get-master-addr-by-name", fs_redis_sentinel_master};
		const char *role[] = {"ROLE"};
		TimestampTz one = Min(deadline, call_deadline(fs_redis_connect_timeout_ms));
		redisReply *r;
		char		host[sizeof(master_host)];
		int			port;
		FsFailure	f;

		if (colon == NULL || colon == item || colon[1] == '\0')
		{
			appendStringInfo(&why, "%s%s: not host:port", why.len ? "; " : "", item);
			continue;
		}
		*colon = '\0';
		f = open_conn(c, item, atoi(colon + 1), one, &e);
		r = f == FS_OK ? ask(c, 3, get, one, &e) : NULL;
		*colon = ':';
		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
			r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
		{
			if (f == FS_AUTH)
				failure = FS_AUTH;
			appendStringInfo(&why, "%s%s: %s", why.len ? "; " : "", item,
							 e ? e : r && r->type == REDIS_REPLY_NIL ? "does not know the master"
							 : "unexpected reply");
			if (r)
				freeReplyObject(r);
			continue;
		}
		strlcpy(host, r->element[0]->str, sizeof(host));
		port = atoi(r->element[1]->str);
		freeReplyObject(r);
		discard(c);
		f = open_conn(c, host, port, one, &e);
		r = f == FS_OK ? ask(c, 1, role, one, &e) : NULL;
		if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
			r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0)
		{
			freeReplyObject(r);
			/* another master than this backend's last: a failover, the worker checks now */
			if (master_host[0] && (port != master_port || strcmp(host, master_host) != 0))
				fs_shmem_note_failover();
			strlcpy(master_host, host, sizeof(master_host));
			master_port = port;
			pfree(list);
			return FS_OK;
		}
		if (f == FS_AUTH)
			failure = FS_AUTH;
		appendStringInfo(&why, "%s%s named %s:%d, which %s", why.len ? "; " : "", item, host, port,
						 e ? e : "is not a master (ROLE)");
		if (r)
			freeReplyObject(r);
	}
	pfree(list);
	*err = why.len ? why.data : pstrdup("no sentinel in flashsale.redis_sentinels");
	return failure;
}

/*
 * Open c to the server, logged in and on flashsale.redis_database: to the
 * configured address or the master the sentinels name, or, in a cluster,
 * to the node host:port.
 */
static FsFailure
connect_redis(FsConn *c, const char *host, int port, char **err)
{
	TimestampTz deadline = call_deadline(fs_redis_connect_timeout_ms);
	FsFailure	f;

	if (fs_redis_cluster)
	{
		if (use_sentinels())
		{
			*err = pstrdup("flashsale.redis_cluster is on and flashsale.redis_sentinels is set, "
						   "and a deployment is one or the other");
			return FS_CONNECT;
		}
		snprintf(node_address, sizeof(node_address), "%s:%d", host, port);
		f = open_conn(c, host, port, deadline, err);
		strlcpy(c->host, host, sizeof(c->host));
		c->port = port;
	}
	else if (use_sentinels())
	{
		/* every sentinel gets the connect timeout: the whole resolution, one per sentinel */
		int			n = 1;

		for (const char *p = fs_redis_sentinels; *p; p++)
			n += *p == ',';
		deadline = call_deadline(fs_redis_connect_timeout_ms * Min(n, 16));
		f = connect_master(c, deadline, err);
	}
	else
		f = open_conn(c, fs_redis_host, fs_redis_port, deadline, err);
	if (f != FS_OK)
		return f;
	/* a cluster has database 0 only, and says so if asked for another */
	if (fs_redis_database != 0)
	{
		char		db[16];
		const char *sel[] = {"SELECT", db};

		snprintf(db, sizeof(db), "%d", fs_redis_database);
		if (!setup_command(c, 2, sel, deadline, err))
			return FS_CONNECT;
	}
	if (c->settings)
	{
		/* it had been open before */
		fs_stat_redis(cur_kind, FS_REDIS_RECONNECTS);
		pfree(c->settings);
	}
	c->settings = MemoryContextStrdup(TopMemoryContext, current_settings());
	return FS_OK;
}

static redisReply *
fail(FsConn *c, bool throw, FsFailure failure, const char *err)
{
	char	   *address = fs_redis_address();

	fs_stat_redis(cur_kind, failure == FS_CLUSTER ? FS_REDIS_ERR_TIMEOUT
				  : failure != FS_CALL ? FS_REDIS_ERR_CONNECT
				  : strncmp(err, "timed out", 9) == 0 ? FS_REDIS_ERR_TIMEOUT : FS_REDIS_ERR_CONNECT);
	discard(c);
	if (throw && failure == FS_CLUSTER)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the Redis Cluster did not serve the call within flashsale.redis_timeout"),
				 errdetail("Redis at %s: %s.", address, err),
				 errhint("A hash slot was being migrated or a failover was under way; nothing was done, "
						 "and the call can be retried.")));
	if (throw)
		ereport(ERROR,
				(errcode(failure == FS_CALL ? ERRCODE_CONNECTION_FAILURE
						 : ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg(failure == FS_CALL ? "lost the connection to Redis"
						: failure == FS_AUTH ? "could not log in to Redis"
						: "could not connect to Redis"),
				 errdetail("Redis at %s: %s.", address, err),
				 failure == FS_AUTH ?
				 errhint("Check flashsale.redis_user and flashsale.redis_password (set the password in "
						 "postgresql.conf or with ALTER SYSTEM, then SELECT pg_reload_conf()).") :
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
idle_conn_broken(FsConn *c)
{
	char		byte;
	ssize_t		n = recv(c->ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

	return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Reuse the open connection if it is sound, else (re)connect (host: see connect_redis). */
static FsFailure
ensure_connected(FsConn *c, const char *host, int port, char **err)
{
	if (c->ctx && (c->busy || idle_conn_broken(c) ||
				   strcmp(c->settings, current_settings()) != 0))
		discard(c);
	if (c->ctx != NULL)
	{
		if (fs_redis_cluster)
			snprintf(node_address, sizeof(node_address), "%s:%d", c->host, c->port);
		return FS_OK;
	}
	return connect_redis(c, host, port, err);
}

static FsReply *
copy_tree(const redisReply *r)
{
	FsReply    *c = palloc0(sizeof(FsReply));

	c->type = r->type;
	c->integer = r->integer;
	if (r->str)
	{
		c->len = r->len;
		c->str = pnstrdup(r->str, r->len);
	}
	if (r->element && r->elements > 0)
	{
		c->elements = r->elements;
		c->element = palloc(sizeof(FsReply *) * r->elements);
		for (size_t i = 0; i < r->elements; i++)
			c->element[i] = copy_tree(r->element[i]);
	}
	return c;
}

/*
 * hiredis' reply, copied into palloc'd memory and freed at once: nothing
 * malloc'd outlives this function, even if the copy runs out of memory.
 */
static FsReply *
copy_reply(redisReply *r)
{
	FsReply    *volatile c = NULL;

	if (r == NULL)
		return NULL;
	PG_TRY();
	{
		c = copy_tree(r);
	}
	PG_CATCH();
	{
		freeReplyObject(r);
		PG_RE_THROW();
	}
	PG_END_TRY();
	freeReplyObject(r);
	return c;
}

/*
 * Run one command on connection c and return its reply (free it with
 * fs_redis_free).  An error reply is returned as it is.  On failure: ERROR
 * when throw, else NULL.
 */
static FsReply *
conn_command(FsConn *c, int argc, const char **argv, const size_t *lens, bool throw)
{
	char	   *err = NULL;
	FsFailure	failure;
	redisReply *reply;

	if (cleanup_depth > 0 && cleanup_failed)
		return NULL;			/* stop at the first failure */
	failure = ensure_connected(c, NULL, 0, &err);
	if (failure == FS_OK)
	{
		reply = roundtrip(c, argc, argv, lens, call_deadline(fs_redis_timeout_ms), &err);
		if (reply && use_sentinels() && reply->type == REDIS_REPLY_ERROR &&
			strncmp(reply->str, "READONLY", 8) == 0)
		{
			/*
			 * A master demoted by a failover: nothing was done.  Once more on
			 * the master the sentinels name now.
			 */
			freeReplyObject(reply);
			discard(c);
			failure = ensure_connected(c, NULL, 0, &err);
			reply = failure != FS_OK ? NULL
				: roundtrip(c, argc, argv, lens, call_deadline(fs_redis_timeout_ms), &err);
		}
		if (reply)
			return copy_reply(reply);
		if (failure == FS_OK)
			failure = FS_CALL;
	}
	if (cleanup_depth > 0)
		cleanup_failed = true;
	(void) fail(c, throw, failure, err);
	return NULL;
}

/* ---- Redis Cluster: one connection per node, calls routed by hash slot ---- */

/* The set's connection to host:port, the least recently used one reused beyond FS_NODE_CONNS. */
static FsConn *
node_conn(FsConnSet *set, const char *host, int port)
{
	FsConn	   *pick = NULL;

	for (int i = 0; i < FS_NODE_CONNS; i++)
	{
		FsConn	   *c = &set->conn[i];

		if (c->ctx && c->port == port && strcmp(c->host, host) == 0)
		{
			pick = c;
			break;
		}
		if (pick == NULL || (pick->ctx != NULL && (c->ctx == NULL || c->used < pick->used)))
			pick = c;
	}
	if (pick->ctx && (pick->port != port || strcmp(pick->host, host) != 0))
		discard(pick);
	pick->used = ++use_clock;
	return pick;
}

/*
 * Read the slot map (CLUSTER SLOTS) from the seed node, else from any node
 * seen so far, the first that answers.  False and *err when none did; a
 * map that leaves slots without a master is kept (and read again soon).
 */
static bool
read_map(FsConnSet *set, char **err)
{
	const char *host;
	int			port;
	const char *slots[] = {"CLUSTER", "SLOTS"};
	StringInfoData why;

	if (map_settings == NULL || strcmp(map_settings, current_settings()) != 0)
	{
		fs_cluster_forget();
		if (map_settings)
			pfree(map_settings);
		map_settings = MemoryContextStrdup(TopMemoryContext, current_settings());
	}
	initStringInfo(&why);
	for (int i = 0; fs_cluster_map_source(i, &host, &port); i++)
	{
		FsConn	   *c = node_conn(set, host, port);
		char	   *e = NULL;
		char		answered[256];
		redisReply *r;
		FsReply    *map;
		bool		whole;

		if (cleanup_depth > 0 && cleanup_failed)
			break;
		strlcpy(answered, host, sizeof(answered));
		r = ensure_connected(c, host, port, &e) == FS_OK
			? roundtrip(c, 2, slots, NULL, call_deadline(fs_redis_timeout_ms), &e) : NULL;
		if (r == NULL)
			discard(c);
		else
		{
			map = copy_reply(r);
			whole = fs_cluster_load(map, answered, &e);
			fs_redis_free(map);
			if (whole)
				return true;
		}
		/* the seed is named by the error's address */
		if (i == 0)
			appendStringInfoString(&why, e);
		else
			appendStringInfo(&why, "; %s:%d: %s", answered, port, e);
	}
	node_address[0] = '\0';
	*err = why.data;
	return false;
}

/* Sleep a little before retrying TRYAGAIN or CLUSTERDOWN; false when the deadline would pass. */
static bool
retry_pause(TimestampTz deadline)
{
	const int	ms = 20;

	if (TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline) <= ms)
		return false;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * Run one command in the cluster, on the set's connection to the master of
 * slot (-1: any node), following redirections; as conn_command otherwise.
 */
static FsReply *
cluster_command(FsConnSet *set, int slot, int argc, const char **argv, const size_t *lens, bool throw)
{
	TimestampTz deadline = call_deadline(fs_redis_timeout_ms);
	FsFailure	failure = FS_OK;
	char	   *err = NULL;
	char		ask_host[256];
	int			ask_port = 0;
	FsConn	   *c = NULL;
	uint64		sent_before = fs_redis_sent;

	if (cleanup_depth > 0 && cleanup_failed)
		return NULL;			/* stop at the first failure */
	for (int hop = 0;; hop++)
	{
		const char *host;
		int			port;
		redisReply *reply;
		char		to_host[256];
		int			to_port;
		int			kind;

		/* a map that could not be read again is used as it was, if there is one */
		if ((map_settings == NULL || strcmp(map_settings, current_settings()) != 0 ||
			 fs_cluster_map_wanted()) && !read_map(set, &err) &&
			!fs_cluster_slot_node(slot >= 0 ? slot : 0, &host, &port))
		{
			failure = FS_CONNECT;
			break;
		}
		if (ask_port)
		{
			host = ask_host;
			port = ask_port;
		}
		else if (!fs_cluster_slot_node(slot >= 0 ? slot : 0, &host, &port))
		{
			/* the map has no master for it: a cluster down, or one being made */
			if (retry_pause(deadline))
			{
				fs_cluster_map_suspect();
				continue;
			}
			err = psprintf("hash slot %d has no master", slot >= 0 ? slot : 0);
			failure = FS_CONNECT;
			break;
		}
		c = node_conn(set, host, port);
		failure = ensure_connected(c, host, port, &err);
		if (failure != FS_OK)
		{
			/* a master that does not answer: a failover may follow, the worker checks */
			fs_cluster_map_suspect();
			fs_shmem_note_failover();
			break;
		}
		if (ask_port)
		{
			const char *asking[] = {"ASKING"};

			if (!setup_command(c, 1, asking, deadline, &err))
			{
				failure = FS_CALL;
				break;
			}
		}
		reply = roundtrip(c, argc, argv, lens, call_deadline(fs_redis_timeout_ms), &err);
		if (reply == NULL)
		{
			failure = FS_CALL;
			fs_cluster_map_suspect();
			break;
		}
		if (reply->type == REDIS_REPLY_ERROR)
		{
			bool		later = strncmp(reply->str, "TRYAGAIN", 8) == 0 ||
				strncmp(reply->str, "CLUSTERDOWN", 11) == 0;

			kind = fs_cluster_redirect(reply->str, to_host, sizeof(to_host), &to_port);
			if (kind != 0 || later)
			{
				/*
				 * Nothing was done.  MOVED: the map has learnt it; ASK: there,
				 * this once; TRYAGAIN (a script's keys split by a migration,
				 * or missing on both sides of it), CLUSTERDOWN (a failover):
				 * after a pause.  Redirections in a row pause too after 16,
				 * and the deadline ends it all as a class 08 error: the
				 * caller retries as after a lost connection.
				 */
				if ((later || hop >= 16) && !retry_pause(deadline))
				{
					err = psprintf("%s (still after %d ms)", reply->str, fs_redis_timeout_ms);
					freeReplyObject(reply);
					fs_redis_sent = sent_before;	/* nothing ran anywhere */
					failure = FS_CLUSTER;
					break;
				}
				freeReplyObject(reply);
				ask_port = kind == 'A' ? to_port : 0;
				if (kind == 'A')
					strlcpy(ask_host, to_host, sizeof(ask_host));
				if (later)
					fs_cluster_map_suspect();
				continue;
			}
		}
		set->last = c;
		return copy_reply(reply);
	}
	if (cleanup_depth > 0)
		cleanup_failed = true;
	if (c == NULL)
		c = &set->conn[0];
	(void) fail(c, throw, failure, err);
	return NULL;
}

/*
 * One command on a set, routed by its first key in a cluster, else on its
 * one connection; timed and counted as kind (an error reply other than
 * NOSCRIPT, which fs_redis_script answers, counts as a reply error).
 */
static FsReply *
set_command(FsConnSet *set, FsRedisKind kind, int argc, const char **argv, const size_t *lens,
			bool throw)
{
	TimestampTz start = fs_track_stats ? GetCurrentTimestamp() : 0;
	FsReply    *r;

	cur_kind = kind_override >= 0 ? (FsRedisKind) kind_override : kind;
	if (fs_redis_cluster)
		r = cluster_command(set, fs_cluster_command_slot(argc, argv, lens), argc, argv, lens, throw);
	else
	{
		set->last = &set->conn[0];
		r = conn_command(&set->conn[0], argc, argv, lens, throw);
	}
	if (r && fs_track_stats)
	{
		fs_stat_redis_call(cur_kind, GetCurrentTimestamp() - start);
		if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) != 0)
			fs_stat_redis(cur_kind, FS_REDIS_ERR_REPLY);
	}
	return r;
}

/*
 * One command on the command connection (stock, locks, limits); see
 * conn_command.  Its kind for the statistics: once()'s SET is a limit, the
 * sync pass's PING a sync, anything else (set_stock's DEL) stock.
 */
FsReply *
fs_redis_command(int argc, const char **argv, const size_t *lens, bool throw)
{
	return set_command(&cmd_set, pg_strcasecmp(argv[0], "SET") == 0 ? FS_RK_LIMIT
					   : pg_strcasecmp(argv[0], "PING") == 0 ? FS_RK_SYNC : FS_RK_STOCK,
					   argc, argv, lens, throw);
}

/*
 * One command on redis_call's connection of its own (redis_call.c): nothing
 * run there can redirect or jam the command and subscriber connections.
 */
FsReply *
fs_redis_call_command(int argc, const char **argv, const size_t *lens, bool throw)
{
	return set_command(&call_set, FS_RK_CALL, argc, argv, lens, throw);
}

void
fs_redis_free(FsReply *reply)
{
	if (reply == NULL)
		return;
	for (size_t i = 0; i < reply->elements; i++)
		fs_redis_free(reply->element[i]);
	if (reply->element)
		pfree(reply->element);
	if (reply->str)
		pfree(reply->str);
	pfree(reply);
}

/*
 * Run a Lua script with EVALSHA (one round trip); a Redis that does not know
 * it (restarted, SCRIPT FLUSH, a cluster node new to this backend) gets it
 * with EVAL, which runs it and keeps it for the next EVALSHA; both go where
 * the first key lives.
 * The SHA is computed at build time: no hashing here, so this also works
 * outside a transaction (the worker's watchdog).
 * argv/lens: nkeys keys then the arguments, argc in all.
 */
FsReply *
fs_redis_script(FsScript *script, int nkeys, int argc, const char **argv,
				const size_t *lens, bool throw)
{
	const char **av = palloc(sizeof(char *) * (argc + 3));
	size_t	   *al = palloc(sizeof(size_t) * (argc + 3));
	char		nk[16];
	FsReply    *reply;
	FsRedisKind kind;

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

	/* the kind, for the statistics: by the script's name */
	kind = strncmp(script->name, "lock", 4) == 0 ? FS_RK_LOCK
		: strncmp(script->name, "throttle", 8) == 0 || strncmp(script->name, "once", 4) == 0 ? FS_RK_LIMIT
		: FS_RK_STOCK;
	reply = set_command(&cmd_set, kind, argc + 3, av, al, throw);
	if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0)
	{
		fs_redis_free(reply);
		av[0] = "EVAL";
		av[1] = script->body;
		al[0] = strlen(av[0]);
		al[1] = strlen(av[1]);
		reply = set_command(&cmd_set, kind, argc + 3, av, al, throw);
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

/*
 * Throw away what the subscriber connection has received and not read
 * (messages published while nobody waited): false when it is broken (EOF,
 * an error), true when nothing is left to read.
 */
static bool
drain_sub(void)
{
	for (;;)
	{
		void	   *reply = NULL;
		char		byte;
		ssize_t		n;

		if (redisGetReplyFromReader(sub_conn.ctx, &reply) != REDIS_OK)
			return false;
		if (reply)
		{
			freeReplyObject(reply);
			continue;
		}
		n = recv(sub_conn.ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		if (n == 0 || redisBufferRead(sub_conn.ctx) != REDIS_OK)
			return false;
	}
}

/*
 * Listen on channel from now on (SUBSCRIBE on a connection of its own, kept
 * between waits): what was published before this call is dropped unread, so
 * the next fs_redis_wait_message sees only what comes after it.
 */
void
fs_redis_listen(const char *channel)
{
	char	   *err = NULL;
	FsFailure	failure;
	redisReply *r;
	const char *argv[] = {"SUBSCRIBE", channel};

	if (sub_conn.ctx && sub_conn.channel && !sub_conn.busy &&
		strcmp(sub_conn.channel, channel) == 0 &&
		strcmp(sub_conn.settings, current_settings()) == 0 && drain_sub())
		return;
	{
		/* in a cluster, PUBLISH reaches every node: the master of the channel's slot */
		const char *host = fs_redis_host;
		int			port = fs_redis_port;

		if (fs_redis_cluster)
			(void) fs_cluster_slot_node(fs_cluster_key_slot(channel, strlen(channel)), &host, &port);
		failure = connect_redis(&sub_conn, host, port, &err);
	}
	if (failure != FS_OK)
	{
		fail(&sub_conn, true, failure, err);
		return;
	}
	r = roundtrip(&sub_conn, 2, argv, NULL,
				  TimestampTzPlusMilliseconds(GetCurrentTimestamp(), fs_redis_timeout_ms), &err);
	if (r == NULL)
	{
		fail(&sub_conn, true, FS_CALL, err);
		return;
	}
	if (r->type == REDIS_REPLY_ERROR)
	{
		/* e.g. NOPERM: an ACL user without the channel */
		char	   *msg = pstrdup(r->str);

		freeReplyObject(r);
		discard(&sub_conn);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Redis refused SUBSCRIBE to \"%s\"", channel),
				 errdetail("Redis at %s: %s", fs_redis_address(), msg),
				 errhint("A Redis ACL user needs the channels of flashsale's locks, e.g. &*.")));
	}
	freeReplyObject(r);
	sub_conn.channel = MemoryContextStrdup(TopMemoryContext, channel);
}

/*
 * Wait until a message is published on the channel fs_redis_listen listens
 * to, or the deadline: the message (palloc'd), or NULL at the deadline.
 * Interruptible like every call.
 */
char *
fs_redis_wait_message(const char *channel, TimestampTz deadline)
{
	char	   *err = NULL;
	char	   *msg = NULL;
	redisReply *r;

	if (sub_conn.ctx == NULL || sub_conn.channel == NULL || strcmp(sub_conn.channel, channel) != 0)
		fs_redis_listen(channel);
	sub_conn.busy = true;		/* an interrupt mid-read leaves it unusable */
	r = read_reply(&sub_conn, deadline, true, &err);
	if (r == NULL && err != NULL)
	{
		fail(&sub_conn, true, FS_CALL, err);
		return NULL;
	}
	sub_conn.busy = false;
	if (r)
	{
		/* ["message", channel, payload] */
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			r->element[2]->type == REDIS_REPLY_STRING)
			msg = pnstrdup(r->element[2]->str, r->element[2]->len);
		else
			msg = pstrdup("");
		freeReplyObject(r);
	}
	return msg;
}

/*
 * For clean-up after an interrupted call: the reply of the command that was
 * in flight on the command connection, waited for as long as a clean-up
 * call may take, on that same connection (so nothing sent later can
 * overtake it).  NULL when none was in flight or it did not come in time
 * (the connection is then dropped).
 */
FsReply *
fs_redis_late_reply(void)
{
	char	   *err = NULL;
	redisReply *r;

	FsConn	   *c = cmd_set.last;

	if (c == NULL || c->ctx == NULL || !c->busy)
		return NULL;
	r = read_reply(c, call_deadline(fs_redis_timeout_ms), false, &err);
	if (r == NULL)
	{
		if (cleanup_depth > 0)
			cleanup_failed = true;
		discard(c);
		return NULL;
	}
	c->busy = false;
	return copy_reply(r);
}

/* Stop listening: close the subscriber connection. */
void
fs_redis_unsubscribe(void)
{
	discard(&sub_conn);
}
