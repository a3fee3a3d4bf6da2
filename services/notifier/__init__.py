"""Notifier service: recipient resolution, e-mail rendering and delivery (DESIGN.md §5)."""
