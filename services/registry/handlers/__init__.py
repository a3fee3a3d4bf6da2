"""Registry use cases: records, publication workflow, users."""
