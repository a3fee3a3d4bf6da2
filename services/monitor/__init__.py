"""Monitor service: IRCC state, CPC-versus-IRCC checks and discrepancy cases."""
