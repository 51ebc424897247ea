"""Serving's pure parts: Triton's statistics turned into per-request figures, its classification strings
parsed, and which in-process batch sizes the benchmark times beside which concurrency."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.bench import ServerSide, baseline_partners
from serving.client import parse_classification


def statistics(**counts: int) -> dict[str, int]:
    names = ("success_count", "executions", "inferences", "queue_ns", "compute_input_ns", "compute_infer_ns")
    return {name: counts.get(name, 0) for name in (*names, "compute_output_ns", "success_ns")}


def test_server_side_figures_are_per_request_over_the_window():
    before = statistics(success_count=10, executions=5, inferences=10, queue_ns=1_000_000)
    after = statistics(
        success_count=110,
        executions=30,
        inferences=110,
        queue_ns=201_000_000,
        compute_infer_ns=300_000_000,
        success_ns=600_000_000,
    )
    side = ServerSide.between(before, after)
    assert side.requests == 100 and side.mean_batch_size == pytest.approx(4.0)
    assert side.queue_ms == pytest.approx(2.0) and side.compute_ms == pytest.approx(3.0)
    assert side.in_triton_ms == pytest.approx(6.0)


def test_no_request_in_the_window_gives_no_server_side_figures():
    same = statistics(success_count=10, executions=5)
    assert ServerSide.between(same, same) is None


def test_a_classification_string_keeps_colons_in_the_label():
    prediction = parse_classification(b"0.875:3:tabby: a cat")
    assert (prediction.score, prediction.index, prediction.label) == (0.875, 3, "tabby: a cat")


def test_each_in_process_batch_size_is_timed_beside_its_partner_concurrency():
    assert baseline_partners([1, 16, 64], (1, 8, 64)) == {1: [1], None: [8], 64: [64]}
    assert baseline_partners([16], (1, 64)) == {None: [1], 16: [64]}


def test_tensorrt_engines_are_cached_by_the_onnx_files_bytes_not_by_model_name_or_version(tmp_path):
    """A retrained model exported again as version 1, or alexnet_trt running alexnet's file: an engine
    cached by name and version would be built from other weights (wrong answers, on a GPU only)."""
    from serving.local_repository import tensorrt_cache_dir

    def onnx_file(folder: str, graph: bytes, weights: bytes) -> Path:
        path = tmp_path / folder / "alexnet" / "1" / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(graph)
        path.with_name("model.onnx.data").write_bytes(weights)
        return path

    trained = onnx_file("first", b"graph", b"weights of the first training")
    retrained = onnx_file("second", b"graph", b"weights of the second training")  # same name, version
    same_bytes = onnx_file("third", b"graph", b"weights of the first training")
    assert tensorrt_cache_dir(trained, fp16=True) != tensorrt_cache_dir(retrained, fp16=True)
    assert tensorrt_cache_dir(trained, fp16=True) == tensorrt_cache_dir(same_bytes, fp16=True)
    assert tensorrt_cache_dir(trained, fp16=True) != tensorrt_cache_dir(trained, fp16=False)


def test_an_http_call_that_times_out_is_a_timeout_sent_once_not_a_missing_server():
    """A server that accepts the request and does not answer in time (an overloaded one) must not be
    called absent, nor be sent the request again: that would add to its work."""
    import socket
    import threading

    from serving.client import InferenceRejected, RetryPolicy, TritonClassifier

    connections: list[socket.socket] = []
    with socket.socket() as silent:  # accepts, reads nothing, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(10)

        def accept() -> None:
            try:
                while True:
                    connections.append(silent.accept()[0])
            except OSError:
                pass

        threading.Thread(target=accept, daemon=True).start()
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        classifier = TritonClassifier(url, protocol="http", timeout=0.5, retry=RetryPolicy(deadline=30))
        with pytest.raises(InferenceRejected) as failed:
            classifier.model_config("alexnet")
        classifier.close()
    for connection in connections:
        connection.close()
    assert failed.value.status == "TIMEOUT"
    assert "did not answer within 0.5 s" in str(failed.value) and "no Triton server" not in str(failed.value)
    assert len(connections) == 1, "a timed-out request must not be sent again"
