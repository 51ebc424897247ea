"""`alexnet quickstart`, run like a user runs it, on the session's trained and exported digits model."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from fixtures_demo import interrupt, process_group, read_until

from common.model_card import ModelCard
from demo.quickstart import repository_is_current

PORT_OPTIONS = ["--port", "0", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]


def alexnet(*arguments: str, cwd, timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "alexnet_cli", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_repository_is_current_only_for_the_weights_it_was_exported_from(
    digits_model_dir, digits_repository, tmp_path
):
    card = ModelCard.load(digits_model_dir)
    assert repository_is_current(digits_repository, "alexnet", card.weights_sha256)
    assert not repository_is_current(digits_repository, "alexnet", "0" * 64)  # retrained since: export again
    assert not repository_is_current(tmp_path / "missing", "alexnet", card.weights_sha256)


@pytest.mark.pure
def test_quickstart_check_fails_with_a_message_that_names_the_fix(tmp_path):
    broken = tmp_path / "runs" / "digits"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{not json")
    result = alexnet("quickstart", "--check", "--model-dir", str(broken), "--repository",
                     str(tmp_path / "repo"), *PORT_OPTIONS, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "error:" in result.stderr and "alexnet train" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_quickstart_check_serves_self_checks_and_exits_zero(digits_model_dir, digits_repository, tmp_path):
    result = alexnet("quickstart", "--check", "--model-dir", str(digits_model_dir), "--repository",
                     str(digits_repository), *PORT_OPTIONS, cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "already serves these weights" in output  # the session's export is reused, not redone
    assert "HTTP and gRPC agree" in output
    assert "the page classified" in output
    for line in ("Demo page:", "Triton HTTP:", "Triton gRPC:", "Triton metrics:"):
        assert line in output
    assert "quickstart check passed" in output


@pytest.mark.slow
def test_quickstart_serves_the_page_until_ctrl_c_then_stops_everything(digits_model_dir, digits_repository,
                                                                       tmp_path):
    """What `make run` does: the page answers while it runs; Ctrl-C stops the page and Triton, exit 0."""
    command = [sys.executable, "-m", "alexnet_cli", "quickstart", "--model-dir", str(digits_model_dir),
               "--repository", str(digits_repository), *PORT_OPTIONS]
    with process_group(command, tmp_path) as process:
        lines = read_until(process, "Press Ctrl-C", timeout=240)
        page = next(line.split()[-1] for line in lines if "Demo page:" in line)
        triton = next(line.split()[2] for line in lines if "Triton HTTP:" in line)
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200
        rest = interrupt(process)
    assert process.returncode == 0, "".join(lines) + rest
    assert "stopped the demo and Triton" in rest
    for url in (page, f"{triton}/v2/health/live"):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)

