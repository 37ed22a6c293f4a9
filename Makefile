# retl: PGXS build
MODULE_big = retl
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
EXTENSION = retl
DATA = $(wildcard retl--*.sql)
PGFILEDESC = "retl - reverse ETL from PostgreSQL"

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type -Wno-clobbered
SHLIB_LINK = -lcurl

# JIT bitcode is not needed, and clang does not take every gcc warning flag
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: bench
bench:
	test/bench/run

# every object depends on the shared headers
$(OBJS): $(wildcard src/*.h)
