# Sluice. `make` builds build/sluice; `make test` installs what is missing,
# builds and runs every test (C unit tests plain and under ASan/UBSan, then
# the black-box suites) and ends with "N passed, N failed"; `make dev` starts
# a local server on the embedded store.

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# override: `make check` passes its own CFLAGS, and these must stay.
override CFLAGS += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -MMD -MP
LDLIBS  := -ljansson -lsqlite3 -lssl -lcrypto -llz4 -lm -pthread
B       ?= build

# Modules, bottom to top (util, cql, store, auth, account, queue and events,
# http and api, client). Each unit test links only the modules it needs
# (TEST_DEPS_<name>), so one module can be built and tested on its own.
UTIL_SRC  := $(wildcard src/util/*.c)
STORE_SRC := $(wildcard src/store/*.c)
ACCT_SRC  := $(wildcard src/account/*.c)
CLIENT_SRC := $(wildcard src/client/*.c)
QUEUE_SRC := $(wildcard src/queue/*.c)
AUTH_SRC  := $(wildcard src/auth/*.c)
HTTP_SRC  := $(wildcard src/http/*.c) $(wildcard src/api/*.c)
CQL_SRC   := $(wildcard src/cql/*.c)
EVENTS_SRC := $(wildcard src/events/*.c)
# The parts of the event log that touch no store (log.c does).
EVENTS_PURE_SRC := src/events/event.c src/events/index.c src/events/page.c
MAIN_SRC  := src/main.c

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))
UTIL_OBJ  := $(call obj,$(UTIL_SRC))
STORE_OBJ := $(call obj,$(STORE_SRC))
QUEUE_OBJ := $(call obj,$(QUEUE_SRC))
AUTH_OBJ  := $(call obj,$(AUTH_SRC))
ACCT_OBJ  := $(call obj,$(ACCT_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
HTTP_OBJ  := $(call obj,$(HTTP_SRC))
CQL_OBJ   := $(call obj,$(CQL_SRC))
EVENTS_OBJ := $(call obj,$(EVENTS_SRC))
LIB_OBJ   := $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ) $(QUEUE_OBJ) $(EVENTS_OBJ) $(AUTH_OBJ) $(ACCT_OBJ) $(HTTP_OBJ) \
             $(CLIENT_OBJ)

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))

TEST_DEPS_test_util   = $(UTIL_OBJ)
TEST_DEPS_test_store  = $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ)
TEST_DEPS_test_engine = $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ) $(AUTH_OBJ) $(ACCT_OBJ) $(QUEUE_OBJ)
TEST_DEPS_test_powerloss = $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ) $(AUTH_OBJ) $(ACCT_OBJ) $(QUEUE_OBJ)
TEST_DEPS_test_cql_client = $(UTIL_OBJ) $(CQL_OBJ)
TEST_DEPS_test_cql_ring = $(UTIL_OBJ) $(CQL_OBJ)
TEST_DEPS_test_auth   = $(UTIL_OBJ) $(AUTH_OBJ)
TEST_DEPS_test_account = $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ) $(AUTH_OBJ) $(ACCT_OBJ) $(QUEUE_OBJ)
TEST_DEPS_test_cql_codec = $(UTIL_OBJ) $(CQL_OBJ)
TEST_DEPS_test_cql_token = $(UTIL_OBJ) $(CQL_OBJ)
TEST_DEPS_test_http_parse = $(UTIL_OBJ) $(B)/obj/src/http/parse.o
TEST_DEPS_test_events = $(UTIL_OBJ) $(call obj,$(EVENTS_PURE_SRC))
TEST_DEPS_test_evlog = $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ) $(EVENTS_OBJ)
TEST_DEPS_test_sqs = $(UTIL_OBJ) $(B)/obj/src/api/sqs_codec.o $(B)/obj/src/api/json.o

.PHONY: all test unit check dev fmt fmt-check clean deps fuzz-cql fuzz-cql-run cql-live fuzz-http fuzz-http-bin \
        fuzz-http-replay store-bench
all: $(B)/sluice

$(B)/sluice: $(call obj,$(MAIN_SRC)) $(LIB_OBJ)
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(LDFLAGS) $(LDLIBS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# openapi.c embeds openapi.json with .incbin; rebuild it when the JSON changes.
$(B)/obj/src/api/openapi.o: src/api/openapi.json src/api/openapi-admin.json
# web.c embeds the dashboard's files likewise.
$(B)/obj/src/api/web.o: web/index.html web/app.js web/style.css

.SECONDEXPANSION:
$(B)/tests/%: tests/unit/%.c $$(if $$(TEST_DEPS_$$*),$$(TEST_DEPS_$$*),$$(LIB_OBJ))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -o $@ $< $(filter %.o,$^) $(LDFLAGS) $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)

# The one command that runs every test, on a fresh machine too.
test:
	@scripts/deps.sh --test
	@scripts/test.sh

# C unit tests under AddressSanitizer and UndefinedBehaviorSanitizer.
check:
	$(MAKE) B=build/san CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" unit

# libFuzzer target for the CQL codec (needs clang). `make fuzz-cql-run`
# fuzzes for FUZZ_SECONDS from the committed seed corpus; new inputs go to
# build/fuzz/cql_frame so the committed corpus only changes on purpose.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all
fuzz-cql: $(B)/fuzz/fuzz_cql_frame

# Only the pure codec: the connection and cluster layers do I/O.
CQL_PURE_SRC := src/cql/codec.c src/cql/token.c
$(B)/fuzz/fuzz_cql_frame: fuzz/fuzz_cql_frame.c $(CQL_PURE_SRC) $(UTIL_SRC) src/cql/codec.h src/cql/token.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/fuzz_cql_frame.c $(CQL_PURE_SRC) $(UTIL_SRC) -llz4 -lcrypto -pthread

fuzz-cql-run: $(B)/fuzz/fuzz_cql_frame
	@mkdir -p $(B)/fuzz/cql_frame
	$(B)/fuzz/fuzz_cql_frame -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(B)/fuzz/ \
	    $(B)/fuzz/cql_frame fuzz/corpus/cql_frame

# libFuzzer target over the whole HTTP surface (fuzz/fuzz_http.c): the real
# server, engine and store in one process. Every object is rebuilt with clang
# and the sanitizers under $(B)/fuzz/obj, as `make check` does under
# build/san. `make fuzz-http` fuzzes for FUZZ_SECONDS on one core (new inputs
# go to $(B)/fuzz/http, findings to $(B)/fuzz/); FUZZ_HTTP_ARGS adds libFuzzer
# flags, e.g. "-fork=1 -ignore_crashes=1" to keep going past a crash.
# `make fuzz-http-replay` runs the committed corpus once: fast, for CI.
FUZZ_HTTP_ARGS ?=
FUZZ_HTTP_RUN  := -max_len=65536 -timeout=30 -rss_limit_mb=4096 -artifact_prefix=$(B)/fuzz/
fuzz-http-bin:
	$(MAKE) --no-print-directory B=$(B)/fuzz CC=$(FUZZ_CC) \
	    CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=fuzzer,address,undefined" $(B)/fuzz/fuzz_http

$(B)/fuzz_http: fuzz/fuzz_http.c $(LIB_OBJ)
	$(CC) $(CFLAGS) -Isrc -o $@ $(filter %.c %.o,$^) $(LDFLAGS) $(LDLIBS)

fuzz-http: fuzz-http-bin
	@mkdir -p $(B)/fuzz/http
	FUZZ_HTTP_NOTES=$(B)/fuzz/http_notes $(B)/fuzz/fuzz_http $(FUZZ_HTTP_RUN) -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 $(FUZZ_HTTP_ARGS) $(B)/fuzz/http fuzz/corpus/http

fuzz-http-replay: fuzz-http-bin
	FUZZ_HTTP_NOTES=$(B)/fuzz/http_notes $(B)/fuzz/fuzz_http $(FUZZ_HTTP_RUN) -runs=0 fuzz/corpus/http

# The codec against a live node (scripts/cassandra.sh start); not in `test`.
cql-live: $(B)/tests/cql_live
$(B)/tests/cql_live: tests/live/cql_live.c $(UTIL_OBJ) $(CQL_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -o $@ $(filter %.c %.o,$^) $(LDFLAGS) $(LDLIBS)

# Throughput of the Cassandra store from N threads (needs a node); not in `test`.
store-bench: $(B)/tests/store_bench
$(B)/tests/store_bench: tests/live/store_bench.c $(UTIL_OBJ) $(CQL_OBJ) $(STORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -o $@ $(filter %.c %.o,$^) $(LDFLAGS) $(LDLIBS)

dev:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	exec $(B)/sluice dev $(ARGS)

# Sluice against its peers and this machine's ceilings (bench/run.sh; ARGS=--quick for a smoke run).
.PHONY: bench
bench:
	bench/run.sh $(ARGS)

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# libFuzzer targets, one per parser (needs clang): `make fuzz`, then e.g.
# build/fuzz/fuzz_auth fuzz/corpus/auth. Built from the sources directly so
# that every module is instrumented.
FUZZ_SRC := fuzz/fuzz_auth.c fuzz/fuzz_ev_token.c fuzz/fuzz_sqs.c
FUZZ_DEPS_fuzz_auth = $(UTIL_SRC) $(AUTH_SRC)
FUZZ_DEPS_fuzz_ev_token = $(UTIL_SRC) $(EVENTS_PURE_SRC)
FUZZ_DEPS_fuzz_sqs = $(UTIL_SRC) src/api/sqs_codec.c src/api/json.c
FUZZ_LIBS_fuzz_sqs = -ljansson
.PHONY: fuzz
fuzz: $(patsubst fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
build/fuzz/%: fuzz/%.c $$(FUZZ_DEPS_$$*)
	@mkdir -p $(dir $@)
	clang -g -O1 -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -Isrc \
	    -o $@ $^ -lcrypto $(FUZZ_LIBS_$*)

# Every committed corpus replayed once under the sanitizers: each past
# finding stays a regression test. scripts/test.sh runs this.
.PHONY: fuzz-replay
fuzz-replay: fuzz-http-bin build/fuzz/fuzz_auth build/fuzz/fuzz_ev_token build/fuzz/fuzz_sqs $(B)/fuzz/fuzz_cql_frame
	$(B)/fuzz/fuzz_cql_frame -runs=0 fuzz/corpus/cql_frame
	build/fuzz/fuzz_auth -runs=0 fuzz/corpus/auth
	build/fuzz/fuzz_ev_token -runs=0 fuzz/corpus/ev_token
	build/fuzz/fuzz_sqs -runs=0 fuzz/corpus/sqs
	FUZZ_HTTP_NOTES=$(B)/fuzz/http_notes $(B)/fuzz/fuzz_http $(FUZZ_HTTP_RUN) -runs=0 fuzz/corpus/http
