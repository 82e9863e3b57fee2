#!/usr/bin/env bash
# The whole test suite: generated-code check, ruff, mypy --strict, the default pytest suite,
# then the slow suites. Any failure (or a pytest run that collected no tests) fails the run.
source "$(dirname "$0")/_bootstrap.sh"

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
step "pytest: slow suites"
status=0
pytest -m slow -p no:cacheprovider "$@" || status=$?
# Exit 5 here only means no test is marked slow yet; the default suite above must run tests.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
