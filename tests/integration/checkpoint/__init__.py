"""Checkpoint service through HTTP, with the registry and the real broker."""
