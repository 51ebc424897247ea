"""What every stage shares, and nothing heavier than the standard library and ONNX Runtime.

The model card (model.json), whole-or-nothing files, the one user-facing error type, file hashes, facts
about this machine, signal handling and ONNX Runtime sessions. Training, export, serving and the demo all
import from here; nothing here imports a stage, and nothing here imports torch (docs/architecture.md).
"""
