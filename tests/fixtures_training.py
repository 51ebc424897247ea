"""Session fixtures for the training stage."""
