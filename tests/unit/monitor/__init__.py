"""Unit tests of the monitor service."""
