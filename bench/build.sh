#!/bin/sh
# Build the libbpf reference harness (needs libbpf-dev): bench/build/libbpf_harness
set -e
cd "$(dirname "$0")"
mkdir -p build
${CC:-cc} -O2 -Wall libbpf_harness.c -lbpf -o build/libbpf_harness
