#!/usr/bin/env bash
# Deploy hook: load every journal under the data root into Redis before workers start.
# Bootstraps .venv-demo like run-demo.sh (the package, no test toolchain); extra arguments go
# to `offload-registry warm` (--help).
# Configured by the environment (global options go before the command, so use these):
#   OFFLOAD_REGISTRY_REDIS_URL=redis://... OFFLOAD_REGISTRY_DATA_ROOT=/srv/offload \
#     bash scripts/warm.sh --json
source "$(dirname "$0")/_bootstrap.sh"
VENV="${OFFLOAD_REGISTRY_DEMO_VENV:-$ROOT/.venv-demo}"
ensure_venv "$VENV" "embedded,metrics"
exec "$VENV/bin/offload-registry" warm "$@"
