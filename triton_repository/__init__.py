"""The Triton model repository: what `alexnet export` writes, and `alexnet serve` and the image read.

- layout.py: file, tensor and model names, the version folders, the Python-backend model sources' paths;
- configs.py: every config.pbtxt (ONNX, INT8, TensorRT plan, preprocess, ensembles, embedding), built and
  read back with Triton's own protobuf schema (tritonclient's model_config_pb2);
- preprocess_model.py, image_preprocessing.py: the `<name>_preprocess` model Triton loads, and the
  decode/resize/crop it shares with the `alexnet classify` client;
- onnx_substitute.py: the model the local server runs in place of the onnxruntime and tensorrt backends;
- server_flags.py: the tritonserver flags, one list for `alexnet serve` and the image's entry point.

Torch-free, and Python 3.10 (the production image ships it beside serving/docker/trt_plan.py). This file
imports nothing, so the image's entry point can run `python3 -m triton_repository.server_flags` at once.
"""
