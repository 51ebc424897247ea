"""Session fixtures for the export stage."""
