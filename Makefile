# flashsale: PGXS build.  `make && make install`; tests: scripts/test.sh
EXTENSION   = flashsale
MODULE_big  = flashsale
OBJS        = src/flashsale.o src/errors.o src/spi.o src/locks.o src/coupon.o
DATA        = $(wildcard flashsale--*.sql)
PGFILEDESC  = "flashsale - flash-sale primitives for PostgreSQL"

PG_CONFIG  ?= pg_config
PG_CFLAGS  += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
