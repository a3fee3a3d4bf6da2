"""Monitor adapters: storage."""
