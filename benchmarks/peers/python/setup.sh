#!/usr/bin/env bash
# Creates the peers' venv in tickfetch's cache folder ($TICKFETCH_CACHE, else
# $XDG_CACHE_HOME/tickfetch, else ~/.cache/tickfetch) and installs the pinned
# packages. Prints the venv's python. Nothing lands in the work tree.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${TICKFETCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tickfetch}"
venv="$cache/peers-venv"
python="${PYTHON:-python3.11}"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$cache"
  "$python" -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
echo "$venv/bin/python"
