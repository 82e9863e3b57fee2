#!/usr/bin/env bash
# The whole test suite: generated-code check, ruff, mypy --strict, the default pytest suite,
# the floor-versions smoke suite (scripts/run-floor-smoke.sh), then the slow suites. Any failure (or a pytest run that collected no tests) fails the run.
source "$(dirname "$0")/_bootstrap.sh"
VENV="${OFFLOAD_REGISTRY_VENV:-$ROOT/.venv}"
ensure_venv "$VENV" "test"
export PATH="$VENV/bin:$PATH"

step() { printf '\n== %s\n' "$*" >&2; }

step "generated sync code is current"
python scripts/unasync.py --check
step "ruff"
ruff check src tests scripts examples
ruff format --check src tests scripts examples
step "mypy --strict"
mypy --strict src

run_pytest() {
  local status=0
  pytest "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests for: $* (exit 5) - failing on purpose" >&2
    return 1
  fi
  return "$status"
}
step "pytest: default suite"
run_pytest -m "not slow" -p no:cacheprovider "$@"
step "floor versions: every runtime dependency at its lowest allowed version"
bash scripts/run-floor-smoke.sh

step "pytest: slow suites"
status=0
pytest -m slow -p no:cacheprovider "$@" || status=$?
# Exit 5 here only means no test is marked slow yet; the default suite above must run tests.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
