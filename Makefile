# flashsale: PGXS build.  `make && make install`; tests: scripts/test.sh
EXTENSION   = flashsale
MODULE_big  = flashsale
# the foundation, then the Redis transport and its scripts, the features, the sync pass and the worker
OBJS        = src/flashsale.o src/errors.o src/subxact.o src/owner.o src/spi.o src/advisory.o \
              src/table.o src/shmem.o \
              src/redis.o src/lua.o \
              src/allot.o \
              src/coupon.o src/stock.o src/named_locks.o src/redis_locks.o src/redis_call.o \
              src/sync.o src/worker.o
DATA        = $(wildcard flashsale--*.sql)
PGFILEDESC  = "flashsale - flash-sale primitives for PostgreSQL"

PG_CONFIG  ?= pg_config
PG_CFLAGS  += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK += -lhiredis
EXTRA_CLEAN = src/lua_scripts.h
LUA_SCRIPTS = $(sort $(wildcard src/lua/*.lua))

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Lua scripts are kept as readable .lua files and compiled in as C strings.
src/lua_scripts.h: $(LUA_SCRIPTS) scripts/lua2c.sh
	sh scripts/lua2c.sh $(LUA_SCRIPTS) > $@

src/lua.o src/lua.bc: src/lua_scripts.h
