"""Notifier adapters: storage and SMTP."""
