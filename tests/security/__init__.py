"""Security tests: API fuzzing, cross-service authorization, confidentiality [P1]."""
