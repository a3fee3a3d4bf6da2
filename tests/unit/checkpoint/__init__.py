"""Unit tests of the checkpoint service."""
