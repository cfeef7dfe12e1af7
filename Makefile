# flashsale: PGXS build.  `make && make install` (into the PostgreSQL of pg_config).
# Tests: `make installcheck` against an installed, running server with a Redis of its
# own (see README, "Running the tests against your server"), or scripts/test.sh, which
# starts its own servers.
EXTENSION   = flashsale
MODULE_big  = flashsale
# the foundation, then the Redis transport and its scripts, the features, the sync pass and the worker
OBJS        = src/flashsale.o src/errors.o src/subxact.o src/owner.o src/spi.o src/advisory.o \
              src/table.o src/shmem.o src/stats.o \
              src/tls.o src/cluster.o src/redis.o src/lua.o \
              src/allot.o \
              src/coupon.o src/stock.o src/named_locks.o src/redis_locks.o src/redis_call.o \
              src/throttle_local.o src/throttle.o \
              src/sync.o src/worker.o
DATA        = $(wildcard flashsale--*.sql)
PGFILEDESC  = "flashsale - flash-sale primitives for PostgreSQL"

PG_CONFIG  ?= pg_config
PG_CFLAGS  += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK += -lhiredis
# TLS where the platform's hiredis has it (1.x with hiredis_ssl: Debian 13); src/tls.c
ifneq ($(wildcard /usr/include/hiredis/hiredis_ssl.h),)
PG_CPPFLAGS += -DFS_HAVE_TLS
SHLIB_LINK  += -lhiredis_ssl -lssl -lcrypto
endif
EXTRA_CLEAN = src/lua_scripts.h
LUA_SCRIPTS = $(sort $(wildcard src/lua/*.lua))

# -Werror is not set here: a compiler or PostgreSQL newer than ours may warn where
# we could not look.  The project's scripts build with COPT=-Werror.

# make installcheck: pg_regress in this order (install first), every
# isolation spec, then the TAP tests (which start their own servers: run them as a
# user other than root).  PG_ABS_SRCDIR (the --inputdir) lets the regress files
# include test/sql/*.sql.
REGRESS        = install coupon stock redis_conn sync locks redis_locks throttle stats limits upgrade \
                 security upgrade_all
REGRESS_OPTS   = --encoding=UTF8
ISOLATION      = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=flashsale
TAP_TESTS      = 1
PROVE_TESTS    = $(sort $(wildcard test/t/*.pl))

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# the databases the expected files name (PGXS would say contrib_regression)
CONTRIB_TESTDB   = flashsale_regress
ISOLATION_TESTDB = flashsale_isolation
# the TAP tests' module, test/t/FlashsaleTest.pm (PROVE_FLAGS stays the user's: --verbose...)
PG_PROVE_FLAGS  += -I test/t
# the TAP tests read test/sql/ through FS_ROOT
installcheck prove_installcheck: export FS_ROOT ?= $(CURDIR)

# the TAP tests alone (PGXS runs them at the end of installcheck)
.PHONY: prove_installcheck
prove_installcheck:
	$(prove_installcheck)

# Lua scripts are kept as readable .lua files and compiled in as C strings.
src/lua_scripts.h: $(LUA_SCRIPTS) scripts/lua2c.sh
	sh scripts/lua2c.sh $(LUA_SCRIPTS) > $@

src/lua.o src/lua.bc: src/lua_scripts.h
