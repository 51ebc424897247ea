"""`alexnet serve` (a real process, stopped by SIGTERM and Ctrl-C), `alexnet classify` and `alexnet bench`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from fixtures_demo import read_until
from fixtures_training import alexnet_in_process
from typer.testing import CliRunner

from serving import cli
from serving.client import TritonClassifier
from serving.errors import ServingError
from serving.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(cli.classify)
    app.command()(cli.bench)
    return app


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_serve_runs_until_a_signal_then_shuts_down_cleanly(digits_repository, digit_files, tmp_path, signum):
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "alexnet_cli", "serve",
        "--repository", str(digits_repository),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
        "--log-file", str(tmp_path / "triton.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # What a user waits for before using the server and pressing Ctrl-C (Triton's own readiness can
        # come a moment earlier: a signal in between would stop serve before it says it is ready).
        started = "".join(read_until(process, "Triton is ready", timeout=120))
        classifier = TritonClassifier(f"127.0.0.1:{grpc_port}")
        assert classifier.is_ready()
        assert classifier.classify_files(digit_files.paths[:2], top_k=1)[0][0].label
        process.send_signal(signum)
        stopping, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (started + stopping)[-3000:]
    assert "Triton stopped." in stopping
    assert not classifier.is_ready()
    assert all(port_is_free(port) for port in (http_port, grpc_port, metrics_port)), (
        "tritonserver left behind"
    )
    classifier.close()


def test_classify_prints_json_in_the_documented_format(digits_server, digit_files):
    paths = [str(path) for path in digit_files.paths[:4]]
    result = CliRunner().invoke(
        cli_app(), ["classify", *paths, "--url", digits_server.grpc_url, "--top-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    with TritonClassifier(digits_server.grpc_url) as classifier:
        expected = classifier.classify_files(paths, top_k=3)
    assert [record["image"] for record in records] == paths
    for record, predictions in zip(records, expected, strict=True):
        assert set(record) == {"image", "top"}
        assert [set(entry) for entry in record["top"]] == [{"label", "index", "score"}] * 3
        assert [entry["label"] for entry in record["top"]] == [p.label for p in predictions]
        assert [entry["score"] for entry in record["top"]] == pytest.approx(
            [p.score for p in predictions], abs=1e-5
        )


def test_classify_prints_a_table_over_http_with_bytes(digits_server, digit_files):
    paths = [str(path) for path in digit_files.paths[:3]]
    result = CliRunner().invoke(
        cli_app(),
        [
            "classify",
            *paths,
            "--url",
            digits_server.http_url,
            "--protocol",
            "http",
            "--send",
            "bytes",
            "--top-k",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "RANK", "LABEL", "SCORE"]
    assert len(lines) == 1 + 3 * 2
    for path in paths:
        assert any(line.startswith(path) for line in lines)


def test_classify_reads_a_folder_in_name_order_and_its_subfolders_with_recursive(
    digits_server, digit_files, tmp_path
):
    folder = tmp_path / "scans"
    (folder / "more").mkdir(parents=True)
    for source, name in zip(digit_files.paths[:4], ["b", "a", "c", "more/d"], strict=True):
        (folder / name).with_suffix(source.suffix).write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("not an image, and not named like one: skipped")

    def classified(*options: str) -> list[dict]:
        result = CliRunner().invoke(
            cli_app(), ["classify", str(folder), "--url", digits_server.grpc_url, "--json", *options]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    top = [folder / f"{name}{source.suffix}" for name, source in zip("bac", digit_files.paths, strict=False)]
    nested = folder / "more" / f"d{digit_files.paths[3].suffix}"
    records = classified()
    assert [record["image"] for record in records] == [str(path) for path in sorted(top)]
    with TritonClassifier(digits_server.grpc_url) as classifier:
        expected = classifier.classify_files(sorted(top), top_k=1)
    assert [record["top"][0]["label"] for record in records] == [answer[0].label for answer in expected]
    recursive = classified("--recursive")
    assert [record["image"] for record in recursive] == [str(path) for path in sorted([*top, nested])]


def test_a_folder_without_images_says_so_and_points_at_recursive(tmp_path):
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    result = alexnet_in_process("classify", str(tmp_path / "photos"), "--wait", "0.1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no JPEG, PNG or WebP files in the folder {tmp_path / 'photos'}: "
        "add --recursive to read its subfolders"
    )


@pytest.mark.parametrize("send", ["pixels", "bytes"])
def test_an_unreadable_image_is_named_with_the_reason_in_plain_words(
    digits_server, digit_files, tmp_path, send
):
    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not a picture")
    result = alexnet_in_process(
        "classify", str(digit_files.paths[0]), str(notes), "--url", digits_server.grpc_url, "--send", send
    )
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(notes) in line
    assert "not a readable JPEG, PNG or WebP image: the file holds text, not a picture" in line
    assert "BytesIO" not in line and "0x" not in line
    missing = tmp_path / "gone.jpg"
    result = alexnet_in_process("classify", str(missing), "--url", digits_server.grpc_url, "--send", send)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot read {missing}: No such file or directory"


def test_classify_explains_a_refused_connection(digit_files):
    result = CliRunner().invoke(
        cli_app(),
        ["classify", str(digit_files.paths[0]), "--url", f"127.0.0.1:{free_port()}", "--wait", "0.5"],
    )
    assert isinstance(result.exception, ServingError)
    assert "no Triton server answers at" in str(result.exception)
    assert "alexnet serve --repository" in str(result.exception)


def test_bench_writes_figures_and_ratios(digits_server, digits_repository, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli_app(),
        [
            "bench", "--url", digits_server.grpc_url, "--concurrency", "1,4", "--duration", "0.6",
            "--warmup", "0.2", "--compare-inprocess", str(digits_repository), "--json", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [point["concurrency"] for point in report["served"]] == [1, 4]
    assert all(point["requests"] > 0 and point["errors"] == 0 for point in report["served"])
    assert all(point["images_per_second"] > 0 for point in report["served"])
    assert [point["batch_size"] for point in report["inprocess"]] == [1, 64]
    assert set(report["ratios"]) == {
        "served_c4_vs_inprocess_b64_throughput",
        "served_c1_p99_vs_inprocess_b1_median_latency",
    }
    assert "served c=4" in result.stdout and "in-proc b=64" in result.stdout
    # Triton's own statistics for the same windows: one client can never be batched with another, four
    # at most four at a time, and no request spends longer inside Triton than its client waited for it.
    c1, c4 = (point["server"] for point in report["served"])
    assert c1["mean_batch_size"] == 1.0 and 1.0 <= c4["mean_batch_size"] <= 4.0
    for point in report["served"]:
        assert 0 < point["server"]["in_triton_ms"] < point["latency"]["mean_ms"]
        assert point["server"]["compute_ms"] > 0 and point["server"]["queue_ms"] >= 0
    assert "Triton's statistics" in result.stdout


def test_bench_over_http(digits_server):
    result = CliRunner().invoke(
        cli_app(),
        ["bench", "--url", digits_server.http_url, "--protocol", "http", "--concurrency", "2",
         "--duration", "0.4", "--warmup", "0.1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "served c=2" in result.stdout
    assert np.isfinite(float(result.stdout.splitlines()[2].split()[2]))
    assert "Triton's statistics" in result.stdout  # the HTTP client reads them too
