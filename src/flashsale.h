/*
 * flashsale.h: declarations shared by flashsale's source files.
 */
#ifndef FLASHSALE_H
#define FLASHSALE_H

#include "postgres.h"
#include "executor/spi.h"
#include "storage/lock.h"

/* ---- GUCs (flashsale.c) ---- */
extern int	fs_lock_timeout_ms;
extern int	fs_coupon_stripes;

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

/* ---- advisory locks in flashsale's own key space (locks.c) ---- */
typedef enum FsLockKind
{
	FS_LOCK_COUPON_STRIPE = 0xF501,
	FS_LOCK_COUPON_MEMBER = 0xF502
} FsLockKind;

extern void fs_locktag(LOCKTAG *tag, FsLockKind kind, int64 key1, int64 key2);
extern bool fs_lock_try(const LOCKTAG *tag);
extern void fs_lock_wait(const LOCKTAG *tag, const char *what);
extern void fs_lock_release(const LOCKTAG *tag);

#endif							/* FLASHSALE_H */
