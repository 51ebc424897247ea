"""The sketchpad conversion: a drawing becomes a scan like the digits the model learned from. No server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fixtures_demo import as_drawing
from PIL import Image, ImageDraw

from demo.drawing import drawing_to_digit_scan
from demo.errors import DemoError
from demo.examples import validation_digits


@pytest.mark.pure
def test_drawn_validation_digits_come_back_as_their_scans():
    images, _ = validation_digits()
    correlations = []
    for scan in images[:60]:
        converted = drawing_to_digit_scan(as_drawing(scan))
        assert converted.shape == scan.shape and converted.dtype == np.uint8
        assert converted.max() == 255  # ink bright on dark, full contrast like the scans
        correlations.append(np.corrcoef(converted.ravel(), scan.ravel())[0, 1])
    # Not the very scan: the conversion centres the ink and redraws it with the scans' usual pen (30% of the
    # bitmap), not each writer's own.
    assert np.median(correlations) > 0.85, correlations


@pytest.mark.pure
def test_thin_pen_is_thickened_to_the_scans_stroke():
    drawing = Image.new("RGB", (800, 800), "white")
    ImageDraw.Draw(drawing).ellipse((250, 150, 550, 650), outline="black", width=6)  # a thin "0"
    scan = drawing_to_digit_scan(np.asarray(drawing))
    ring = scan[[0, -1], 2:6].ravel().tolist() + scan[2:6, [1, -2]].ravel().tolist()
    assert min(ring) > 100, scan  # the outline reaches the scan's edges, bright
    assert scan[3:5, 3:5].max() < 40, scan  # the hole stays dark


@pytest.mark.pure
def test_empty_sketchpad_says_draw_first():
    with pytest.raises(DemoError, match="draw a digit first"):
        drawing_to_digit_scan(np.full((100, 100, 3), 255, np.uint8))


def test_demo_imports_no_torch():
    """The demo talks to Triton only: building its modules must not load torch (a serving image has none)."""
    code = textwrap.dedent(
        """
        import sys
        import demo.app, demo.cli, demo.quickstart, demo.examples, demo.neighbours
        from demo.examples import digit_example_files
        digit_example_files()
        assert "torch" not in sys.modules, "the demo imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
