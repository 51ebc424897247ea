"""Session fixtures for the demo: the page on a free port in front of the real Triton, and a real Chromium.

The browser is Debian's `chromium` (installed by `make setup-test`), driven by Playwright through
`executable_path`; Playwright never downloads one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest keep it from reaching for the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def as_drawing(scan: np.ndarray, canvas: int = 400, digit_height: int = 260) -> np.ndarray:
    """A validation scan as a user would draw it: a black pen (ink or none), large, off-centre, on the
    sketchpad's transparent RGBA canvas."""
    enlarged = np.asarray(Image.fromarray(scan, mode="L").resize((digit_height,) * 2, Image.BILINEAR))
    drawing = np.zeros((canvas, canvas, 4), np.uint8)  # transparent black
    drawing[90 : 90 + digit_height, 40 : 40 + digit_height, 3] = np.where(enlarged >= 128, 255, 0)
    return drawing


@dataclass(frozen=True)
class RunningDemo:
    url: str  # the page, http://127.0.0.1:PORT/
    triton_grpc_url: str
    client: object  # the serving.client.TritonClassifier the page uses


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def chromium_browser():
    """A headless Chromium for the browser tests' module (new pages per test are cheap). Not for the session:
    Playwright's sync API keeps an asyncio loop running in the main thread until it stops, which would break
    every later test that calls asyncio.run()."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not executable:
        pytest.fail("no /usr/bin/chromium: run `make setup-test` (it installs Debian's chromium package)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def browser_page(chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def digits_demo(digits_server, digits_repository) -> Iterator[RunningDemo]:
    """The demo page (built by build_demo with a real gRPC client) on a free port, for the session."""
    from demo.app import build_demo, launch_demo
    from serving.client import TritonClassifier
    from serving.server import free_port

    client = TritonClassifier(digits_server.grpc_url, protocol="grpc")
    client.wait_until_ready(timeout=60)
    page = build_demo(client, digits_repository)
    url = launch_demo(page, port=free_port(), quiet=True)
    yield RunningDemo(url=url, triton_grpc_url=digits_server.grpc_url, client=client)
    page.close(verbose=False)
    client.close()


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    """Lines of the process's output up to the one containing `marker` (fails if it exits or stalls)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return lines
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no {marker!r} within {timeout:.0f}s; output:\n{''.join(lines)}")


@contextlib.contextmanager
def process_group(command: list[str], cwd: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """`command` in its own process group, text output on stdout; killed with its children if still running.

    A terminal's Ctrl-C goes to the whole foreground group (the CLI and the tritonserver it started):
    `interrupt` sends SIGINT the same way.
    """
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def interrupt(process: subprocess.Popen, timeout: float = 60) -> str:
    """Ctrl-C to the process group; the rest of its output once it has exited."""
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=timeout)
    return rest
