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
# The fast tier (`make test-fast`: `pytest -m pure`) is every test in tests/unit and the tests elsewhere
# marked `pure`: run in this process (or a short interpreter check), in about a second, without the
# session's trained model, its export, a server or the browser. These fixtures are what a pure test may
# not use.
SLOW_FIXTURES = {
    "digits_model_dir",
    "two_rank_digits_run",
    "digits_export",
    "digits_repository",
    "served_onnx_session",
    "digits_server",
    "digits_demo",
    "chromium_browser",
    "browser_page",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in tests/unit `pure`; refuse a `pure` test that is also slow or uses a slow fixture."""
    for item in items:
        if item.path.is_relative_to(UNIT_TESTS):
            item.add_marker(pytest.mark.pure)
        if item.get_closest_marker("pure") is None:
            continue
        slow = sorted(SLOW_FIXTURES.intersection(item.fixturenames))
        if slow or item.get_closest_marker("slow"):
            reason = f"uses the session fixture(s) {', '.join(slow)}" if slow else "is also marked slow"
            raise pytest.UsageError(
                f"{item.nodeid} is in the fast tier (marked pure, or in tests/unit) but {reason}: take it "
                "out of the fast tier (drop `pure`, or move it out of tests/unit), or test it without them"
            )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying how to fix it, where the temporary folder's disk cannot hold the suite's files;
    otherwise tests fail one after another with "No space left on device" in their set-up."""
    config = session.config
    if config.option.markexpr == "pure" or all(
        Path(arg.split("::")[0]).resolve().is_relative_to(UNIT_TESTS) for arg in config.args
    ):
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
