"""`python -m gpu_check`: the prepared GPU check (gpu_check/__init__.py, docs/gpu.md)."""

import sys

from gpu_check.cli import main

if __name__ == "__main__":
    sys.exit(main())
