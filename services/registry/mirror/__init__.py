"""Mirror of a real ABS Clearing-House: its published records, read-only (ADR 0005).

``python -m services.registry.mirror --source URL`` (see ``__main__``).
"""
