#!/usr/bin/env bash
# Installs the Debian packages Blizzard needs, only those that are missing.
# libpmem1: cache-line flushes for FileMedia's `pmem` mode.
# libpmemobj1: the reference in `blizzard bench pool` (optional at run time).
set -euo pipefail
need=()
for pkg in libpmem1 libpmemobj1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${need[*]} (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
