# Sourced by run-demo.sh and run-tests.sh: checks Python, defines ensure_venv, cd to the root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "offload-registry needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 2
fi

# ensure_venv VENV EXTRAS [CONSTRAINTS]: a venv at VENV with the project (editable) and the
# given extras ("test", "embedded,metrics", ...), optionally under a pip constraints file.
# Reinstalls only when pyproject.toml, the extras or the constraints changed since the last
# install (a stamp inside the venv), so a second run starts at once.
ensure_venv() {
  local venv="$1" extras="$2" constraints="${3:-}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv" >&2
    "$PY" -m venv "$venv"
  fi
  local stamp="$venv/.offload-registry-installed" want
  want="$( { cat "$ROOT/pyproject.toml"; echo "extras: $extras"; \
             if [ -n "$constraints" ]; then cat "$ROOT/$constraints"; fi; } | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing offload-registry[$extras] into $venv${constraints:+ (constraints: $constraints)}" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet ${constraints:+-c "$ROOT/$constraints"} \
      -e "$ROOT[$extras]" >&2
    echo "$want" > "$stamp"
  fi
}
cd "$ROOT"
