"""Shared fixtures. Each stage keeps its own in tests/fixtures_<stage>.py; later stages build on earlier ones
(a trained digits model -> its exported repository -> a real Triton serving it)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["fixtures_training", "fixtures_export", "fixtures_serving", "fixtures_demo"]

# The most the suite holds on disk at once, measured: the session's digits model and exported repository
# (1.2 GB) and a resume test's two runs of checkpoints (3.2 GB). A passing test's files go as it ends.
NEEDED_FREE_GB = 5
UNIT_TESTS = Path(__file__).parent / "unit"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying how to fix it, where the temporary folder's disk cannot hold the suite's files;
    otherwise tests fail one after another with "No space left on device" in their set-up."""
    if all(Path(arg.split("::")[0]).resolve().is_relative_to(UNIT_TESTS) for arg in session.config.args):
        return  # the fast tier (`make test-fast`) writes no checkpoints
    folder = Path(session.config.option.basetemp or tempfile.gettempdir())
    while not folder.exists():
        folder = folder.parent
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb < NEEDED_FREE_GB:
        pytest.exit(
            f"the test suite writes up to {NEEDED_FREE_GB} GB of checkpoints under {folder}, whose disk has "
            f"{free_gb:.1f} GB free: free some space there, or point TMPDIR at a disk with room "
            "(TMPDIR=/path/with/room make test)",
            returncode=1,
        )
