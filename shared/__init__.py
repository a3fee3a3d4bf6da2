"""Contracts and plumbing shared by every absch-monitor service."""
