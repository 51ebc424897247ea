"""The real Triton serving the exported digits repository: answers, configs, metrics, bad inputs, load.

Reference answers come from the repository's own ONNX file in ONNX Runtime in this process. The served
scores arrive through Triton's classification extension as text with six decimals, so scores are
compared with an absolute tolerance of 1e-5 and top-1 must agree wherever the reference's top two are
further apart than that.
"""

from __future__ import annotations

import asyncio
import re
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from serving.client import InferenceRejected, TritonClassifier
from triton_repository.configs import read_config
from triton_repository.image_preprocessing import prepare_image

pytestmark = pytest.mark.slow

SCORE_TOLERANCE = 1e-5
README = Path(__file__).resolve().parent.parent / "README.md"


def reference_probabilities(session, pixels: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: pixels})[0]


def assert_matches_reference(predictions, probabilities: np.ndarray) -> None:
    """Served top-k scores equal the in-process probabilities; top-1 equal unless the reference is a tie."""
    for ranked, reference in zip(predictions, probabilities, strict=True):
        for prediction in ranked:
            assert prediction.score == pytest.approx(float(reference[prediction.index]), abs=SCORE_TOLERANCE)
        first, second = np.sort(reference)[::-1][:2]
        if first - second > SCORE_TOLERANCE:
            assert ranked[0].index == int(np.argmax(reference))


def model_pixels(digit_files, info) -> np.ndarray:
    """The files as the served model's input: its input conversion (the digits model's digit-scan), resize."""
    size = {"resize_size": info.resize_size, "image_size": info.image_size}
    return np.stack(
        [prepare_image(data, **size, input_conversion=info.input_conversion) for data in digit_files.contents]
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("send", ["pixels", "bytes"])
def test_served_answers_match_inprocess_onnx_runtime(
    digits_server, digit_files, served_onnx_session, digits_repository, protocol, send
):
    url = digits_server.grpc_url if protocol == "grpc" else digits_server.http_url
    with TritonClassifier(url, protocol=protocol) as classifier:
        info = classifier.model_info()
        predictions = classifier.classify_files(digit_files.paths, top_k=3, send=send)
    labels = (digits_repository / "alexnet" / "labels.txt").read_text().splitlines()
    assert info.labels == labels
    assert len(predictions) == len(digit_files.paths)
    assert all(len(ranked) == 3 for ranked in predictions)
    assert all(
        prediction.label == labels[prediction.index] for ranked in predictions for prediction in ranked
    )
    reference = reference_probabilities(served_onnx_session, model_pixels(digit_files, info))
    assert_matches_reference(predictions, reference)


def metric_value(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}\{{model="{model}",version="\d+"\}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


def test_metrics_endpoint_counts_the_requests(digits_server, digit_files):
    counter = "nv_inference_request_success"
    with TritonClassifier(digits_server.http_url, protocol="http") as classifier:
        info = classifier.model_info()  # reading the labels is one request too: before counting
        before = {
            m: metric_value(digits_server.metrics_url, counter, m) for m in ("alexnet", "alexnet_image")
        }
        for data in digit_files.contents[:5]:
            pixels = prepare_image(data, resize_size=info.resize_size, image_size=info.image_size)
            classifier.classify_pixels(pixels[np.newaxis], top_k=1)
        classifier.classify_bytes(digit_files.contents[:2], top_k=1)  # one request of two images
    after = {m: metric_value(digits_server.metrics_url, counter, m) for m in ("alexnet", "alexnet_image")}
    assert after["alexnet_image"] - before["alexnet_image"] == 1
    assert after["alexnet"] - before["alexnet"] == 5 + 1  # the ensemble's request reaches alexnet too


def _comparable(config: dict) -> dict:
    """What the live config and the repository's must share: names, types, shapes, labels, batching."""

    def tensors(items):
        return [
            (t["name"], t["data_type"], [int(d) for d in t["dims"]], t.get("label_filename", ""))
            for t in items
        ]

    batching = config.get("dynamic_batching")
    max_batch_size = int(config.get("max_batch_size", 0))
    # Triton normalises an empty preferred_batch_size to [max_batch_size] when it loads a config.
    preferred = sorted(int(size) for size in (batching or {}).get("preferred_batch_size", [])) or [
        max_batch_size
    ]
    return {
        "name": config["name"],
        "max_batch_size": max_batch_size,
        "input": tensors(config["input"]),
        "output": tensors(config["output"]),
        "dynamic_batching": None
        if batching is None
        else (preferred, int(batching.get("max_queue_delay_microseconds", 0))),
        "parameters": {key: value["string_value"] for key, value in config.get("parameters", {}).items()},
        "instances": sum(int(group.get("count", 1)) for group in config.get("instance_group", [])),
        "ensemble_steps": [
            (step["model_name"], step.get("input_map"), step.get("output_map"))
            for step in config.get("ensemble_scheduling", {}).get("step", [])
        ],
    }


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_live_configs_match_the_repository(digits_server, digits_repository, protocol):
    from google.protobuf.json_format import MessageToDict

    url = digits_server.grpc_url if protocol == "grpc" else digits_server.http_url
    names = ["alexnet", "alexnet_preprocess", "alexnet_image"]
    with TritonClassifier(url, protocol=protocol) as classifier:
        for name in names:
            exported = MessageToDict(read_config(digits_repository / name), preserving_proto_field_name=True)
            live = classifier.model_config(name)
            assert _comparable(live) == _comparable(exported), name
        assert (
            classifier.model_info().max_batch_size
            == read_config(digits_repository / "alexnet").max_batch_size
        )


def test_admin_apis_are_closed_to_every_client(digits_server):
    """Nothing is unlocked by any header, the one on tritonserver's command line included: Triton loads new
    versions by polling its private copy of the repository, so no model-control API is needed."""
    from triton_repository.server_flags import CLOSED_HEADER

    base = f"http://{digits_server.http_url}/v2"
    for path in ("/repository/index", "/repository/models/alexnet/unload", "/systemsharedmemory/status"):
        for headers in ({}, {CLOSED_HEADER: "no"}, {CLOSED_HEADER.lower(): "noclient"}):
            request = urllib.request.Request(base + path, data=b"{}", method="POST", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code in (400, 403), path
    assert TritonClassifier(digits_server.grpc_url).is_ready()


# -- bad inputs: each fails its own request with INVALID_ARG and a clear message ---------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height in its header, with a token of data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def gif_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buffer, format="GIF")
    return buffer.getvalue()


@dataclass(frozen=True)
class BadInput:
    name: str  # as in the README's table of bad inputs
    model: str  # "image" (the ensemble, encoded bytes) or "pixels" (the network)
    make: object  # (good png bytes, image size, max batch size) -> bytes or an ndarray
    message: str  # a fragment of Triton's error message


BAD_INPUTS = [
    BadInput("corrupt bytes", "image", lambda png, s, b: png[: len(png) // 2], "corrupt or truncated image"),
    BadInput("empty", "image", lambda png, s, b: b"", "empty image"),
    BadInput(
        "text file", "image", lambda png, s, b: b"name,label\ncat,3\n", "not a readable JPEG, PNG or WebP"
    ),
    BadInput("GIF image", "image", lambda png, s, b: gif_bytes(), "GIF images are not accepted"),
    BadInput(
        "20,000x20,000 PNG header",
        "image",
        lambda png, s, b: png_header_only(20_000, 20_000),
        "above the limit of",
    ),
    BadInput(
        "7,000x7,000 PNG header",
        "image",
        lambda png, s, b: png_header_only(7_000, 7_000),
        "above the limit of",
    ),
    BadInput("17 MB upload", "image", lambda png, s, b: png + bytes(17 * 2**20), "bytes, above the limit of"),
    BadInput(
        "5 images of 6,000x6,000 in one request",
        "image",
        lambda png, s, b: [png_header_only(6_000, 6_000)] * 5,
        "pixels together, above the limit of 144,000,000 per request",
    ),
    BadInput(
        "5 uploads of 14 MB in one request",
        "image",
        lambda png, s, b: [png + bytes(14 * 2**20)] * 5,
        "bytes together, above the limit of 67,108,864 per request",
    ),
    BadInput(
        "wrong dtype (float32 pixels)",
        "pixels",
        lambda png, s, b: np.zeros((1, s, s, 3), np.float32),
        "data-type is 'FP32', but model 'alexnet' expects 'UINT8'",
    ),
    BadInput(
        "wrong shape (4 channels)",
        "pixels",
        lambda png, s, b: np.zeros((1, s, s, 4), np.uint8),
        "unexpected shape for input 'pixels'",
    ),
    BadInput(
        "batch above the maximum",
        "pixels",
        lambda png, s, b: np.zeros((b + 1, s, s, 3), np.uint8),
        "batch-size must be <=",
    ),
]


def send_raw(url: str, protocol: str, model: str, item) -> None:
    """One request straight through tritonclient, as any client would send it."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    if isinstance(item, bytes | list):
        items = item if isinstance(item, list) else [item]
        name, model_name = "image", f"{model}_image"
        array = np.empty((len(items), 1), dtype=np.object_)
        array[:, 0] = items
        datatype = "BYTES"
    else:
        from tritonclient.utils import np_to_triton_dtype

        name, model_name, array, datatype = "pixels", model, item, np_to_triton_dtype(item.dtype)
    client = module.InferenceServerClient(url)
    try:
        infer_input = module.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        client.infer(
            model_name, [infer_input], outputs=[module.InferRequestedOutput("probabilities", class_count=1)]
        )
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.name for bad in BAD_INPUTS])
def test_bad_input_fails_its_own_request_with_invalid_arg(digits_server, digit_files, bad, protocol):
    from tritonclient.utils import InferenceServerException

    url = digits_server.grpc_url if protocol == "grpc" else digits_server.http_url
    with TritonClassifier(url, protocol=protocol) as classifier:
        info = classifier.model_info()
        png = next(
            data
            for path, data in zip(digit_files.paths, digit_files.contents, strict=True)
            if path.suffix == ".png"
        )
        with pytest.raises(InferenceServerException) as rejected:
            send_raw(url, protocol, "alexnet", bad.make(png, info.image_size, info.max_batch_size))
        status = str(rejected.value.status())
        assert status in ("StatusCode.INVALID_ARGUMENT", "400"), status
        assert bad.message in rejected.value.message()
        assert classifier.is_ready()
        assert classifier.classify_bytes([png], top_k=1)[0][0].label  # and the next request is served


def test_bad_input_table_is_documented():
    text = README.read_text()
    for bad in BAD_INPUTS:
        assert f"| {bad.name} |" in text, bad.name
        assert bad.message.replace("|", "\\|") in text, bad.message


def test_classifier_names_the_file_the_server_rejected(digits_server, digit_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(digit_files.contents[0][:40])
    paths = [digit_files.paths[0], broken, digit_files.paths[1]]
    with TritonClassifier(digits_server.grpc_url) as classifier:
        with pytest.raises(InferenceRejected, match="broken.png") as rejected:
            classifier.classify_files(paths, send="bytes")
        assert rejected.value.status == "INVALID_ARG"
        with pytest.raises(Exception, match="broken.png"):
            classifier.classify_files(paths, send="pixels")  # decoded here: named before anything is sent


# -- load with bad items mixed in --------------------------------------------------------------------------


async def _mixed_load(url: str, work: list[tuple[str, object]], concurrency: int) -> list:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(url)
    results: list = [None] * len(work)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(work):
            index = next_index
            next_index += 1
            kind, item = work[index]
            if kind == "pixels":
                infer_input = aio.InferInput("pixels", list(item.shape), "UINT8")
                model = "alexnet"
            else:
                infer_input = aio.InferInput("image", [1, 1], "BYTES")
                item = np.array([[item]], dtype=np.object_)
                model = "alexnet_image"
            infer_input.set_data_from_numpy(item)
            output = aio.InferRequestedOutput("probabilities", class_count=1)
            try:
                result = await client.infer(model, [infer_input], outputs=[output])
                results[index] = result.as_numpy("probabilities").reshape(-1)[0].decode()
            except Exception as error:  # recorded and checked below
                results[index] = error

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return results


def test_two_thousand_requests_at_concurrency_32_with_corrupt_items_mixed_in(
    digits_server, digit_files, served_onnx_session
):
    import tritonclient.grpc as grpcclient

    with TritonClassifier(digits_server.grpc_url) as classifier:
        info = classifier.model_info()
    pixels = model_pixels(digit_files, info)
    expected = reference_probabilities(served_onnx_session, pixels)
    corrupt = [digit_files.contents[0][:60], b"not an image at all"]
    work: list[tuple[str, object]] = []
    answers: list = []
    for index in range(2000):
        image = index % len(digit_files.contents)
        if index % 10 == 3:
            work.append(("bytes", corrupt[index % 2]))
            answers.append(None)
        elif index % 2 == 0:
            work.append(("pixels", pixels[image : image + 1]))
            answers.append(expected[image])
        else:
            work.append(("bytes", digit_files.contents[image]))
            answers.append(expected[image])

    stats = grpcclient.InferenceServerClient(digits_server.grpc_url)
    before = _batched_executions(stats, "alexnet_preprocess")
    results = asyncio.run(_mixed_load(digits_server.grpc_url, work, concurrency=32))

    bad = [(i, r) for i, (r, a) in enumerate(zip(results, answers, strict=True)) if a is None]
    good = [(i, r, a) for i, (r, a) in enumerate(zip(results, answers, strict=True)) if a is not None]
    assert len(bad) == 200 and len(good) == 1800
    for index, result in bad:
        assert isinstance(result, Exception), f"request {index} with corrupt bytes succeeded"
        assert str(result.status()) == "StatusCode.INVALID_ARGUMENT", result
        assert "image" in result.message()
    failures = [(i, r) for i, r, _ in good if isinstance(r, Exception)]
    assert not failures, failures[:3]
    for index, result, reference in good:
        score, label_index, _label = result.split(":", 2)
        assert float(score) == pytest.approx(float(reference[int(label_index)]), abs=SCORE_TOLERANCE), index
        first, second = np.sort(reference)[::-1][:2]
        if first - second > SCORE_TOLERANCE:
            assert int(label_index) == int(np.argmax(reference)), index
    # The corrupt images were decoded in batches together with good ones, and only they failed.
    assert _batched_executions(stats, "alexnet_preprocess") > before
    assert TritonClassifier(digits_server.grpc_url).is_ready()
    stats.close()


def _batched_executions(client, model: str) -> int:
    statistics = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return sum(
        int(entry["compute_infer"].get("count", 0))
        for entry in statistics.get("batch_stats", [])
        if int(entry["batch_size"]) > 1
    )
