# Fuzzing, included by GNUmakefile (include fuzz/fuzz.mk).  Needs clang with
# libFuzzer (Debian: clang; libclang_rt.fuzzer comes with it).
#
#   make fuzz                  build build-fuzz/fuzz-qcow2-open (libFuzzer, ASan+UBSan)
#   make fuzz-run [FUZZ_TIME=60]   make the seed corpus, fuzz for FUZZ_TIME seconds
#
# The library is built again into build-fuzz/ by clang with coverage
# instrumentation (-fsanitize=fuzzer-no-link) and ASan+UBSan.  New inputs
# the fuzzer finds go to build-fuzz/corpus/ (kept between runs); crashes
# to build-fuzz/crash-*; the seed images are made by
# scripts/make-fuzz-corpus.sh, never committed.

FUZZ_B := build-fuzz
FUZZ_TIME ?= 60
FUZZ_TARGETS := $(patsubst fuzz/%.c,$(FUZZ_B)/%,$(wildcard fuzz/fuzz-*.c))
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

.PHONY: fuzz fuzz-lib fuzz-run

fuzz: $(FUZZ_TARGETS)

# The library, by the main rules in a make of its own (B, CC and flags differ).
fuzz-lib:
	@$(MAKE) --no-print-directory B=$(FUZZ_B) CC=clang SANITIZE=address \
	    EXTRA_CFLAGS="$(EXTRA_CFLAGS) -fsanitize=fuzzer-no-link" $(FUZZ_B)/libstrata.a

$(FUZZ_B)/fuzz-%: fuzz/fuzz-%.c tests/unit/mem-image.h fuzz-lib
	clang $(filter-out -fsanitize=%,$(CFLAGS_ALL)) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< \
	    $(FUZZ_B)/libstrata.a $(PKG_LIBS)

fuzz-run: fuzz
	@./scripts/make-fuzz-corpus.sh $(FUZZ_B)/corpus-seed
	@mkdir -p $(FUZZ_B)/corpus
	$(FUZZ_B)/fuzz-qcow2-open -max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=10 \
	    -rss_limit_mb=2048 -close_fd_mask=2 -print_final_stats=1 -artifact_prefix=$(FUZZ_B)/ \
	    $(FUZZ_B)/corpus $(FUZZ_B)/corpus-seed
