"""Shared fixtures. Each stage keeps its own in tests/fixtures_<stage>.py; later stages build on earlier ones
(a trained digits model -> its exported repository -> a real Triton serving it)."""

pytest_plugins = ["fixtures_training", "fixtures_export", "fixtures_serving", "fixtures_demo"]
