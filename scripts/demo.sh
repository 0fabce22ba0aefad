#!/usr/bin/env bash
# The demo: installs what is missing, builds, then runs a small mesh on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null
exec scripts/demo-run.sh build
