/*
 * cluster.c: where a key lives in a Redis Cluster (flashsale.redis_cluster).
 *
 * No cluster client exists for the hiredis of Debian 12 (0.14), so the
 * routing is flashsale's, and small.  A cluster splits the keyspace into
 * 16384 hash slots, each served by one master; a key's slot is the CRC16
 * (XMODEM) of its hash tag (the part between the first '{' and the next
 * '}', when not empty) or of the whole key.  Every key flashsale writes
 * for one product, one lock or one rate-limit key carries the same hash tag
 * ("stock:<installation>:{42}", "lock:{5:promo}", "throttle:{9:member:7}"),
 * so every script touches one slot; calls about several products or locks
 * are split per key by their callers (fs_redis_cluster_on tells them).
 *
 * This file is the slot map only: no I/O.  redis.c (the transport) reads
 * CLUSTER SLOTS into it, asks it where a command goes, and tells it about
 * MOVED replies.  The map is this backend's: a slot whose master moved is
 * learnt from the first MOVED (and the whole map read again, at most every
 * FS_MAP_REFRESH_MS); a node that stops answering makes the next call read
 * the map again, from any node that answers.
 */
#include "flashsale.h"

#include <hiredis/hiredis.h>

#include "utils/memutils.h"

#define FS_SLOTS 16384
#define FS_MAX_NODES 256		/* addresses remembered: masters and seeds */
#define FS_MAP_REFRESH_MS 100

typedef struct FsNodeAddr
{
	char		host[256];
	int			port;
} FsNodeAddr;

static FsNodeAddr nodes[FS_MAX_NODES];
static int	nnodes = 0;
static int16 slot_node[FS_SLOTS];	/* index into nodes, -1: unknown */
static bool map_loaded = false;
static bool map_stale = false;
static TimestampTz map_read_at = 0;

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis' crc16.c */
static uint16
crc16(const char *buf, size_t len)
{
	uint16		crc = 0;

	for (size_t i = 0; i < len; i++)
	{
		crc ^= (uint16) ((unsigned char) buf[i]) << 8;
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16) ((crc << 1) ^ 0x1021) : (uint16) (crc << 1);
	}
	return crc;
}

int
fs_cluster_key_slot(const char *key, size_t len)
{
	size_t		open,
				close;

	for (open = 0; open < len && key[open] != '{'; open++)
		;
	if (open < len)
	{
		for (close = open + 1; close < len && key[close] != '}'; close++)
			;
		if (close < len && close > open + 1)
			return crc16(key + open + 1, close - open - 1) & (FS_SLOTS - 1);
	}
	return crc16(key, len) & (FS_SLOTS - 1);
}

/*
 * The slot a command goes to: its first key's, -1 for a command without
 * keys (any node answers it).  The scripts' first key is argv[3]; for other
 * commands argv[1] is taken as the key, which is right for everything
 * flashsale sends and a guess for what redis_call sends: a wrong guess
 * costs a MOVED, which is followed.
 */
int
fs_cluster_command_slot(int argc, const char **argv, const size_t *lens)
{
	int			k = 1;

	if (argc < 2)
		return -1;
	if (pg_strcasecmp(argv[0], "EVALSHA") == 0 || pg_strcasecmp(argv[0], "EVAL") == 0 ||
		pg_strcasecmp(argv[0], "EVALSHA_RO") == 0 || pg_strcasecmp(argv[0], "EVAL_RO") == 0 ||
		pg_strcasecmp(argv[0], "FCALL") == 0 || pg_strcasecmp(argv[0], "FCALL_RO") == 0)
	{
		if (argc < 4 || atoi(argv[2]) < 1)
			return -1;
		k = 3;
	}
	else if (pg_strcasecmp(argv[0], "PING") == 0 || pg_strcasecmp(argv[0], "INFO") == 0 ||
			 pg_strcasecmp(argv[0], "SCRIPT") == 0 || pg_strcasecmp(argv[0], "CLUSTER") == 0 ||
			 pg_strcasecmp(argv[0], "CONFIG") == 0 || pg_strcasecmp(argv[0], "TIME") == 0)
		return -1;
	return fs_cluster_key_slot(argv[k], lens ? lens[k] : strlen(argv[k]));
}

static int
node_index(const char *host, int port)
{
	for (int i = 0; i < nnodes; i++)
		if (nodes[i].port == port && strcmp(nodes[i].host, host) == 0)
			return i;
	if (nnodes == FS_MAX_NODES)
		return -1;
	strlcpy(nodes[nnodes].host, host, sizeof(nodes[nnodes].host));
	nodes[nnodes].port = port;
	return nnodes++;
}

/* The master of slot, as this backend knows it: false when not known. */
bool
fs_cluster_slot_node(int slot, const char **host, int *port)
{
	if (!map_loaded || slot < 0 || slot_node[slot] < 0)
		return false;
	*host = nodes[slot_node[slot]].host;
	*port = nodes[slot_node[slot]].port;
	return true;
}

/* flashsale.redis_cluster_seeds, parsed: the seeds after the first */
#define FS_MAX_SEEDS 16
static FsNodeAddr seeds[FS_MAX_SEEDS];
static int	nseeds = 0;
static char *seeds_parsed = NULL;

static void
parse_seeds(void)
{
	const char *list = fs_redis_cluster_seeds ? fs_redis_cluster_seeds : "";
	char	   *copy;
	char	   *save = NULL;

	if (seeds_parsed && strcmp(seeds_parsed, list) == 0)
		return;
	nseeds = 0;
	copy = pstrdup(list);
	for (char *item = strtok_r(copy, ", ", &save); item && nseeds < FS_MAX_SEEDS;
		 item = strtok_r(NULL, ", ", &save))
	{
		char	   *colon = strrchr(item, ':');
		int			port = colon ? atoi(colon + 1) : 0;

		/* checked when set (check_cluster_seeds): what does not parse is skipped */
		if (colon == NULL || colon == item || port <= 0 || port > 65535 ||
			(size_t) (colon - item) >= sizeof(seeds[0].host))
			continue;
		memcpy(seeds[nseeds].host, item, colon - item);
		seeds[nseeds].host[colon - item] = '\0';
		seeds[nseeds].port = port;
		nseeds++;
	}
	pfree(copy);
	if (seeds_parsed)
		pfree(seeds_parsed);
	seeds_parsed = MemoryContextStrdup(TopMemoryContext, list);
}

/*
 * Where to read the map from, i-th choice: the seed (flashsale.redis_host
 * and redis_port), the other seeds (flashsale.redis_cluster_seeds), then
 * every node seen so far.  False past the last.
 */
bool
fs_cluster_map_source(int i, const char **host, int *port)
{
	if (i == 0)
	{
		*host = fs_redis_host;
		*port = fs_redis_port;
		return true;
	}
	parse_seeds();
	if (i - 1 < nseeds)
	{
		*host = seeds[i - 1].host;
		*port = seeds[i - 1].port;
		return true;
	}
	i -= 1 + nseeds;
	if (i >= nnodes)
		return false;
	*host = nodes[i].host;
	*port = nodes[i].port;
	return true;
}

/* Should the map be read (again) before the next call? */
bool
fs_cluster_map_wanted(void)
{
	if (!map_loaded)
		return true;
	return map_stale &&
		TimestampDifferenceExceeds(map_read_at, GetCurrentTimestamp(), FS_MAP_REFRESH_MS);
}

/* Read the map again at the next call (throttled): a node failed or moved a slot. */
void
fs_cluster_map_suspect(void)
{
	map_stale = true;
}

/* Forget the map (the settings changed). */
void
fs_cluster_forget(void)
{
	map_loaded = false;
	map_stale = false;
	nnodes = 0;
}

/*
 * The reply of CLUSTER SLOTS into the map: [[start, end, [host, port, ...],
 * replicas...], ...].  An empty host means the node that answered
 * (answered_host).  False and *err when the reply is not such a map or
 * leaves slots unserved (a cluster being created, or down).
 */
bool
fs_cluster_load(const FsReply *r, const char *answered_host, char **err)
{
	int			covered = 0;

	if (r->type != REDIS_REPLY_ARRAY)
	{
		*err = psprintf("CLUSTER SLOTS: %s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		return false;
	}
	for (int s = 0; s < FS_SLOTS; s++)
		slot_node[s] = -1;
	for (size_t i = 0; i < r->elements; i++)
	{
		FsReply    *range = r->element[i];
		FsReply    *master;
		const char *host;
		int			n;

		if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
			range->element[0]->type != REDIS_REPLY_INTEGER ||
			range->element[1]->type != REDIS_REPLY_INTEGER ||
			range->element[2]->type != REDIS_REPLY_ARRAY || range->element[2]->elements < 2 ||
			range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
			range->element[2]->element[1]->type != REDIS_REPLY_INTEGER ||
			range->element[0]->integer < 0 || range->element[1]->integer >= FS_SLOTS ||
			range->element[0]->integer > range->element[1]->integer)
		{
			*err = pstrdup("CLUSTER SLOTS: unexpected reply");
			map_loaded = false;
			return false;
		}
		master = range->element[2];
		host = master->element[0]->len > 0 && strcmp(master->element[0]->str, "?") != 0
			? master->element[0]->str : answered_host;
		n = node_index(host, (int) master->element[1]->integer);
		if (n < 0)
		{
			*err = psprintf("CLUSTER SLOTS: more than %d nodes", FS_MAX_NODES);
			map_loaded = false;
			return false;
		}
		for (long long s = range->element[0]->integer; s <= range->element[1]->integer; s++)
		{
			covered += slot_node[s] < 0;
			slot_node[s] = (int16) n;
		}
	}
	map_read_at = GetCurrentTimestamp();
	if (covered < FS_SLOTS)
	{
		*err = psprintf("CLUSTER SLOTS: %d of %d hash slots have a master", covered, FS_SLOTS);
		/* what is known is used; the rest is read again */
		map_loaded = true;
		map_stale = true;
		return false;
	}
	map_loaded = true;
	map_stale = false;
	return true;
}

/*
 * A redirection in an error reply: "MOVED <slot> <host>:<port>" (the slot
 * lives there now: the map learns it) or "ASK <slot> <host>:<port>" (this
 * once, during a migration).  0 when err is neither, else 'M' or 'A' with
 * the node in host/port.
 */
int
fs_cluster_redirect(const char *err, char *host, size_t hostlen, int *port)
{
	int			kind;
	const char *p;
	const char *colon;
	long		slot;
	char	   *end;

	if (strncmp(err, "MOVED ", 6) == 0)
	{
		kind = 'M';
		p = err + 6;
	}
	else if (strncmp(err, "ASK ", 4) == 0)
	{
		kind = 'A';
		p = err + 4;
	}
	else
		return 0;
	slot = strtol(p, &end, 10);
	if (end == p || *end != ' ' || slot < 0 || slot >= FS_SLOTS)
		return 0;
	p = end + 1;
	colon = strrchr(p, ':');
	if (colon == NULL || (size_t) (colon - p) >= hostlen)
		return 0;
	*port = atoi(colon + 1);
	if (*port <= 0 || *port > 65535)
		return 0;
	memcpy(host, p, colon - p);
	host[colon - p] = '\0';
	if (host[0] == '\0')
		strlcpy(host, fs_redis_host, hostlen);	/* "MOVED 1 :6380": the same host */
	if (kind == 'M')
	{
		int			n = node_index(host, *port);

		if (n >= 0 && map_loaded)
			slot_node[slot] = (int16) n;
		map_stale = true;
	}
	return kind;
}
