"""Test helpers: running services, polling with deadlines, databases."""
