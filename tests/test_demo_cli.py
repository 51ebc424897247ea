"""`alexnet demo` as a user runs it: against the session's Triton, and against nothing."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from fixtures_demo import interrupt, process_group, read_until

pytestmark = pytest.mark.slow


def test_alexnet_demo_serves_the_page_until_ctrl_c(digits_server, tmp_path):
    from gradio_client import Client, handle_file

    from demo.examples import digit_example_files
    from serving.server import free_port

    command = [sys.executable, "-m", "alexnet_cli", "demo", "--url", digits_server.grpc_url,
               "--port", str(free_port())]
    with process_group(command, tmp_path) as process:
        lines = read_until(process, "Press Ctrl-C", timeout=120)
        page = next(line.split()[2] for line in lines if line.startswith("Demo page:"))
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200
        label, _ = Client(page, verbose=False).predict(handle_file(str(digit_example_files()[0])),
                                                       api_name="/classify_image")
        assert len(label["confidences"]) == 5
        rest = interrupt(process)
    assert process.returncode == 0, "".join(lines) + rest
    with pytest.raises(OSError):
        urllib.request.urlopen(page, timeout=5)


def test_alexnet_demo_without_triton_says_how_to_start_it(tmp_path):
    from serving.server import free_port

    nobody = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "alexnet_cli", "demo", "--url", nobody, "--wait", "1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no Triton server answers" in result.stderr
    assert "alexnet serve --repository" in result.stderr and "alexnet quickstart" in result.stderr
    assert "Traceback" not in result.stderr
