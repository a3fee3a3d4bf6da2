"""Checkpoint: checkpoint communiqués (CPCs) submitted by checkpoints."""
