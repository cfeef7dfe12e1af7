/*
 * flashsale.c: module entry point and GUCs.
 *
 * The library is meant to be in shared_preload_libraries (the background
 * worker and its shared memory need that), but every SQL function also works
 * when it is loaded on demand by the first call of one of them.
 *
 * flashsale.redis_password is a secret: besides being hidden from other
 * roles (GUC_SUPERUSER_ONLY, GUC_NO_SHOW_ALL) it is only taken from the
 * server's own configuration (postgresql.conf, ALTER SYSTEM's
 * postgresql.auto.conf, the command line).  ALTER DATABASE / ALTER ROLE ...
 * SET would store it in pg_db_role_setting, which every role can read, so
 * its check hook refuses every other source.  (Without the preload a backend
 * that has not loaded the library cannot refuse: it stores an unknown
 * setting unchecked; the hook then warns and ignores it on load.)
 */
#include "flashsale.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(fs_version);

int			fs_lock_timeout_ms = 5000;
int			fs_coupon_stripes = 64;
char	   *fs_redis_host = NULL;
int			fs_redis_port = 6379;
char	   *fs_redis_user = NULL;
char	   *fs_redis_password = NULL;
char	   *fs_redis_sentinels = NULL;
char	   *fs_redis_sentinel_master = NULL;
bool		fs_redis_cluster = false;
char	   *fs_redis_cluster_seeds = NULL;
int			fs_redis_database = 0;
int			fs_redis_connect_timeout_ms = 1000;
int			fs_redis_timeout_ms = 1000;
char	   *fs_key_prefix = NULL;
char	   *fs_database = NULL;
int			fs_sync_interval_s = 60;
bool		fs_preloaded = false;

void		_PG_init(void);

/*
 * Accept the password only from the server's configuration.  ALTER DATABASE
 * and ALTER ROLE ... SET (and CREATE FUNCTION ... SET) validate their value
 * as PGC_S_TEST; values already stored there arrive as PGC_S_GLOBAL,
 * PGC_S_DATABASE, PGC_S_USER or PGC_S_DATABASE_USER at connection start,
 * where the refusal is a WARNING and the value is ignored.
 */
/*
 * flashsale.key_prefix has a bound, so that the registry of Redis locks can
 * keep every lock's full key in shared memory (the watchdog renews by it).
 */
static bool
check_key_prefix(char **newval, void **extra, GucSource source)
{
	if (*newval && strlen(*newval) > FS_KEY_PREFIX_MAX)
	{
		GUC_check_errdetail("It is %zu bytes long; the limit is %d.", strlen(*newval),
							FS_KEY_PREFIX_MAX);
		return false;
	}
	if (*newval && strpbrk(*newval, "{}"))
	{
		/* the keys' hash tags follow the prefix: a brace in it would be the tag */
		GUC_check_errdetail("It contains a brace; flashsale's keys use braces for Redis Cluster hash tags.");
		return false;
	}
	return true;
}

static bool
check_cluster_seeds(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval ? *newval : "");
	char	   *save = NULL;
	int			n = 0;

	for (char *item = strtok_r(copy, ", ", &save); item; item = strtok_r(NULL, ", ", &save))
	{
		char	   *colon = strrchr(item, ':');
		char	   *end = NULL;
		long		port = colon ? strtol(colon + 1, &end, 10) : 0;

		if (colon == NULL || colon == item || colon - item >= 256 || end == colon + 1 || *end != '\0' ||
			port < 1 || port > 65535)
		{
			GUC_check_errdetail("\"%s\" is not host:port.", item);
			pfree(copy);
			return false;
		}
		if (++n > 16)
		{
			GUC_check_errdetail("At most 16 seeds.");
			pfree(copy);
			return false;
		}
	}
	pfree(copy);
	return true;
}

static bool
check_redis_password(char **newval, void **extra, GucSource source)
{
	switch (source)
	{
		case PGC_S_DEFAULT:
		case PGC_S_DYNAMIC_DEFAULT:
		case PGC_S_ENV_VAR:
		case PGC_S_FILE:
		case PGC_S_ARGV:
		case PGC_S_OVERRIDE:
			return true;
		default:
			break;
	}
	GUC_check_errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM);
	GUC_check_errmsg("flashsale.redis_password can only be set in postgresql.conf or with ALTER SYSTEM");
	GUC_check_errdetail("ALTER DATABASE and ALTER ROLE would store it in pg_db_role_setting, which every "
						"role can read, and every session must log in to Redis alike.");
	GUC_check_errhint("Put it in postgresql.conf, or run ALTER SYSTEM SET flashsale.redis_password, "
					  "then SELECT pg_reload_conf().");
	return false;
}

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

	DefineCustomStringVariable("flashsale.redis_host",
							   "Host of the Redis server that holds stock.",
							   NULL, &fs_redis_host, "127.0.0.1",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("flashsale.redis_port",
							"Port of the Redis server that holds stock.",
							NULL, &fs_redis_port, 6379, 1, 65535,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_user",
							   "Redis ACL user for AUTH (empty: the default user).",
							   "Redis 6 or later; sent with flashsale.redis_password.",
							   &fs_redis_user, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_password",
							   "Password for Redis AUTH (empty: none).",
							   "Only superusers can see it; set it in postgresql.conf or with ALTER SYSTEM.",
							   &fs_redis_password, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_redis_password, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_sentinels",
							   "Redis Sentinels to ask for the master, as host:port,host:port,...",
							   "When set, flashsale.redis_host and flashsale.redis_port are not used: every new "
							   "connection asks the sentinels for flashsale.redis_sentinel_master.",
							   &fs_redis_sentinels, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_sentinel_master",
							   "Name of the master the sentinels watch (SENTINEL get-master-addr-by-name).",
							   NULL, &fs_redis_sentinel_master, "mymaster",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("flashsale.redis_cluster",
							 "Whether Redis is a Redis Cluster.",
							 "When on, flashsale.redis_host and flashsale.redis_port name a seed node: "
							 "flashsale reads the slot map from it and sends each call to the master of "
							 "its keys' hash slot.",
							 &fs_redis_cluster, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_cluster_seeds",
							   "More Redis Cluster nodes to read the slot map from, as host:port,host:port,...",
							   "Tried in turn when flashsale.redis_host and flashsale.redis_port do not answer.",
							   &fs_redis_cluster_seeds, "",
							   PGC_SUSET, 0, check_cluster_seeds, NULL, NULL);
	DefineCustomIntVariable("flashsale.redis_database",
							"Redis database number (SELECT).",
							NULL, &fs_redis_database, 0, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("flashsale.redis_connect_timeout",
							"Longest wait for a connection to Redis.",
							NULL, &fs_redis_connect_timeout_ms, 1000, 1, 3600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("flashsale.redis_timeout",
							"Longest wait for one Redis call.",
							NULL, &fs_redis_timeout_ms, 1000, 1, 3600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.key_prefix",
							   "Prefix of every Redis key flashsale uses.",
							   "Lets several databases share one Redis.",
							   &fs_key_prefix, "",
							   PGC_SUSET, 0, check_key_prefix, NULL, NULL);

	/*
	 * PGC_POSTMASTER variables can only be defined while preloading; loaded
	 * on demand there is no worker, and the setting only shows what it
	 * would use.
	 */
	DefineCustomStringVariable("flashsale.database",
							   "Database the background worker connects to.",
							   NULL, &fs_database, "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	DefineCustomIntVariable("flashsale.sync_interval",
							"Time between the background worker's sync passes.",
							NULL, &fs_sync_interval_s, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("flashsale.allotment_max",
							"Most units of a product one lease moves into this instance's allotment.",
							"Leases double while they come faster than every 100 ms and halve "
							"when slower than every second, from 1 up to this.",
							&fs_allotment_max, 1000, 1, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("flashsale.allotment_idle",
							"Time after which an allotment nobody sold from goes back to the pool.",
							NULL, &fs_allotment_idle_ms, 1000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	fs_shmem_define_size("flashsale.max_allotments",
						 "Most products with an allotment in this instance's shared memory.",
						 "Each takes about 560 bytes. Empty idle allotments are forgotten.",
						 &fs_max_allotments);

	DefineCustomBoolVariable("flashsale.track_stats",
							 "Whether flashsale counts sales, Redis calls, lock waits and limits "
							 "(the flashsale.stat_* views).",
							 NULL, &fs_track_stats, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	fs_shmem_define_size("flashsale.max_stat_entries",
						 "Most products and coupons the flashsale.stat_* views track.",
						 "Beyond it the least recently used is forgotten. Each takes about 150 bytes.",
						 &fs_max_stat_entries);

	fs_tls_init();
	/* first: its abort callbacks run last (throttle.c) */
	fs_throttle_init();
	fs_stock_init();
	fs_redis_locks_init();
	fs_named_locks_init();
	/* after the last flashsale.* is defined: it drops the placeholders of the prefix */
	MarkGUCPrefixReserved("flashsale");

	fs_preloaded = process_shared_preload_libraries_in_progress;
	if (fs_preloaded)
	{
		fs_shmem_register();
		fs_worker_register();
	}
}

/* pg_extension.extversion of flashsale in this database */
static char *
installed_version(void)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("flashsale"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (version == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"flashsale\" is not installed in this database")));
	return version;
}

/*
 * version() -> (library, installed): the loaded library's version and the
 * extension's SQL version in this database.  They differ after a new
 * library was installed and the database not yet updated (or the reverse):
 * a WARNING says what to run.
 */
Datum
fs_version(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char	   *installed = installed_version();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (strcmp(installed, FS_VERSION) != 0)
		ereport(WARNING,
				(errmsg("flashsale's library is version %s, its SQL objects here are version %s",
						FS_VERSION, installed),
				 errhint("Run ALTER EXTENSION flashsale UPDATE in this database (after restarting the "
						 "server if the library was replaced).")));
	values[0] = CStringGetTextDatum(FS_VERSION);
	values[1] = CStringGetTextDatum(installed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
