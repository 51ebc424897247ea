"""Model sources the local server copies into its scratch repository (run by Triton's Python backend).

`onnx_substitute.py` becomes `<model>/<version>/model.py` for every model whose backend the local server lacks
(`onnxruntime`, `tensorrt_plan`): it runs the same ONNX file with ONNX Runtime behind the identical config.
"""

from pathlib import Path

SOURCE_DIR = Path(__file__).parent
ONNX_SUBSTITUTE = SOURCE_DIR / "onnx_substitute.py"
SETTINGS_FILE = "substitute.json"  # written beside the model.py: which ONNX file, provider, threads
# Written by each substitute model instance once its session is up: the provider asked for and the one read
# back from the session. (The substitute runs standalone in Triton and spells this name itself.)
PROVIDER_FILE = "execution_provider.json"


def provider_announcements(models_dir: Path) -> list[str]:
    """One line per substitute model of a started server's scratch repository: the execution provider its
    sessions run on, with a WARNING where any instance runs on another than the one asked for."""
    import json

    from serving.onnx_session import ProviderUse

    lines = []
    for model_dir in sorted(path for path in models_dir.iterdir() if path.is_dir()):
        uses = {
            ProviderUse(**json.loads(record.read_text()))
            for record in sorted(model_dir.glob(f"*/*.{PROVIDER_FILE}"))
        }
        if uses:
            worst = min(uses, key=lambda use: (use.as_asked, use.running))
            lines.append(worst.line(model_dir.name))
    return lines
