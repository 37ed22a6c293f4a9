# retl: PGXS build
MODULE_big = retl
# src/ holds the processes and the SQL API; each subfolder is one layer of
# the data path (src/README): run, read, build, batch, send, store, dest
SRCDIRS = src $(patsubst %/,%,$(sort $(dir $(wildcard src/*/*.c))))
OBJS = $(patsubst %.c,%.o,$(wildcard $(addsuffix /*.c,$(SRCDIRS))))
EXTENSION = retl
DATA = $(wildcard retl--*.sql)
PGFILEDESC = "retl - reverse ETL from PostgreSQL"

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf

PG_CPPFLAGS = $(addprefix -I$(srcdir)/,$(SRCDIRS)) -MMD -MP -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type -Wno-clobbered
SHLIB_LINK = -lcurl

# JIT bitcode is not needed, and clang does not take every gcc warning flag
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: bench
bench:
	test/bench/run

# each object depends on the headers it includes (gcc -MMD writes them
# next to the object), so changing one header rebuilds only its users
EXTRA_CLEAN = $(OBJS:.o=.d)
-include $(wildcard $(OBJS:.o=.d))
