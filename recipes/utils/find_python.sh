# Sourced by hybrid_kd.sh (after parse_options.sh): sets $python to a Python that imports asr_kd, so a
# recipe runs without the venv activated. In order: --python / env PYTHON if given (checked), the
# repository's own .venv/bin/python (made by `make setup`), python3 on PATH if it imports asr_kd;
# else one line saying how to make the venv.
find_python() {
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -n "$python" ]; then
    "$python" -c 'import asr_kd' 2>/dev/null && return 0
    echo "$0: --python $python cannot import asr_kd; make the project's venv with 'make setup' in $repo, or drop --python" >&2
    exit 1
  fi
  if [ -x "$repo/.venv/bin/python" ] && "$repo/.venv/bin/python" -c 'import asr_kd' 2>/dev/null; then
    python=$repo/.venv/bin/python; return 0
  fi
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import asr_kd, torch' 2>/dev/null; then
    python=python3; return 0
  fi
  echo "$0: no Python with asr_kd found: run 'make setup' in $repo (creates .venv, see README.md), or pass --python PATH" >&2
  exit 1
}
find_python
