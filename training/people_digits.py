"""Digits as people bring them: a test set the project draws itself, deterministic by seed.

The digits model learned from 8x8 scans; people upload photos of digits written on paper or a board, and
draw them on the page's sketchpad. This module draws such pictures, in styles that each stress one way
people's pictures differ from the scans:

    pen          a ballpoint on white paper, somewhere in the frame
    fine-pen     a thin pen, the digit small and off-centre
    marker       a thick marker, the digit filling the frame
    chalk        light chalk on a dark board, unevenly lit, JPEG
    photo        a pen on paper photographed: uneven light, a shadow, blur, noise, JPEG
    font         a typed digit, dark on light
    font-inverse a typed digit, light on dark
    font-photo   a printed digit photographed like `photo`
    sketchpad    the demo's sketchpad: a black round brush on its transparent 400x400 canvas

The handwritten styles draw each digit from a few stroke shapes (an open and a closed 4, a 7 with and
without its bar, ...), every point jittered, the whole slanted, turned, narrowed and placed at random.
The typed styles use the fonts that ship inside the gradio package (KaTeX's, pinned with gradio) and
Pillow's own default font, never the host's: fonts differ between machines.

Kept apart: the project tuned the digit-scan conversion (triton_repository/image_preprocessing.py) and
the digits' training on the `tune` split (seeds below TEST_SEED_OFFSET, TUNE_FONTS) and reports on the
`test` split (other seeds, HELD_OUT_FONTS only). The digits model trains on `training_scans`, a third
stream of seeds, with TUNE_FONTS only. The stroke shapes are common to all three, so the test split
measures new pens, places, light, slant and fonts, not new handwriting. numpy and Pillow only: the demo's
tests use it too.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

STYLES = ("pen", "fine-pen", "marker", "chalk", "photo", "font", "font-inverse", "font-photo", "sketchpad")
SPLITS = ("tune", "test")
TEST_SEED_OFFSET = 1_000_000  # the test split's seeds start here; tuning used seeds below it
# The KaTeX fonts that gradio ships, by family (their file names carry a build hash after the family).
TUNE_FONTS = ("Main-Regular", "Main-Italic", "SansSerif-Regular", "Typewriter-Regular")
HELD_OUT_FONTS = ("Main-Bold", "Main-BoldItalic", "SansSerif-Bold", "SansSerif-Italic", "pillow")
PILLOW_FONT = "pillow"  # Pillow's built-in default font (Aileron Regular)
SKETCHPAD_CANVAS = 400  # pixels, and the brush's default size: demo/app.py's gr.Sketchpad
SKETCHPAD_BRUSH = 24

# Each digit as a few stroke shapes in a unit box (x right, y down); a stroke is a smooth curve through its
# points, and strokes meet at corners. Loops are written as ellipses: (centre x, centre y, rx, ry, start).
Stroke = list[tuple[float, float]]


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, start: float = -90.0, sweep: float = 380.0
) -> Stroke:
    """Points around an ellipse, from `start` degrees (0: right, 90: down) through `sweep` degrees."""
    angles = np.radians(start + np.linspace(0.0, sweep, 14))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


SHAPES: dict[int, list[list[Stroke]]] = {
    0: [[_ellipse(0.5, 0.5, 0.42, 0.5)], [_ellipse(0.5, 0.5, 0.36, 0.5, start=-120.0)]],
    1: [
        [[(0.5, 0.0), (0.5, 1.0)]],
        [[(0.22, 0.28), (0.55, 0.0)], [(0.55, 0.0), (0.55, 1.0)]],
        [[(0.22, 0.25), (0.55, 0.0)], [(0.55, 0.0), (0.55, 1.0)], [(0.22, 1.0), (0.88, 1.0)]],
    ],
    2: [
        [[(0.1, 0.25), (0.3, 0.03), (0.62, 0.0), (0.86, 0.2), (0.8, 0.45), (0.45, 0.72), (0.08, 1.0)],
         [(0.08, 1.0), (0.92, 1.0)]],
        [[(0.12, 0.15), (0.5, 0.0), (0.85, 0.18), (0.72, 0.48), (0.1, 1.0)], [(0.1, 1.0), (0.9, 0.97)]],
        [[(0.1, 0.22), (0.45, 0.0), (0.85, 0.18), (0.7, 0.5), (0.25, 0.85), (0.1, 0.97), (0.25, 1.0),
          (0.32, 0.86), (0.5, 0.95), (0.9, 0.97)]],  # a loop where the base starts
    ],
    3: [
        [[(0.12, 0.12), (0.45, 0.0), (0.8, 0.12), (0.78, 0.35), (0.45, 0.48)],
         [(0.45, 0.48), (0.85, 0.62), (0.85, 0.88), (0.5, 1.0), (0.1, 0.9)]],
        [[(0.12, 0.0), (0.85, 0.0)], [(0.85, 0.0), (0.45, 0.4)],
         [(0.45, 0.4), (0.85, 0.6), (0.82, 0.9), (0.45, 1.0), (0.1, 0.88)]],
        [[(0.28, 0.26), (0.14, 0.17), (0.24, 0.03), (0.55, 0.0), (0.82, 0.15), (0.75, 0.38), (0.45, 0.48)],
         [(0.45, 0.48), (0.85, 0.64), (0.82, 0.9), (0.5, 1.0), (0.15, 0.92), (0.12, 0.8)]],  # curled ends
    ],
    4: [
        [[(0.65, 0.0), (0.08, 0.68)], [(0.08, 0.68), (0.92, 0.68)], [(0.65, 0.0), (0.65, 1.0)]],
        [[(0.15, 0.0), (0.1, 0.62)], [(0.1, 0.62), (0.9, 0.62)], [(0.7, 0.05), (0.7, 1.0)]],
    ],
    5: [
        [[(0.85, 0.0), (0.22, 0.0)], [(0.22, 0.0), (0.16, 0.45)],
         [(0.16, 0.45), (0.5, 0.37), (0.84, 0.55), (0.84, 0.82), (0.5, 1.0), (0.1, 0.9)]],
        [[(0.2, 0.02), (0.15, 0.45)],
         [(0.15, 0.45), (0.55, 0.38), (0.85, 0.6), (0.75, 0.9), (0.4, 1.0), (0.1, 0.88)],
         [(0.2, 0.02), (0.85, 0.0)]],
    ],
    6: [
        [[(0.75, 0.0), (0.4, 0.2), (0.15, 0.6), (0.25, 0.92), (0.55, 1.0), (0.85, 0.8), (0.75, 0.52),
          (0.45, 0.48), (0.18, 0.65)]],
        [[(0.6, 0.0), (0.2, 0.55), (0.22, 0.9), (0.5, 1.0), (0.8, 0.85), (0.75, 0.6), (0.45, 0.55),
          (0.2, 0.7)]],
    ],
    7: [
        [[(0.08, 0.0), (0.92, 0.0)], [(0.92, 0.0), (0.35, 1.0)]],
        [[(0.08, 0.0), (0.92, 0.0)], [(0.92, 0.0), (0.35, 1.0)], [(0.35, 0.5), (0.82, 0.5)]],
        [[(0.1, 0.05), (0.9, 0.0)], [(0.9, 0.0), (0.62, 0.45), (0.48, 1.0)]],
    ],
    8: [
        [[(0.75, 0.1), (0.5, 0.0), (0.22, 0.12), (0.3, 0.35), (0.7, 0.6), (0.8, 0.85), (0.5, 1.0),
          (0.2, 0.85), (0.3, 0.6), (0.7, 0.35), (0.78, 0.12), (0.5, 0.0)]],
        [_ellipse(0.5, 0.24, 0.27, 0.24), _ellipse(0.5, 0.73, 0.33, 0.27)],
    ],
    9: [
        [_ellipse(0.45, 0.3, 0.36, 0.3, start=0.0, sweep=370.0), [(0.81, 0.3), (0.75, 1.0)]],
        [_ellipse(0.45, 0.3, 0.36, 0.3, start=0.0, sweep=370.0),
         [(0.81, 0.3), (0.8, 0.7), (0.55, 1.0), (0.25, 0.92)]],
    ],
}  # fmt: skip


@dataclass(frozen=True)
class PeopleDigit:
    """One picture of a digit as a person would bring it."""

    image: Image.Image  # RGB, or RGBA for the sketchpad (its canvas is transparent)
    label: int
    style: str
    file_format: str  # "PNG" or "JPEG": how a person's file of it would be encoded

    def encoded(self) -> bytes:
        """The picture as the file a person would upload (the sketchpad's keeps its transparency)."""
        buffer = io.BytesIO()
        options = {"quality": 85} if self.file_format == "JPEG" else {}
        self.image.save(buffer, format=self.file_format, **options)
        return buffer.getvalue()


def people_digits(style: str, split: str = "test", per_digit: int = 10, seed: int = 0) -> list[PeopleDigit]:
    """`per_digit` pictures of each digit 0-9 in `style`, the same ones for the same arguments everywhere."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use tune or test")
    offset = TEST_SEED_OFFSET if split == "test" else 0
    fonts = HELD_OUT_FONTS if split == "test" else TUNE_FONTS
    pictures = []
    for index in range(per_digit * 10):
        rng = np.random.default_rng([offset + seed, STYLES.index(style), index])
        digit = index % 10
        pictures.append(_draw(style, digit, rng, fonts))
    return pictures


def _draw(style: str, digit: int, rng: np.random.Generator, fonts: tuple[str, ...]) -> PeopleDigit:
    if style == "sketchpad":
        return PeopleDigit(_sketchpad(digit, rng), digit, style, "PNG")
    size = (int(rng.integers(220, 420)), int(rng.integers(220, 420)))
    typed = style.startswith("font")
    light_ink = style in ("chalk", "font-inverse")
    paper, ink = _colours(rng, light_ink)
    height_range, pen_range = {
        "pen": ((0.4, 0.8), (0.04, 0.08)),
        "fine-pen": ((0.2, 0.4), (0.015, 0.03)),
        "marker": ((0.75, 0.95), (0.12, 0.18)),
        "chalk": ((0.45, 0.85), (0.06, 0.11)),
        "photo": ((0.4, 0.8), (0.04, 0.09)),
    }.get(style, ((0.3, 0.85), (0.0, 0.0)))
    digit_height = float(rng.uniform(*height_range)) * min(size)
    mask = (
        _typed_mask(digit, size, digit_height, rng, fonts)
        if typed
        else _written_mask(digit, size, digit_height, float(rng.uniform(*pen_range)) * digit_height, rng)
    )
    image = _compose(mask, paper, ink)
    if style in ("chalk", "photo", "font-photo"):
        return PeopleDigit(_photographed(image, rng), digit, style, "JPEG")
    return PeopleDigit(image, digit, style, "PNG")


def _colours(rng: np.random.Generator, light_ink: bool) -> tuple[np.ndarray, np.ndarray]:
    """(paper, ink) RGB in [0, 1]: off-white paper and blue-black ink, or a dark board and pale chalk."""
    if light_ink:
        board = rng.uniform(0.05, 0.3) * np.array([rng.uniform(0.6, 1.0), 1.0, rng.uniform(0.6, 1.0)])
        return board, rng.uniform(0.8, 1.0) * np.ones(3)
    paper = rng.uniform(0.85, 1.0) * np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.85, 1.0)])
    ink = rng.uniform(0.0, 0.25) * np.ones(3)
    ink[2] += rng.uniform(0.0, 0.3)  # blue ballpoints
    return paper, ink


def _compose(mask: np.ndarray, paper: np.ndarray, ink: np.ndarray) -> Image.Image:
    """An RGB picture: `ink` where the [0, 1] mask says, `paper` elsewhere."""
    pixels = paper * (1.0 - mask[..., None]) + ink * mask[..., None]
    return Image.fromarray(np.rint(255 * np.clip(pixels, 0, 1)).astype(np.uint8), mode="RGB")


def _placement(
    size: tuple[int, int], box: tuple[float, float], rng: np.random.Generator
) -> tuple[float, float]:
    """A random top-left corner that keeps a box of (width, height) inside the picture, anywhere in it."""
    free_x, free_y = max(0.0, size[0] - box[0]), max(0.0, size[1] - box[1])
    return float(rng.uniform(0.05, 0.95) * free_x), float(rng.uniform(0.05, 0.95) * free_y)


def _written_points(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One handwritten shape of `digit`, jittered, slanted, turned and narrowed, in a unit-height box."""
    strokes = SHAPES[digit][int(rng.integers(len(SHAPES[digit])))]
    width = rng.uniform(0.55, 0.95)
    slant = rng.uniform(-0.1, 0.3)  # handwriting leans right, mostly (positive: the top moves right)
    angle = np.radians(rng.uniform(-7, 7))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # The same jitter for a point wherever strokes share it, so their corners stay joined.
    jitter: dict[tuple[float, float], np.ndarray] = {}
    drawn = []
    for stroke in strokes:
        points = []
        for point in stroke:
            key = (round(point[0], 3), round(point[1], 3))
            jitter.setdefault(key, rng.normal(0.0, 0.025, 2))
            x, y = np.array(point) + jitter[key]
            x = 0.5 + (x - 0.5) * width + slant * (0.5 - y)
            points.append(rotation @ np.array([x - 0.5, y - 0.5]) + 0.5)
        drawn.append(_smooth(np.array(points)))
    return drawn


def _smooth(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A Catmull-Rom curve through the points (a straight line for two)."""
    if len(points) < 3:
        return points
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    curve = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=False):
            curve.append(
                0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                       + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
            )  # fmt: skip
    curve.append(points[-1])
    return np.array(curve)


def _draw_strokes(canvas: Image.Image, strokes: list[np.ndarray], fill, pen: float) -> None:
    """Round-capped strokes of width `pen` (pixels) onto `canvas`."""
    draw = ImageDraw.Draw(canvas)
    radius = pen / 2
    for stroke in strokes:
        points = [tuple(map(float, p)) for p in stroke]
        draw.line(points, fill=fill, width=max(1, round(pen)), joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)


def _written_mask(
    digit: int, size: tuple[int, int], height: float, pen: float, rng: np.random.Generator
) -> np.ndarray:
    """A handwritten digit `height` pixels tall with a pen `pen` wide, as a [0, 1] mask of the picture."""
    strokes = _written_points(digit, rng)
    low = np.min([s.min(axis=0) for s in strokes], axis=0)
    high = np.max([s.max(axis=0) for s in strokes], axis=0)
    scale = height / max(high[1] - low[1], 1e-6)
    box = ((high[0] - low[0]) * scale + pen, height + pen)
    left, top = _placement(size, box, rng)
    origin = np.array([left + pen / 2, top + pen / 2])
    supersample = 2  # drawn at twice the size and reduced: smooth edges, as a camera or a scanner gives
    canvas = Image.new("L", (size[0] * supersample, size[1] * supersample), 0)
    placed = [((s - low) * scale + origin) * supersample for s in strokes]
    _draw_strokes(canvas, placed, 255, pen * supersample)
    return np.asarray(canvas.resize(size, Image.BOX), dtype=np.float32) / 255.0


@cache
def font_files() -> dict[str, Path]:
    """The KaTeX font families that gradio ships, by family name (Main-Regular, SansSerif-Bold, ...)."""
    spec = importlib.util.find_spec("gradio")
    if spec is None or spec.origin is None:
        raise RuntimeError("the typed styles need the gradio package's fonts: pip install the project")
    assets = Path(spec.origin).parent / "templates" / "frontend" / "assets"
    found = {}
    for path in sorted(assets.glob("KaTeX_*.ttf")):
        family = path.stem.removeprefix("KaTeX_").rsplit("-", 1)[0]
        found.setdefault(family, path)
    return found


def _font(name: str, pixels: int) -> ImageFont.FreeTypeFont:
    if name == PILLOW_FONT:
        return ImageFont.load_default(pixels)
    files = font_files()
    if name not in files:
        raise RuntimeError(f"gradio ships no KaTeX_{name} font here (found {', '.join(files)})")
    return ImageFont.truetype(str(files[name]), pixels)


def _typed_mask(
    digit: int, size: tuple[int, int], height: float, rng: np.random.Generator, fonts: tuple[str, ...]
) -> np.ndarray:
    """The digit typed in one of `fonts`, its ink `height` pixels tall, as a [0, 1] mask of the picture."""
    name = fonts[int(rng.integers(len(fonts)))]
    glyph = Image.new("L", (4 * size[0], 4 * size[1]), 0)
    font = _font(name, round(height * 1.4))
    ImageDraw.Draw(glyph).text((size[0], size[1]), str(digit), font=font, fill=255)
    glyph = glyph.crop(glyph.getbbox())
    scale = height / glyph.height
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(height))), Image.LANCZOS)
    mask = Image.new("L", size, 0)
    left, top = _placement(size, glyph.size, rng)
    mask.paste(glyph, (round(left), round(top)))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _photographed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """As a phone photographs paper or a board: light falling off across it, a soft shadow, a vignette,
    a little blur and sensor noise."""
    width, height = image.size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    ramp = ((x / width - 0.5) * direction[0] + (y / height - 0.5) * direction[1]) + 0.5
    light = 1.0 - rng.uniform(0.2, 0.5) * ramp
    radius = np.hypot(x / width - 0.5, y / height - 0.5) / 0.7071
    light *= 1.0 - rng.uniform(0.0, 0.3) * radius**2
    if rng.random() < 0.5:  # the shadow of a hand or a phone: a soft-edged dark band
        edge = rng.uniform(0.1, 0.9) * width
        light *= 1.0 - rng.uniform(0.15, 0.35) / (1.0 + np.exp(-(x - edge) / (0.03 * width)))
    pixels = np.asarray(image, dtype=np.float32) / 255.0 * light[..., None]
    pixels += rng.normal(0.0, rng.uniform(0.01, 0.04), pixels.shape)
    photo = Image.fromarray(np.rint(255 * np.clip(pixels, 0, 1)).astype(np.uint8), mode="RGB")
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def _sketchpad(digit: int, rng: np.random.Generator) -> Image.Image:
    """The digit drawn with the sketchpad's black round brush on its transparent canvas: an RGBA picture."""
    side = SKETCHPAD_CANVAS
    height = float(rng.uniform(0.35, 0.85)) * side
    pen = SKETCHPAD_BRUSH * float(rng.uniform(0.5, 1.5))
    alpha = _written_mask(digit, (side, side), height, pen, rng)
    rgba = np.zeros((side, side, 4), np.uint8)  # transparent black, as the sketchpad's composite
    rgba[..., 3] = np.rint(255 * alpha).astype(np.uint8)
    return Image.fromarray(rgba, mode="RGBA")


def _slanted(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask sheared like italics or handwriting (the top to the right, mostly) and turned a little."""
    height, width = mask.shape
    slant, angle = rng.uniform(-0.1, 0.35), np.radians(rng.uniform(-6, 6))
    cos, sin = np.cos(angle), np.sin(angle)
    a, b, d, e = cos, sin + slant * cos, -sin, cos - slant * sin  # output -> input, about the centre
    cx, cy = width / 2, height / 2
    data = (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)
    image = Image.fromarray(np.rint(255 * mask).astype(np.uint8), mode="L")
    return np.asarray(image.transform(image.size, Image.AFFINE, data, resample=Image.BILINEAR)) / 255.0


@cache
def training_scans(per_digit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scans for training (the `tune` split only: seeds below TEST_SEED_OFFSET, TUNE_FONTS): `per_digit`
    pictures of each digit, handwritten and typed, clean (the conversion is what removes light and
    polarity; the test split checks that), read by the digit-scan conversion. uint8 [N, 8, 8] and labels."""
    from triton_repository.image_preprocessing import digit_scan

    scans, labels = [], []
    for index in range(per_digit * 10):
        rng = np.random.default_rng([seed, len(STYLES), index])  # a stream no style of people_digits uses
        digit = index % 10
        size = (int(rng.integers(96, 160)), int(rng.integers(96, 160)))
        height = float(rng.uniform(0.5, 0.9)) * min(size)
        if rng.random() < 0.4:  # typed, and slanted or turned as people hold a page or a phone
            mask = _slanted(_typed_mask(digit, size, height, rng, TUNE_FONTS), rng)
        else:
            mask = _written_mask(digit, size, height, float(rng.uniform(0.02, 0.15)) * height, rng)
        picture = Image.fromarray(np.rint(255 * (1.0 - mask)).astype(np.uint8), mode="L")
        scans.append(digit_scan(picture))
        labels.append(digit)
    scans, labels = np.stack(scans), np.asarray(labels, dtype=np.int64)
    scans.setflags(write=False)  # cached and shared: nobody may change it in place
    labels.setflags(write=False)
    return scans, labels
