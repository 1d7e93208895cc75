#!/usr/bin/env bash
# Installs what nfpg and its test suite need on Debian or Ubuntu:
#   postgresql  the server programs (initdb, pg_ctl) nfpg starts a private server from when no
#               database is configured; the tests start one per test the same way
#   softflowd   a real NetFlow exporter, used by the integration tests
#   nfdump      nfcapd/nfdump, the reference collector the tests and benchmarks compare with
#   tshark      Wireshark's decoder: fixtures/make-expected.py and tests/tshark_fixtures.rs rebuild
#               the v9/IPFIX expectations with it. Its debconf question (may non-root users
#               capture?) takes its default, no, under DEBIAN_FRONTEND=noninteractive.
#   g++         the C++ compiler libfuzzer-sys builds libFuzzer with (fuzz/; CI builds the targets)
#   chromium chromium-driver  headless Chromium and its WebDriver: tests/dashboard.rs loads the
#               dashboard in a real browser
# With --bench, also what benches/e2e.py compares nfpg with (not needed by the tests):
#   pmacct      nfacctd, pmacct's NetFlow collector, into the same PostgreSQL
#   iproute2    ss, which the harness reads each socket's granted receive buffer with
# Run as root (or with sudo). Safe to run again.
set -euo pipefail
packages=(postgresql softflowd nfdump tshark g++ chromium chromium-driver)
if [ "${1:-}" = "--bench" ]; then
    packages+=(pmacct iproute2)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian package starts a system cluster on port 5432; nfpg does not need it (it runs its
# own private server on a unix socket), so it is left as the package set it up.
echo "setup: ${packages[*]} installed"
