/*
 * flashsale.h: declarations shared by flashsale's source files.
 */
#ifndef FLASHSALE_H
#define FLASHSALE_H

#include "postgres.h"
#include "access/skey.h"
#include "executor/spi.h"
#include "storage/lock.h"
#include "utils/timestamp.h"

#include "pg_compat.h"

/* the library's version; flashsale.control's default_version must match */
#define FS_VERSION "1.7"

/* ---- GUCs (flashsale.c) ---- */
extern int	fs_lock_timeout_ms;
extern int	fs_coupon_stripes;
extern char *fs_redis_host;
extern int	fs_redis_port;
extern char *fs_redis_user;
extern char *fs_redis_password;
extern char *fs_redis_sentinels;
extern char *fs_redis_sentinel_master;
extern int	fs_redis_database;
extern int	fs_redis_connect_timeout_ms;
extern int	fs_redis_timeout_ms;
extern char *fs_key_prefix;
#define FS_KEY_PREFIX_MAX 256		/* bytes of flashsale.key_prefix */

/* ---- stock (stock.c) ---- */
extern void fs_stock_init(void);
extern char *fs_stock_key(int64 product);
extern Oid	fs_stock_generation(void);
extern bool fs_stock_truth(int64 product, int64 *truth);
extern bool fs_stock_has_takes(void);
extern void fs_stock_rebuild(int64 product, bool locked, bool force);
struct FsAllotFigures;
extern bool fs_stock_figures(int64 product, struct FsAllotFigures *f, bool rebuild);
#define FS_MAX_STOCK INT64CONST(9007199254740991)

/* ---- allotments in shared memory (allot.c) ---- */
#define FS_POOL_KEY_MAX 384			/* bytes of a product's stock key, with its NUL */
extern int	fs_allotment_max;
extern int	fs_allotment_idle_ms;
extern int	fs_max_allotments;
typedef struct FsAllot FsAllot;
typedef enum FsTakeResult
{
	TAKE_OK,
	TAKE_SHORT,
	TAKE_REBUILD
} FsTakeResult;
typedef struct FsAllotFigures
{
	bool		pool_known;		/* Redis has the pool */
	int64		pool;
	int64		allotted;		/* units every instance holds, as Redis records them */
	int64		available;		/* this instance's free units */
	int64		in_flight;		/* its units in transactions in progress */
} FsAllotFigures;
typedef struct FsAllotRow
{
	int64		product;
	int64		available;
	int64		in_flight;
	int64		batch;
	TimestampTz last_used;
	bool		stale;
} FsAllotRow;
extern Size fs_allot_shmem_size(void);
extern void fs_allot_shmem_init(void);
extern FsAllot *fs_allot_get(Oid gen, int64 product, char *(*pool_key) (int64 product));
extern void fs_allot_unpin(FsAllot *a);
extern bool fs_allot_short_known(Oid gen, int64 product, int64 qty, int64 *left);
extern FsTakeResult fs_allot_take(FsAllot *a, int64 qty, int64 *left, int64 *record);
extern void fs_allot_end_take(FsAllot *a, int64 qty, bool committed);
extern void fs_allot_add(FsAllot *a, int64 qty);
extern void fs_allot_invalidate(Oid gen, int64 product, bool drop_units);
extern bool fs_allot_stale(FsAllot *a);
extern void fs_allot_rebuild(FsAllot *a, int64 truth, const char *old_key);
extern bool fs_allot_read(FsAllot *a, FsAllotFigures *f);
extern bool fs_allot_check_due(Oid gen, int64 product);
extern int64 fs_allot_return_idle(int64 *units);
extern FsAllotRow *fs_allot_list(Oid gen, int *n);

/* ---- worker and sync (worker.c, sync.c) ---- */
extern bool fs_preloaded;
extern char *fs_database;
extern int	fs_sync_interval_s;
extern void fs_worker_register(void);
extern Size fs_worker_shmem_size(void);
extern void fs_worker_shmem_init(void);

/* ---- shared memory (shmem.c) and named locks (named_locks.c) ---- */
extern void fs_shmem_register(void);
extern void fs_shmem_define_size(const char *name, const char *short_desc,
								 const char *long_desc, int *value);
struct Latch;
extern void fs_shmem_set_worker_latch(struct Latch *latch);
extern void fs_shmem_note_failover(void);
extern uint64 fs_shmem_failovers(void);
extern void fs_shmem_wake_worker(void);
extern void fs_named_locks_init(void);
extern Size fs_named_locks_shmem_size(void);
extern void fs_named_locks_shmem_init(void);
/* a lock name's limit: characters for named locks, bytes for Redis locks */
#define FS_LOCK_NAME_MAX 64
/* the bytes a named lock's name may take (MAX_MULTIBYTE_CHAR_LEN per character) */
#define FS_LOCK_NAME_BYTES (FS_LOCK_NAME_MAX * 4)
extern char *fs_lock_name(text *t);

/* ---- Redis locks (redis_locks.c) ---- */
extern void fs_redis_locks_init(void);
extern Size fs_redis_locks_shmem_size(void);
extern void fs_redis_locks_shmem_init(void);
extern long fs_redis_locks_renew(void);

/* ---- rate limits: throttle(), once() (throttle.c) and throttle_local() (throttle_local.c) ---- */
#define FS_THROTTLE_KEY_MAX 256		/* bytes of a rate-limit or once() key */
/* one GCRA limit, in microseconds (throttle.c computes it from the arguments) */
typedef struct FsGcra
{
	double		interval;		/* T: period / count */
	int64		tolerance;		/* T x (max_burst + 1), rounded down */
	int64		increment;		/* T x quantity, rounded up; above tolerance: never */
} FsGcra;
typedef struct FsGcraResult
{
	bool		allowed;
	int64		remaining;
	int64		retry_after;	/* -1: none (allowed, or never) */
	int64		reset_after;
	int64		tat;			/* allowed: the key's TAT this admission left */
} FsGcraResult;
extern int	fs_max_throttle_keys;
extern void fs_throttle_init(void);
extern Size fs_throttle_local_shmem_size(void);
extern void fs_throttle_local_shmem_init(void);
extern void fs_gcra_step(const FsGcra *g, int64 *tat, int64 now, FsGcraResult *r);
extern void fs_throttle_local_admit(const char *key, const FsGcra *g, FsGcraResult *r);
extern void fs_throttle_local_refund(Oid db, const char *key, int64 increment, int64 tat);

typedef struct FsSyncCounts
{
	int64		products;		/* products synced */
	int64		reloaded;		/* pools rebuilt: Redis had lost them, or a stale record */
	int64		allotments_returned;	/* idle allotments given back to the pool */
	int64		units_returned; /* units those gave back */
	int64		drift_fixed;	/* pools whose Redis figure was corrected */
	int64		ledger_rows_folded;
	int64		errors;			/* products skipped by an error */
	int64		busy;			/* products whose lock was busy: only folded */
} FsSyncCounts;

extern void fs_sync_all(FsSyncCounts *counts);

/* ---- flashsale's own SQLSTATE class "FS" (documented in README.md) ---- */
#define ERRCODE_FS_ALREADY_ISSUED		MAKE_SQLSTATE('F','S','0','0','1')
#define ERRCODE_FS_SOLD_OUT				MAKE_SQLSTATE('F','S','0','0','2')
#define ERRCODE_FS_NOT_ACTIVE			MAKE_SQLSTATE('F','S','0','0','3')
#define ERRCODE_FS_NOT_FOUND			MAKE_SQLSTATE('F','S','0','0','4')
#define ERRCODE_FS_INSUFFICIENT_STOCK	MAKE_SQLSTATE('F','S','0','1','0')
#define ERRCODE_FS_UNKNOWN_PRODUCT		MAKE_SQLSTATE('F','S','0','1','1')
#define ERRCODE_FS_NOT_LOCK_OWNER		MAKE_SQLSTATE('F','S','0','2','0')

/* ---- outcomes and errors (errors.c): one table for status text and SQLSTATE ---- */
typedef enum FsStatus
{
	FS_ISSUED = 0,
	FS_ALREADY_ISSUED,
	FS_SOLD_OUT,
	FS_NOT_ACTIVE,
	FS_NOT_FOUND,
	FS_STATUS_COUNT
} FsStatus;

extern const char *fs_status_name(FsStatus status);
extern void fs_raise_status(FsStatus status, int64 member_id, int64 coupon_id) pg_attribute_noreturn();
extern void fs_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname);

/* ---- running a piece of work in a subtransaction (subxact.c) ---- */
extern ErrorData *fs_try_subxact(void (*fn) (void *arg), void *arg);

/* ---- running as the extension's owner (owner.c) ---- */
typedef struct FsUser
{
	Oid			userid;
	int			sec_context;
} FsUser;

extern void fs_extension_table(const char *name, Oid *owner, Oid *filenode);
extern Oid	fs_owner(void);
extern void fs_become_owner(FsUser *saved);
extern void fs_restore_user(const FsUser *saved);

/* ---- SPI (spi.c): the one path every query of flashsale takes ---- */
#define FS_MAX_ARGS 8

typedef struct FsQuery
{
	const char *sql;
	int			nargs;
	Oid			argtypes[FS_MAX_ARGS];
	SPIPlanPtr	plan;			/* prepared on first use, kept for the backend */
} FsQuery;

extern void fs_spi_connect(void);
extern void fs_spi_finish(void);
extern uint64 fs_spi_run(FsQuery *query, Datum *values, const char *nulls, bool read_only);
extern Datum fs_spi_get(uint64 row, int col, bool *isnull);

/* ---- direct table access for the issuance hot path (table.c) ---- */
typedef struct FsWriter
{
	Relation	rel;
	struct EState *estate;
	struct ResultRelInfo *rri;
	struct TupleTableSlot *slot;
} FsWriter;

extern Relation fs_table_open(const char *name, LOCKMODE lockmode);
extern AttrNumber fs_table_attnum(Relation rel, const char *column);
extern Oid	fs_table_serial(Relation rel, const char *column);
extern Oid	fs_table_pkey(Relation rel);
extern void fs_table_key(ScanKey key, Relation rel, const char *column, Datum value);
extern bool fs_table_get(Relation rel, Oid index, ScanKey keys, int nkeys,
						 Datum *values, bool *nulls, ItemPointer tid);
extern bool fs_table_fetch(Relation rel, ItemPointer tid, Datum *values, bool *nulls);
extern bool fs_table_has_trigger(Relation rel, const char *name);
extern void fs_writer_begin(FsWriter *w, Relation rel, bool skip_fk);
extern Relation fs_writer_index(FsWriter *w, const char *const *cols, int n);
extern void fs_writer_insert(FsWriter *w, const Datum *values, const bool *nulls);
extern bool fs_writer_update(FsWriter *w, ItemPointer tid, const Datum *values, const bool *nulls);
extern void fs_writer_end(FsWriter *w);

/* ---- advisory-lock plumbing: flashsale's own key space (advisory.c) ---- */
typedef enum FsLockKind
{
	FS_LOCK_COUPON_STRIPE = 0xF501,
	FS_LOCK_COUPON_MEMBER = 0xF502,
	FS_LOCK_STOCK = 0xF503,
	FS_LOCK_NAMED = 0xF504,
	FS_LOCK_COUPON_GUARD = 0xF505,
	FS_LOCK_NAMED_WITNESS = 0xF506
} FsLockKind;

extern void fs_locktag(LOCKTAG *tag, FsLockKind kind, int64 key1, int64 key2);
extern bool fs_lock_try(const LOCKTAG *tag);
extern bool fs_lock_try_mode(const LOCKTAG *tag, LOCKMODE mode);
extern void fs_lock_wait(const LOCKTAG *tag, const char *what);
extern void fs_lock_wait_mode(const LOCKTAG *tag, LOCKMODE mode, const char *what);
extern void fs_lock_wait_coupon(const LOCKTAG *tag, LOCKMODE mode, const char *what, int64 coupon);
extern void fs_lock_release(const LOCKTAG *tag);
extern void fs_lock_release_mode(const LOCKTAG *tag, LOCKMODE mode);

/* ---- Redis (redis.c): the one call path to Redis ---- */
typedef struct FsScript
{
	const char *name;
	const char *body;
	const char *sha;			/* SHA1 of body, hex: computed at build time */
} FsScript;

extern uint64 fs_redis_sent;
extern void fs_redis_cleanup_begin(void);
extern void fs_redis_cleanup_end(void);
/*
 * A Redis reply, copied out of hiredis' malloc'd reply into palloc'd memory
 * the moment it arrives: an error between receiving and freeing it can leak
 * nothing beyond the memory context.  Fields as hiredis' redisReply; type is
 * one of hiredis' REDIS_REPLY_*.
 */
typedef struct FsReply
{
	int			type;
	long long	integer;
	size_t		len;
	char	   *str;			/* NUL-terminated; NULL when the type has none */
	size_t		elements;
	struct FsReply **element;
} FsReply;

extern FsReply *fs_redis_command(int argc, const char **argv, const size_t *lens, bool throw);
extern FsReply *fs_redis_script(FsScript *script, int nkeys, int argc,
										  const char **argv, const size_t *lens, bool throw);
extern void fs_redis_free(FsReply *reply);
/* redis_call's connection of its own (redis_call.c) */
extern FsReply *fs_redis_call_command(int argc, const char **argv, const size_t *lens, bool throw);
extern char *fs_redis_address(void);
extern char *fs_redis_wait_message(const char *channel, TimestampTz deadline);
extern void fs_redis_listen(const char *channel);
extern void fs_redis_unsubscribe(void);
extern FsReply *fs_redis_late_reply(void);
extern int	fs_redis_kind_override(int kind);

/* ---- statistics in shared memory (stats.c): the flashsale.stat_* views ---- */
extern bool fs_track_stats;
extern int	fs_max_stat_entries;
extern Size fs_stats_shmem_size(void);
extern void fs_stats_shmem_init(void);
typedef enum FsStatEntryKind
{
	FS_STAT_PRODUCT = 1,
	FS_STAT_COUPON = 2
} FsStatEntryKind;
/* an entry's counters: 8 that add up, then 2 timestamps (set) */
#define FS_STAT_ENTRY_COUNTERS 10
#define FS_STAT_ENTRY_FIRST_TIME 8
enum
{
	FS_SP_SALES, FS_SP_UNITS_SOLD, FS_SP_UNITS_GIVEN_BACK, FS_SP_SOLD_OUT,
	FS_SP_REFILLS, FS_SP_UNITS_REFILLED, FS_SP_RETURNS, FS_SP_UNITS_RETURNED,
	FS_SP_LAST_SALE, FS_SP_LAST_REFILL
};
enum
{
	FS_SC_ISSUED, FS_SC_ALREADY_ISSUED, FS_SC_SOLD_OUT, FS_SC_NOT_ACTIVE,
	FS_SC_LOCK_WAITS, FS_SC_LOCK_TIMEOUTS, FS_SC_LAST_ISSUE = 8
};
extern void fs_stat_entry_add(FsStatEntryKind kind, int64 id, int counter, int64 n, bool insert);
extern void fs_stat_entry_add2(FsStatEntryKind kind, int64 id, int counter, int64 n, int counter2,
							   int64 n2, bool insert);
extern void fs_stat_sale(int64 product, int64 qty, int64 sales, bool committed);
extern void fs_stat_allot(Oid db, int64 product, bool refill, int64 units);
typedef enum FsRedisKind
{
	FS_RK_STOCK, FS_RK_LOCK, FS_RK_LIMIT, FS_RK_SYNC, FS_RK_CALL
} FsRedisKind;
#define FS_REDIS_KINDS 5
enum
{
	FS_REDIS_CALLS, FS_REDIS_ERR_CONNECT, FS_REDIS_ERR_TIMEOUT, FS_REDIS_ERR_REPLY, FS_REDIS_RECONNECTS
};
#define FS_REDIS_COUNTERS 5
extern void fs_stat_redis_call(FsRedisKind kind, int64 us);
extern void fs_stat_redis(FsRedisKind kind, int counter);
typedef enum FsLockStatKind
{
	FS_LK_NAMED, FS_LK_REDIS
} FsLockStatKind;
#define FS_LOCK_KINDS 2
enum
{
	FS_LOCK_ACQUIRED, FS_LOCK_WAITS, FS_LOCK_TIMEOUTS, FS_LOCK_DEADLOCKS
};
#define FS_LOCK_COUNTERS 4
extern void fs_stat_lock(FsLockStatKind kind, int counter);
typedef enum FsLimitKind
{
	FS_LIM_THROTTLE, FS_LIM_LOCAL, FS_LIM_ONCE
} FsLimitKind;
#define FS_LIMIT_KINDS 3
extern void fs_stat_limit(FsLimitKind kind, bool allowed);
enum
{
	FS_WORKER_PASSES, FS_WORKER_LAST_PASS_US, FS_WORKER_MAX_PASS_US, FS_WORKER_PRODUCTS_SYNCED,
	FS_WORKER_PRODUCTS_BUSY, FS_WORKER_DRIFT_FIXED, FS_WORKER_ERRORS
};
#define FS_WORKER_COUNTERS 7
extern void fs_stat_worker(int counter, int64 n);

/* ---- Redis Cluster's slot map (cluster.c): no I/O, redis.c's ---- */
extern bool fs_redis_cluster;
extern char *fs_redis_cluster_seeds;
extern int	fs_cluster_key_slot(const char *key, size_t len);
extern int	fs_cluster_command_slot(int argc, const char **argv, const size_t *lens);
extern bool fs_cluster_slot_node(int slot, const char **host, int *port);
extern bool fs_cluster_map_source(int i, const char **host, int *port);
extern bool fs_cluster_map_wanted(void);
extern void fs_cluster_map_suspect(void);
extern void fs_cluster_forget(void);
extern bool fs_cluster_load(const FsReply *r, const char *answered_host, char **err);
extern int	fs_cluster_redirect(const char *err, char *host, size_t hostlen, int *port);

/* TLS (tls.c): where hiredis has it (FS_HAVE_TLS) */
struct redisContext;
typedef struct FsTls FsTls;
extern bool fs_redis_tls;
extern void fs_tls_init(void);
extern char *fs_tls_settings(void);
extern FsTls *fs_tls_begin(const char *host, char **err);
extern bool fs_tls_attach(FsTls *t, struct redisContext *ctx, char **err);
extern int	fs_tls_handshake(FsTls *t, char **err);
extern void fs_tls_end(FsTls *t);

/* the scripts (lua.c) */
extern FsScript fs_script_lease;
extern FsScript fs_script_giveback;
extern FsScript fs_script_rebuild;
extern FsScript fs_script_info;
extern FsScript fs_script_lock_acquire;
extern FsScript fs_script_lock_release;
extern FsScript fs_script_lock_renew;
extern FsScript fs_script_lock_check;
extern FsScript fs_script_lock_info;
extern FsScript fs_script_throttle;
extern FsScript fs_script_throttle_refund;
extern FsScript fs_script_once_release;

#endif							/* FLASHSALE_H */
