#!/usr/bin/env bash
# Deploy hook: load every journal under the data root into Redis before workers start.
# Bootstraps .venv like run-demo.sh; extra arguments go to `offload-registry warm` (--help).
# Configured by the environment (global options go before the command, so use these):
#   OFFLOAD_REGISTRY_REDIS_URL=redis://... OFFLOAD_REGISTRY_DATA_ROOT=/srv/offload \
#     bash scripts/warm.sh --json
source "$(dirname "$0")/_bootstrap.sh"
exec offload-registry warm "$@"
