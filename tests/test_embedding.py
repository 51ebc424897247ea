"""The fc7 embedding: exported as <name>_embedding (+ the image ensemble), served over HTTP and gRPC by the
real Triton with the same parity gate as the classifier, and written by `alexnet classify --embed`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from fixtures_training import alexnet_in_process
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.client import TritonClassifier
from triton_repository.image_preprocessing import prepare_image

pytestmark = pytest.mark.slow

FEATURES = 4096


def read_config(model_dir) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def test_export_writes_the_embedding_models_after_their_parity_check(digits_export, digits_repository):
    assert digits_export.embedding is not None  # export stops before writing when parity fails
    assert "ONNX Runtime FP32 fc7 features" in digits_export.summary()
    assert {"alexnet_embedding", "alexnet_embedding_image"} <= set(digits_export.models)

    network = read_config(digits_repository / "alexnet_embedding")
    classifier = read_config(digits_repository / "alexnet")
    assert network.max_batch_size == classifier.max_batch_size
    assert network.input == classifier.input  # pixels uint8 [S, S, 3], batched like alexnet
    (output,) = network.output
    assert (output.name, output.data_type, list(output.dims)) == ("embedding", mc.TYPE_FP32, [FEATURES])
    assert not output.label_filename and not (digits_repository / "alexnet_embedding" / "labels.txt").exists()
    assert network.dynamic_batching == classifier.dynamic_batching

    onnx_file = digits_repository / "alexnet_embedding" / "1" / "model.onnx"
    graph = onnx.load(str(onnx_file), load_external_data=False)
    (graph_output,) = graph.graph.output
    assert graph_output.name == "embedding"
    assert [d.dim_value for d in graph_output.type.tensor_type.shape.dim][1:] == [FEATURES]

    ensemble = read_config(digits_repository / "alexnet_embedding_image")
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [
        "alexnet_preprocess", "alexnet_embedding",
    ]  # fmt: skip
    assert ensemble.output[0].name == "embedding" and list(ensemble.output[0].dims) == [FEATURES]


def test_export_without_embedding_writes_only_the_classifier(digits_model_dir, tmp_path):
    from export.pipeline import export_repository

    result = export_repository(
        digits_model_dir, tmp_path / "repo", device="cpu", embedding=False, log=lambda line: None
    )
    assert result.embedding is None
    models = sorted(path.name for path in result.repository.iterdir())
    assert models == ["alexnet", "alexnet_image", "alexnet_preprocess"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("send", ["pixels", "bytes"])
def test_served_embedding_passes_the_parity_gate_against_pytorch(
    digits_server, digits_model_dir, digit_files, protocol, send
):
    """The served features (pixels through alexnet_embedding, or the files through the ensemble) against
    PyTorch's fc7 on the same pixels, through export's own gate: the probabilities' 1e-4, on features
    scaled by their largest value; then random pixels at batch 1, 7 and the maximum."""
    from export.onnx_export import PixelsToFeatures
    from export.parity import FP32_TOLERANCE
    from export.pipeline import check_features_against_pytorch, load_checked_model, torch_classifier

    network, card = load_checked_model(digits_model_dir)
    url = digits_server.grpc_url if protocol == "grpc" else digits_server.http_url
    with TritonClassifier(url, protocol=protocol) as client:
        served = client.embed_files(digit_files.paths, send=send)
        max_batch = client.max_batch_size("alexnet_embedding")
        pixels = np.stack(
            [prepare_image(data, resize_size=card.resize_size, image_size=card.image_size,
                           input_conversion=card.input_conversion)
             for data in digit_files.contents]
        )  # fmt: skip
        report = check_features_against_pytorch(
            torch_classifier(network, card, PixelsToFeatures),
            client.embed_pixels,
            pixels,
            "validation digit files",
            image_size=card.image_size,
            batch_sizes=(1, 7, max_batch),
            max_batch_size=max_batch,
            tolerance=FP32_TOLERANCE,
        )
        # the server decodes the files exactly as the client does before sending pixels
        assert np.allclose(served, client.embed_pixels(pixels), atol=1e-5)
    assert served.shape == (len(digit_files.paths), FEATURES) and served.dtype == np.float32
    assert report.passed, report.summary()
    assert (served >= 0).all()  # after fc7's ReLU


def test_classify_embed_writes_npy_and_json(digits_server, digit_files, tmp_path):
    paths = [str(path) for path in digit_files.paths[:5]]
    npy, js = tmp_path / "features.npy", tmp_path / "out" / "features.json"
    for target in (npy, js):
        result = alexnet_in_process(
            "classify", *paths, "--url", digits_server.grpc_url, "--json", "--embed", str(target)
        )
        assert result.returncode == 0, result.stderr
        assert [record["image"] for record in json.loads(result.stdout)] == paths
        assert f"wrote the fc7 features of 5 images to {target}" in result.stderr
    array = np.load(npy)
    assert array.shape == (5, FEATURES) and array.dtype == np.float32
    records = json.loads(js.read_text())
    assert [record["image"] for record in records] == paths
    assert np.allclose(np.array([record["embedding"] for record in records], np.float32), array, atol=1e-6)
    with TritonClassifier(digits_server.grpc_url) as client:
        assert np.allclose(client.embed_files(paths), array, atol=1e-5)


def test_classify_embed_refuses_other_file_types(tmp_path):
    result = alexnet_in_process("classify", str(tmp_path), "--embed", str(tmp_path / "features.csv"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --embed {tmp_path / 'features.csv'}: name a .npy or a .json file"
