"""Serving's pure parts: Triton's statistics turned into per-request figures, its classification strings
parsed, and which in-process batch sizes the benchmark times beside which concurrency."""

from __future__ import annotations

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
