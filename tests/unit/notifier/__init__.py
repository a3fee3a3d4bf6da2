"""Unit tests of the notifier service."""
