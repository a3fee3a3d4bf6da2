"""Notifier against the real broker, database and SMTP sink."""
