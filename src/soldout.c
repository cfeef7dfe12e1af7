/*
 * soldout.c: "sold out" answered from shared memory.
 *
 * On sale day most requests for a sold-out product still arrive; each used
 * to cost a Redis round trip (and the product's lock).  When Redis answers
 * that a product's pool is empty, the verdict is remembered here for
 * FS_SOLDOUT_MS; meanwhile every buyer of this instance is told "not
 * enough" without leaving the backend.  Whatever puts units back on this
 * instance forgets the verdict at once: a give-back at (sub)transaction
 * abort, a committed set_stock or restore_stock, a reload, a sync pass that
 * returned units or fixed drift.  A restock made by another instance is
 * seen within FS_SOLDOUT_MS.  Never a unit sold that is not there: a stale
 * verdict can only turn a buyer away, for at most FS_SOLDOUT_MS.
 *
 * A direct-mapped table of FS_SOLDOUT_SLOTS slots, each a 64-bit key (a hash
 * of database, stock table generation and product; never 0) and the time
 * until which the verdict holds, both atomics: no lock on the hot path.  A
 * writer clears the time, then sets the key, then the time; a reader reads
 * key, time, key again and trusts the time only if the key did not change.
 * Two products whose keys share a slot evict each other's verdicts (they are
 * asked of Redis again); two products with the same 64-bit key would share
 * one, which can only turn buyers away for FS_SOLDOUT_MS (odds 2^-64).
 * Without the preload there is no table and every request asks Redis.
 */
#include "flashsale.h"

#include "common/hashfn.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#define FS_SOLDOUT_SLOTS 4096
#define FS_SOLDOUT_MS 100

typedef struct SoldOutSlot
{
	pg_atomic_uint64 key;
	pg_atomic_uint64 until;		/* a TimestampTz; 0: no verdict */
} SoldOutSlot;

static SoldOutSlot *slots = NULL;

Size
fs_soldout_shmem_size(void)
{
	return mul_size(FS_SOLDOUT_SLOTS, sizeof(SoldOutSlot));
}

void
fs_soldout_shmem_init(void)
{
	bool		found;

	slots = ShmemInitStruct("flashsale sold out", fs_soldout_shmem_size(), &found);
	if (!found)
		for (int i = 0; i < FS_SOLDOUT_SLOTS; i++)
		{
			pg_atomic_init_u64(&slots[i].key, 0);
			pg_atomic_init_u64(&slots[i].until, 0);
		}
}

/* The product's key: its stock key names the database and the table's generation. */
uint64
fs_soldout_key(const char *stock_key)
{
	uint64		k = hash_bytes_extended((const unsigned char *) stock_key, (int) strlen(stock_key), 0);

	return k ? k : 1;
}

static SoldOutSlot *
slot_of(uint64 key)
{
	return &slots[key % FS_SOLDOUT_SLOTS];
}

/* Is the product known sold out right now? */
bool
fs_soldout_known(uint64 key)
{
	SoldOutSlot *s;
	uint64		until;

	if (slots == NULL)
		return false;
	s = slot_of(key);
	if (pg_atomic_read_u64(&s->key) != key)
		return false;
	pg_read_barrier();
	until = pg_atomic_read_u64(&s->until);
	pg_read_barrier();
	if (pg_atomic_read_u64(&s->key) != key)
		return false;
	return until != 0 && GetCurrentTimestamp() < (TimestampTz) until;
}

/* Redis said the product's pool is empty: remember it for FS_SOLDOUT_MS. */
void
fs_soldout_mark(uint64 key)
{
	SoldOutSlot *s;

	if (slots == NULL)
		return;
	s = slot_of(key);
	pg_atomic_write_u64(&s->until, 0);
	pg_write_barrier();
	pg_atomic_write_u64(&s->key, key);
	pg_write_barrier();
	pg_atomic_write_u64(&s->until,
						(uint64) TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FS_SOLDOUT_MS));
}

/* Units came back: forget the verdict (safe anywhere, commit callbacks included). */
void
fs_soldout_forget(uint64 key)
{
	SoldOutSlot *s;

	if (slots == NULL)
		return;
	s = slot_of(key);
	if (pg_atomic_read_u64(&s->key) == key)
		pg_atomic_write_u64(&s->until, 0);
}
