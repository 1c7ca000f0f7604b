#!/usr/bin/env bash
# Set up a fresh machine for the test suite and run it: virtualenv, the package with every extra, a second
# virtualenv with the torch-free `serving-onnx` install, the system browser for the demo-page test, then pytest.
# Extra arguments go to pytest (for development: `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[all,test]"
ONNX_VENV=${ONNX_VENV:-.venv-onnx}
[ -x "$ONNX_VENV/bin/python" ] || python3 -m venv "$ONNX_VENV"
"$ONNX_VENV/bin/python" -m pip install -q --upgrade pip
"$ONNX_VENV/bin/python" -m pip install -q -e ".[serving-onnx]"
export O365ZOO_ONNX_VENV="$PWD/$ONNX_VENV/bin/python"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the demo-page browser test will be skipped" >&2
  else
    echo "warning: chromium missing and not root; the demo-page browser test will be skipped" >&2
  fi
fi
# The tests run in three pytest processes (serving; the rest; the int8 tests): in fresh-clone CI runs the single long
# test process crashed (SIGSEGV) at a subprocess start after hundreds of tests, at different places; not root-caused
# (see tests/conftest.py). A group with no test selected (pytest's exit status 5) is not a failure.
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then  # test paths given: run just those, in one process
  exec "$VENV/bin/python" -m pytest -q "$@"
fi
failed=0
pytest_group() {
  local rc=0
  "$VENV/bin/python" -m pytest -q "$@" || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then failed=$rc; fi
}
pytest_group tests/serving "$@"
pytest_group tests --ignore=tests/serving --ignore=tests/test_quantize.py "$@"
pytest_group tests/test_quantize.py "$@"
exit "$failed"
