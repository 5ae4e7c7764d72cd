# Fuzzing, included by GNUmakefile (include fuzz/fuzz.mk).  Needs clang with
# libFuzzer (Debian: clang and libclang-rt-dev; fuzz-deps installs them).
#
#   make fuzz                  build build-fuzz/fuzz-qcow2-open (libFuzzer, ASan+UBSan)
#   make fuzz-run [FUZZ_TIME=60]   make the seed corpus, fuzz for FUZZ_TIME seconds
#   make check-fuzz [FUZZ_TIME=60] the same, as a test: fails on a crash, leak,
#                              timeout or out-of-memory and names the input
#                              (make check runs it last; FUZZ_TIME=0 skips it)
#
# The library is built again into build-fuzz/ by clang with coverage
# instrumentation (-fsanitize=fuzzer-no-link) and ASan+UBSan, with flags
# fixed here so that every lane (gcc, ucontext, ASan, TSan) shares one
# build: after the first, a lane only pays a make that finds nothing to
# do.  New inputs the fuzzer finds go to build-fuzz/corpus/ (kept between
# runs); crashes to build-fuzz/crash-*; the seed images are made by
# scripts/make-fuzz-corpus.sh (again only when the script changes), never
# committed.

FUZZ_B ?= build-fuzz
FUZZ_TIME ?= 60
FUZZ_TARGETS := $(patsubst fuzz/%.c,$(FUZZ_B)/%,$(wildcard fuzz/fuzz-*.c))
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_BACKEND := $(if $(filter x86_64,$(ARCH)),asm,ucontext)
FUZZ_CFLAGS = -std=gnu11 -O2 -g $(WARN) -D_GNU_SOURCE -I. -Iinclude $(PKG_CFLAGS) \
              -DCOROUTINE_BACKEND_$(FUZZ_BACKEND) $(LIB_DEFS)
FUZZ_SEED_STAMP := $(FUZZ_B)/corpus-seed.made

.PHONY: fuzz fuzz-deps fuzz-run check-fuzz FORCE

fuzz: $(FUZZ_TARGETS)

fuzz-deps:
	@./scripts/install-deps.sh clang libclang-rt-dev

# The library, by the main rules in a make of its own.  Everything that
# could leak in from the calling make's command line is pinned.  The
# archive is only rewritten when an object changed, so the targets below
# are relinked only then.  Warnings stay on but are not errors here: the
# gcc lanes are the -Werror gate, and a warning only clang gives (such as
# an unused g_autofree variable) must not stop the fuzzing.
# (In that make B is FUZZ_B and the main rule builds the archive.)
ifneq ($(abspath $(B)),$(abspath $(FUZZ_B)))
$(FUZZ_B)/libstrata.a: FORCE
	@$(MAKE) --no-print-directory B=$(FUZZ_B) CC=clang SANITIZE=address OPT="-O2 -g" \
	    COROUTINE_BACKEND=$(FUZZ_BACKEND) EXTRA_CFLAGS="-fsanitize=fuzzer-no-link -Wno-error" \
	    EXTRA_LDFLAGS= $(FUZZ_B)/libstrata.a
endif

$(FUZZ_B)/fuzz-%: fuzz/fuzz-%.c tests/unit/mem-image.h $(FUZZ_B)/libstrata.a
	@echo '  LINK   $@'
	@clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_B)/libstrata.a $(PKG_LIBS)

$(FUZZ_SEED_STAMP): scripts/make-fuzz-corpus.sh
	@rm -rf $(FUZZ_B)/corpus-seed
	@./scripts/make-fuzz-corpus.sh $(FUZZ_B)/corpus-seed
	@touch $@

fuzz-run: fuzz $(FUZZ_SEED_STAMP)
	@mkdir -p $(FUZZ_B)/corpus
	$(FUZZ_B)/fuzz-qcow2-open -max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=10 \
	    -rss_limit_mb=2048 -close_fd_mask=2 -print_final_stats=1 -artifact_prefix=$(FUZZ_B)/ \
	    $(FUZZ_B)/corpus $(FUZZ_B)/corpus-seed

ifeq ($(FUZZ_TIME),0)
check-fuzz:
	@echo "check-fuzz: skipped (FUZZ_TIME=0)"
else
check-fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz $(FUZZ_SEED_STAMP)
	@./fuzz/check-fuzz.sh $(FUZZ_B) $(FUZZ_TIME)
endif

FORCE:
