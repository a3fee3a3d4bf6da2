"""Checkpoint adapters: storage."""
