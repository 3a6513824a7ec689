# ebpf-energy build, test and benchmark entry points.
# `make test` and `make run` set up everything a fresh (Debian, root) machine lacks.

PYTHON      ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
CLANG       ?= clang
LLVM_STRIP  ?= $(shell command -v llvm-strip || ls /usr/bin/llvm-strip-* 2>/dev/null | head -n1)
ARCH        := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
# -fdebug-prefix-map makes the object identical whatever folder it is built in,
# so CI can check that the shipped object is what this source builds.
BPF_CFLAGS  := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -I$(CURDIR) -I$(CURDIR)/bpf \
               -fdebug-prefix-map=$(CURDIR)=. -Wall -Wno-unused-function
APT_PKGS    := clang llvm bpftool libbpf-dev linux-perf prometheus chromium chromium-driver systemtap-sdt-dev

PKG_OBJS    := $(patsubst bpf/%.bpf.c,ebpf_energy/bpf/%.bpf.o,$(wildcard bpf/*.bpf.c))
TEST_OBJS   := $(patsubst tests/bpf/%.bpf.c,tests/bpf/build/%.bpf.o,$(wildcard tests/bpf/*.bpf.c))
BENCH_OBJS  := $(patsubst bench/bpf/%.bpf.c,bench/build/%.bpf.o,$(wildcard bench/bpf/*.bpf.c))

.PHONY: all objects test-objects bench-objects deps apt venv test fuzz bench run clean regen-vmlinux testdata

all: objects test-objects

objects: $(PKG_OBJS)
test-objects: $(TEST_OBJS)
bench-objects: $(BENCH_OBJS)

# The shipped object keeps BTF and .BTF.ext (line info) but not DWARF: 10x smaller.
ebpf_energy/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp
	$(LLVM_STRIP) -g $@.tmp -o $@
	@rm -f $@.tmp

# usdt.bpf.h includes <linux/errno.h>, whose <asm/errno.h> is in the multiarch include dir
MULTIARCH   := $(shell $(CC) -print-multiarch 2>/dev/null || $(CLANG) -print-multiarch)
tests/bpf/build/%.bpf.o: tests/bpf/%.bpf.c vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -I$(CURDIR)/tests/bpf -idirafter /usr/include/$(MULTIARCH) -c $< -o $@

bench/build/%.bpf.o: bench/bpf/%.bpf.c vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The committed vmlinux.h is what every build uses (CO-RE makes the object run
# on other kernels), so a build never rewrites it: `make regen-vmlinux`
# regenerates it from the running kernel's BTF, on purpose.
vmlinux.h:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

# Stripped, committed copies of some test objects (tests/testdata): the golden
# prepare() tests run from them without clang; tests/test_prepare.py checks
# they are what the sources build. `make testdata` refreshes them and the golden files.
TESTDATA    := core_task externs subprog tp_btf_counter ringbuf maps_all fake_kernel hello
testdata: deps test-objects
	@for n in $(TESTDATA); do $(LLVM_STRIP) -g tests/bpf/build/$$n.bpf.o -o tests/testdata/$$n.bpf.o; done
	UPDATE_GOLDEN=1 $(VPY) -m pytest -q -p no:cacheprovider tests/test_prepare.py -k test_golden

regen-vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h.tmp && mv vmlinux.h.tmp vmlinux.h

apt:
	@missing=""; \
	for c in clang llc bpftool perf prometheus chromium chromedriver; do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing=1; \
	[ -f /usr/include/sys/sdt.h ] || [ -f /usr/include/$(MULTIARCH)/sys/sdt.h ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(APT_PKGS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

$(VPY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,exporter,plot]'
	@touch $(VPY)

venv: $(VPY)

deps: apt venv

test: deps objects test-objects bench-objects
	$(VPY) -m pytest -q -rs

fuzz: deps test-objects
	FUZZ_CASES=50000 $(VPY) -m pytest -q tests/test_fuzz_pure.py tests/test_fuzz_object.py

bench: deps objects test-objects bench-objects
	$(VPY) bench/run.py

run: deps objects
	$(VENV)/bin/ebpf-energy monitor -d 10

clean:
	rm -rf tests/bpf/build bench/build
