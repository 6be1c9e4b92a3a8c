#!/usr/bin/env bash
# The soak test for longer: concurrent ingests (the same files again and
# again), resolves, tier applies, steward decisions over HTTP and queries on
# one lake for SECONDS (default 600), then every check of
# tests/it/soak.rs. Prints the operations of each kind and the rows checked.
#
#   benches/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CUSTLAKE_SOAK_SECONDS="${1:-600}" cargo test --test it soak -- --nocapture 2>&1 \
  | grep -E "^soak:|test result|panicked|assert" || true
