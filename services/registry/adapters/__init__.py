"""Registry adapters: storage, signing keys."""
