"""``python -m export``: see :func:`export.cli.export_main`."""
import sys

from .cli import export_main as main

if __name__ == "__main__":
    sys.exit(main())
