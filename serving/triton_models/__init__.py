"""Model sources the local server copies into its scratch repository (run by Triton's Python backend).

`onnx_substitute.py` becomes `<model>/<version>/model.py` for every model whose backend the local server lacks
(`onnxruntime`, `tensorrt_plan`): it runs the same ONNX file with ONNX Runtime behind the identical config.
"""

from pathlib import Path

SOURCE_DIR = Path(__file__).parent
ONNX_SUBSTITUTE = SOURCE_DIR / "onnx_substitute.py"
SETTINGS_FILE = "substitute.json"  # written beside the model.py: which ONNX file, provider, threads
