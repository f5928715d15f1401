#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter for onnx2tf's own environment (onnx2tf 2.x needs
# Python >= 3.12; the main environment stays on 3.11 for the local torch CPU wheel).
# Order: $PYTHON312, python3.12 on PATH (when it runs), pyenv's 3.12 versions, uv's.
set -u
try() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$1"; exit 0; }; }
[ -n "${PYTHON312:-}" ] && try "$PYTHON312"
command -v python3.12 >/dev/null && try "$(command -v python3.12)"
for root in "${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv /opt/pyenv; do
  [ -n "$root" ] || continue
  for p in $(ls -d "$root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV); do try "$p"; done
done
command -v uv >/dev/null && p="$(uv python find 3.12 2>/dev/null)" && [ -n "$p" ] && try "$p"
echo "no Python 3.12 found: onnx2tf 2.x needs one for its own environment; install python3.12 (apt, pyenv or uv) or set PYTHON312=/path/to/python3.12" >&2
exit 1
