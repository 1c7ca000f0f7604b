"""Settings for the whole test run."""
import subprocess

# The long test process died with SIGSEGV, and no faulthandler traceback, as it started a subprocess: three times
# in fresh-clone CI runs (at tests/test_readme.py twice, tests/test_lint.py once), after hundreds of tests had loaded
# torch, ONNX Runtime, OpenVINO and started server threads. Not root-caused. vfork() shares the parent's memory
# with the child until exec, so the subprocesses of the tests are made with fork() here (a private switch of
# CPython's subprocess module, present in 3.10-3.13); scripts/test.sh also runs the tests in three processes.
if hasattr(subprocess, "_USE_VFORK"):
    subprocess._USE_VFORK = False
