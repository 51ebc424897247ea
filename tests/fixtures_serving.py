"""Session fixtures for the serving stage."""
