# ktrigger — build, tests, demo.
#
#   make                         ./ktrigger
#   make SANITIZE=address,undefined   ./ktrigger-asan (ASan+UBSan; objects in build/san-address-undefined)
#   make SANITIZE=thread         ./ktrigger-tsan (TSan; objects in build/san-thread)
#   make check                   unit tests (ASan+UBSan) + integration tests on a real Kafka
#   make test-unit               unit tests only (no network; includes 300 fuzzed configs)
#   make fuzz-config             a longer seeded fuzz run of --check-config (FUZZ_COUNT, FUZZ_SEED)
#   make test-integration        integration tests only
#   make tsan                    ktrigger-tsan + the unit tests under TSan (no network)
#   make test-tsan               make tsan + the core integration scenarios under TSan
#   make demo                    local Kafka + sample runtime + ktrigger, records flowing
#   make image                   the container image (deploy/Dockerfile) with buildah, no daemon
#   make test-image              make image, then its test against a real Kafka (not in make check)
#   make format / format-check   clang-format
#   make LIBRDKAFKA=system ...   any of these against Debian 12's librdkafka 2.0.2 (see below)
#   make test-rdkafka-system     unit tests + the core integration scenarios on that 2.0.2

CC       ?= cc
PYTHON   ?= /usr/bin/python3
PKGS     := libcurl libconfig libmicrohttpd libcjson
comma    := ,

# librdkafka. ktrigger links librdkafka 2.14.2 statically from LIBRDKAFKA_PREFIX, where
# scripts/build-librdkafka (run by scripts/install-deps) builds it from Debian's source package:
# Debian 12's 2.0.2 drops the whole assignment when a commit is refused during a re-join, so a
# clean scale-up could deliver records twice (see that script). LIBRDKAFKA=system builds against
# Debian 12's librdkafka-dev instead, with build dirs and binaries of its own (*-rdkafka-system);
# .ci/run keeps that building and passing the unit tests and the core integration scenarios.
LIBRDKAFKA        ?= pinned
LIBRDKAFKA_PREFIX ?= /opt/ktrigger-deps/librdkafka-2.14.2
ifeq ($(LIBRDKAFKA),system)
  VARIANT        := -rdkafka-system
  RDKAFKA_CFLAGS := $(shell pkg-config --cflags rdkafka 2>/dev/null)
  RDKAFKA_LIBS   := $(shell pkg-config --libs rdkafka 2>/dev/null)
  RDKAFKA_DEP    :=
else ifeq ($(LIBRDKAFKA),pinned)
  VARIANT        :=
  RDKAFKA_CFLAGS := -I$(LIBRDKAFKA_PREFIX)/include
  RDKAFKA_DEP    := $(LIBRDKAFKA_PREFIX)/lib/librdkafka.a
  # The static library's own dependencies, as its rdkafka-static.pc lists them.
  RDKAFKA_LIBS   := $(RDKAFKA_DEP) $(shell pkg-config --libs zlib libcrypto libssl libsasl2 \
                      libzstd libcurl liblz4 2>/dev/null) -lm -ldl -lrt
else
  $(error LIBRDKAFKA is "pinned" (the default) or "system", not "$(LIBRDKAFKA)")
endif
# Sanitizer settings for every instrumented run (tests, integration tests).
export LSAN_OPTIONS  ?= suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
# A TSan report makes the process exit 66 (TSan's default exitcode), failing the test.
export TSAN_OPTIONS  ?= suppressions=$(CURDIR)/scripts/tsan.supp:print_suppressions=0:second_deadlock_stack=1

WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Werror
# Third-party headers as system headers: their warnings are not ours.
DEP_CFLAGS := $(patsubst -I%,-isystem %,$(RDKAFKA_CFLAGS) \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null)) -isystem /usr/include/zookeeper
# Debian's libraries before librdkafka's static one: it bundles a cJSON of its own (as Debian's
# package does not), and this order makes it and us use Debian's libcjson.
DEP_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(RDKAFKA_LIBS) -lzookeeper_mt -lpthread

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 $(WARN) $(DEP_CFLAGS) -MMD -MP
LDLIBS   += $(DEP_LIBS)

# Each sanitizer set has its own build dir and binary, so switching SANITIZE never leaves the
# other one's binary looking up to date.
ifneq ($(SANITIZE),)
  SAN_TAG := $(subst $(comma),-,$(SANITIZE))
  BUILD   := build/san-$(SAN_TAG)$(VARIANT)
  ifeq ($(SAN_TAG),address-undefined)
    BIN   := ktrigger-asan$(VARIANT)
  else ifeq ($(SAN_TAG),thread)
    BIN   := ktrigger-tsan$(VARIANT)
  else
    BIN   := ktrigger-san-$(SAN_TAG)$(VARIANT)
  endif
  CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all -O1
  LDFLAGS += -fsanitize=$(SANITIZE)
else
  BUILD   := build/release$(VARIANT)
  BIN     := ktrigger$(VARIANT)
endif

MODULES  := core config consumer dispatch metrics
SRCS     := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
# TSan builds link C11 threads mapped onto pthreads (see the file): without it librdkafka's
# threads crash TSan.
TSAN_SHIM := core/tsan/tsan_c11_shim.c
ifneq ($(filter thread,$(subst $(comma), ,$(SANITIZE))),)
  OBJS   += $(TSAN_SHIM:%.c=$(BUILD)/%.o)
endif
LIB_OBJS := $(filter-out $(BUILD)/core/core_main.o,$(OBJS))

TEST_SRCS := $(foreach m,$(MODULES),$(wildcard $(m)/tests/test_*.c))
TEST_BINS := $(TEST_SRCS:%.c=$(BUILD)/%)

FORMAT_FILES := $(SRCS) $(TEST_SRCS) $(TSAN_SHIM) $(wildcard */*.h */tests/*.h)

.PHONY: all deps check test test-unit test-integration tsan test-tsan demo format format-check \
        clean ktrigger-san

all: $(BIN)

deps:
	scripts/install-deps

$(BIN): $(OBJS) $(RDKAFKA_DEP)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

# The ASan+UBSan binary's former name, kept as a link for commands and notes that still use it.
ktrigger-san:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined ktrigger-asan
	ln -sfn ktrigger-asan $@

# Without SANITIZE, `make ktrigger-asan` / `make ktrigger-tsan` build them with it: an old
# binary must never look up to date because this make does not know its objects.
ifeq ($(SANITIZE),)
.PHONY: ktrigger-asan$(VARIANT) ktrigger-tsan$(VARIANT)
ktrigger-asan$(VARIANT):
	@$(MAKE) --no-print-directory SANITIZE=address,undefined $@
ktrigger-tsan$(VARIANT):
	@$(MAKE) --no-print-directory SANITIZE=thread $@
endif

ifneq ($(RDKAFKA_DEP),)
$(RDKAFKA_DEP):
	@echo "make: $@ is missing. ktrigger links librdkafka 2.14.2 from" \
	  "$(LIBRDKAFKA_PREFIX): run scripts/install-deps (it runs scripts/build-librdkafka)," \
	  "or build against Debian's librdkafka 2.0.2 with make LIBRDKAFKA=system" >&2; exit 1
endif

# Which librdkafka a build dir's objects were compiled for: when that changes (a checkout whose
# build/release holds objects of the former default, Debian's 2.0.2), every object is rebuilt.
RDKAFKA_STAMP := $(BUILD)/rdkafka.stamp
RDKAFKA_ID    := $(LIBRDKAFKA) $(RDKAFKA_CFLAGS) $(RDKAFKA_LIBS)
$(RDKAFKA_STAMP): FORCE
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = '$(RDKAFKA_ID)' ] || echo '$(RDKAFKA_ID)' > $@
.PHONY: FORCE
FORCE:

$(BUILD)/%.o: %.c $(RDKAFKA_STAMP) | $(RDKAFKA_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%: %.c $(LIB_OBJS) $(RDKAFKA_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DKT_EXAMPLE_CONF='"$(CURDIR)/config/ktrigger.conf.example"' $(LDFLAGS) \
	  -o $@ $< $(LIB_OBJS) $(LDLIBS)

# Unit tests always run instrumented.
test-unit:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined UNIT_EXTRA=scripts/fuzz-config unit-run

.PHONY: unit-run
unit-run: $(TEST_BINS) $(BIN)
	@KTRIGGER_BIN=$(CURDIR)/$(BIN) scripts/run-unit-tests $(TEST_BINS) scripts/check-example-config \
	  $(UNIT_EXTRA)

# Mutated configs through --check-config (instrumented): each must exit 0 or 78 in time,
# never crash, hang or print a sanitizer report. make check runs 300 cases of seed 1 (about 20 s;
# with the ASan+UBSan unit run only, not under TSan).
FUZZ_COUNT ?= 5000
FUZZ_SEED  ?= $(shell date +%s)
.PHONY: fuzz-config
fuzz-config:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined ktrigger-asan$(VARIANT)
	KTRIGGER_BIN=$(CURDIR)/ktrigger-asan$(VARIANT) scripts/fuzz-config --count $(FUZZ_COUNT) --seed $(FUZZ_SEED)

# Integration tests run the instrumented daemon against a real broker.
# (The release binary too: memory is measured on what users run.) INTEGRATION_TESTS: a subset.
# integration-tests/run-suite: one broker, the tests that pause it first and alone, the rest in
# KT_TEST_JOBS (default 2) pytest-xdist workers.
INTEGRATION_TESTS ?= integration-tests
test-integration:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined ktrigger-asan$(VARIANT)
	@$(MAKE) --no-print-directory ktrigger$(VARIANT)
	KTRIGGER_BIN=$(CURDIR)/ktrigger-asan$(VARIANT) KTRIGGER_RELEASE_BIN=$(CURDIR)/ktrigger$(VARIANT) \
	  PYTHON=$(PYTHON) integration-tests/run-suite $(INTEGRATION_TESTS)

# ThreadSanitizer: the unit tests, then the core scenarios of the integration suite (records
# end to end, the orderings, drains on SIGTERM and revoke: the paths where the loop, librdkafka's
# threads and libmicrohttpd's meet), against the same broker as test-integration.
TSAN_TESTS ?= integration-tests/test_0010_end_to_end.py integration-tests/test_0100_ordering.py \
              integration-tests/test_0270_drain_contract.py
tsan:
	@$(MAKE) --no-print-directory SANITIZE=thread unit-run

test-tsan: tsan
	KTRIGGER_BIN=$(CURDIR)/ktrigger-tsan$(VARIANT) $(PYTHON) -m pytest -ra $(TSAN_TESTS)

# Debian 12's own librdkafka 2.0.2 (LIBRDKAFKA=system): the unit tests and the same core
# integration scenarios, so a build on Debian's packages alone keeps working (.ci/run).
.PHONY: test-rdkafka-system
test-rdkafka-system:
	@$(MAKE) --no-print-directory LIBRDKAFKA=system test-unit
	@$(MAKE) --no-print-directory LIBRDKAFKA=system INTEGRATION_TESTS="$(TSAN_TESTS)" \
	  test-integration

check:
	scripts/install-deps
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-integration

test: check

demo:
	scripts/install-deps
	@$(MAKE) --no-print-directory ktrigger
	scripts/demo

format:
	clang-format -i $(FORMAT_FILES)

format-check: lint-opaque
	@clang-format --dry-run -Werror $(FORMAT_FILES) && echo "format-check: OK"

# The record and partition structs are the lifecycle module's (consumer/consumer_lifecycle.h):
# only these files may include that header.
LIFECYCLE_FILES := consumer/consumer_group.c consumer/consumer_record.c \
  consumer/consumer_tracker.c core/core_record.c dispatch/dispatch_sched.c \
  consumer/tests/test_lifecycle.c consumer/tests/test_record_state.c \
  consumer/tests/test_tracker.c consumer/tests/test_wakeup.c dispatch/tests/test_sched.c
.PHONY: lint-opaque
lint-opaque:
	@bad=$$(grep -rl --include='*.c' --include='*.h' 'include "[^"]*consumer_lifecycle\.h"' . \
	  | sed 's|^\./||' | grep -vxF -e consumer/consumer_lifecycle.h $(LIFECYCLE_FILES:%=-e %)); \
	if [ -n "$$bad" ]; then \
	  echo "lint-opaque: only the lifecycle module may include consumer_lifecycle.h:" $$bad >&2; \
	  exit 1; \
	fi; echo "lint-opaque: OK"

clean:
	rm -rf build ktrigger ktrigger-san ktrigger-asan ktrigger-tsan ktrigger-san-* ktrigger-*rdkafka-system

-include $(OBJS:.o=.d) $(TEST_BINS:=.d)

# ---------------------------------------------------------------------------- install
# make install [PREFIX=/usr/local] [DESTDIR=...]: the release binary, the systemd unit, the
# example config (ktrigger.conf too, only if absent) and ktrigger(8).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
INSTALL    ?= install

.PHONY: install uninstall manifests

ifneq ($(SANITIZE),)
install:
	$(error make install installs the release build: run it without SANITIZE)
else
install: ktrigger
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR)/ktrigger
	$(INSTALL) -m 0755 ktrigger $(DESTDIR)$(BINDIR)/ktrigger
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		deploy/ktrigger.service.in > $(DESTDIR)$(UNITDIR)/ktrigger.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/ktrigger.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/ktrigger.service.tmp $(DESTDIR)$(UNITDIR)/ktrigger.service
	$(INSTALL) -m 0644 deploy/ktrigger.8 $(DESTDIR)$(MANDIR)/man8/ktrigger.8
	$(INSTALL) -m 0644 config/ktrigger.conf.example \
		$(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf.example
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf ]; then \
		echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf"; \
	else \
		echo "$(INSTALL) -m 0644 config/ktrigger.conf.example $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf"; \
		$(INSTALL) -m 0644 config/ktrigger.conf.example $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf; \
	fi
endif

# Leaves ktrigger.conf (edited by its owner) in place.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ktrigger $(DESTDIR)$(UNITDIR)/ktrigger.service \
		$(DESTDIR)$(MANDIR)/man8/ktrigger.8 $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf.example
	@[ ! -e $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf ] || \
		echo "uninstall: left $(DESTDIR)$(SYSCONFDIR)/ktrigger/ktrigger.conf in place"

# Regenerate the committed sample function manifests (deploy/kubernetes) with the generator.
manifests:
	$(PYTHON) deploy/ktrigger-manifest hello --handler hello.handler \
		--runtime-image kubeless/python:3.7 --trigger-topic hello-topic \
		--from-file deploy/kubernetes/function/hello.py \
		-o deploy/kubernetes/function/hello.yaml
	$(PYTHON) deploy/ktrigger-manifest hello --handler hello.handler \
		--runtime-image kubeless/python:3.7 --trigger-topic hello-topic \
		--brokers kafka-1.example.com:9093,kafka-2.example.com:9093 \
		--from-file deploy/kubernetes/function/hello.py --sasl-secret hello-kafka-sasl \
		-o deploy/kubernetes/examples/sasl/hello-sasl.yaml
	$(PYTHON) deploy/ktrigger-manifest hello --handler hello.handler \
		--runtime-image kubeless/python:3.7 --trigger-topic hello-topic \
		--brokers kafka-1.example.com:9093,kafka-2.example.com:9093 \
		--from-file deploy/kubernetes/function/hello.py --sasl-secret hello-kafka-sasl \
		--static-membership --keda --keda-max-replicas 6 \
		-o deploy/kubernetes/examples/keda/hello-keda.yaml
	{ cat deploy/prometheus/prometheusrule.head; \
	  sed -e '/^#/d' -e 's/^./  &/' deploy/prometheus/ktrigger.rules.yml; } \
		> deploy/kubernetes/monitoring/prometheusrule.yaml

# ---------------------------------------------------------------------------- benchmarks
# make bench-quick (about 3 minutes before the batched scenarios, not re-timed since) / make bench (the full matrix): own Kafka
# broker, nginx runtimes, ceilings measured in the same run; table on stdout and
# bench/results/latest.json (make bench; make bench-quick: partial.json; see bench/README.md). Reports numbers; never fails on speed.
# bench/bare_forwarder is the per-record ceiling bench.py runs beside ktrigger (not the product).
.PHONY: bench bench-quick bare-forwarder

BARE_FORWARDER := build/release$(VARIANT)/bench/bare_forwarder

bare-forwarder: $(BARE_FORWARDER)

$(BARE_FORWARDER): bench/bare_forwarder.c $(RDKAFKA_DEP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 $(WARN) $(patsubst -I%,-isystem %,$(RDKAFKA_CFLAGS) \
	  $(shell pkg-config --cflags libcurl)) -o $@ $< $(RDKAFKA_LIBS) $(shell pkg-config --libs libcurl) -lpthread

bench:
	scripts/install-deps
	@$(MAKE) --no-print-directory ktrigger bare-forwarder
	BARE_FORWARDER_BIN=$(CURDIR)/$(BARE_FORWARDER) $(PYTHON) bench/bench.py --full

bench-quick:
	scripts/install-deps
	@$(MAKE) --no-print-directory ktrigger bare-forwarder
	BARE_FORWARDER_BIN=$(CURDIR)/$(BARE_FORWARDER) $(PYTHON) bench/bench.py --quick

# ---------------------------------------------------------------------------- container image
# make image [IMAGE=ktrigger:VERSION]: deploy/Dockerfile built by buildah (vfs, chroot isolation)
# on a Debian bookworm base made by mmdebstrap, into the project's image store
# (scripts/image-buildah; cached in /var/cache/ktrigger-image, see scripts/build-image).
# make test-image: that, then integration-tests/test_0950_image.py (hadolint, the image's
# ktrigger against the real broker). Slow the first time: run by .ci/run after make check.
VERSION := $(shell sed -n 's/^\#define KT_VERSION "\(.*\)"/\1/p' core/core.h)
IMAGE   := ktrigger:$(VERSION)

.PHONY: image test-image

image:
	scripts/install-image-deps
	scripts/build-image $(IMAGE) $(VERSION)

test-image: image
	KT_IMAGE=$(IMAGE) $(PYTHON) -m pytest -ra -m image integration-tests/test_0950_image.py
