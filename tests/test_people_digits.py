"""Digits as people bring them (training/people_digits.py's held-out test split), read by the session's digits
model through the served image endpoint and through the demo page's own functions (`alexnet people-digits`):
at least 95% right in every style, and one answer per picture whichever way it came."""

from __future__ import annotations

import pytest

from training.people_digits import STYLES

pytestmark = pytest.mark.slow

MIN_TOP1 = 0.95


def test_every_style_is_read_through_the_image_endpoint_and_the_page(digits_demo):
    from demo.people_check import format_table, measure

    results = measure(digits_demo.client, split="test", per_digit=10)
    table = format_table(results, seconds=0)
    assert [result.style for result in results] == list(STYLES)
    assert all(result.pictures == 100 for result in results)
    assert all(result.endpoint_top1 >= MIN_TOP1 for result in results), table
    assert all(result.page_top1 >= MIN_TOP1 for result in results), table
    assert all(result.same_answers == result.pictures for result in results), table


def test_the_command_prints_a_line_per_style_and_writes_them_as_json(digits_demo, tmp_path):
    import json

    from fixtures_training import alexnet_command

    out = tmp_path / "people.json"
    result = alexnet_command(
        "people-digits", "--url", digits_demo.triton_grpc_url, "--per-digit", "1", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "image endpoint" in result.stdout and "sketchpad" in result.stdout
    assert [entry["style"] for entry in json.loads(out.read_text())] == list(STYLES)


def test_a_blank_page_is_refused_with_what_to_send(digits_demo):
    import io

    from PIL import Image

    from serving.client import InferenceRejected

    blank = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(blank, format="PNG")
    with pytest.raises(InferenceRejected, match="no digit found in the image") as refused:
        digits_demo.client.classify_bytes([blank.getvalue()])
    assert refused.value.status == "INVALID_ARG"
