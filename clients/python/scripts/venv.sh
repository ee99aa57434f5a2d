#!/usr/bin/env bash
# Creates or refreshes clients/python/.venv: the exact pins of requirements.txt plus this package,
# installed editable with its test extra. Idempotent and silent when up to date (a stamp holds the
# hash of the inputs and the Python version), so it needs no network then. Prints the venv's
# python on its last line. PYTHON picks the interpreter (default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.inputs.sha256"

# clients/VERSION is the package's version: the editable install's metadata holds it.
want="$({ cat "$here/requirements.txt" "$here/pyproject.toml" "$here/../VERSION"
  "$python" --version 2>&1; } |
  sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c '' 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi

# A missing or broken venv, or one made by another Python, is made anew.
if ! "$venv/bin/python" -c '' 2>/dev/null ||
  [ "$("$venv/bin/python" --version 2>&1)" != "$("$python" --version 2>&1)" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
"${pip[@]}" install -r "$here/requirements.txt" >&2
# Then the package, from what is installed only: the pins must cover its dependencies and its
# test extra, and the build backend is the pinned one (no build isolation, no download).
"${pip[@]}" install --no-index --no-build-isolation -e "$here[test]" >&2
check="$("$venv/bin/python" -m pip check)" || { echo "$check" >&2; exit 1; }
echo "$want" >"$stamp"
echo "$venv/bin/python"
