#!/usr/bin/env bash
# Installs the Debian packages Blizzard needs, only those that are missing.
# libpmem1: cache-line flushes for FileMedia's `pmem` mode.
# libpmemobj1: the reference in `blizzard bench pool` (optional at run time).
# dpdk, libdpdk-dev, pkg-config: the DPDK transport's native module is compiled
#   against `pkg-config libdpdk` at install time (without them it is left out
#   and only the tcp transport is available).
# iproute2: the DPDK tests put veth pairs in network namespaces (`ip netns`).
set -euo pipefail
need=()
for pkg in libpmem1 libpmemobj1 dpdk libdpdk-dev pkg-config iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# A C compiler, Python's headers and zlib's build the compiled hot paths
# (without them the install still works, with the slower interpreted path).
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# CPython's own test package: tests/structures/test_mapping_protocol.py runs
# its mapping-protocol suites against the persistent maps.
python3 -c 'import test.mapping_tests' >/dev/null 2>&1 || need+=(libpython3.11-testsuite)
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -f "$include/Python.h" ] || need+=(python3-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${need[*]} (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
