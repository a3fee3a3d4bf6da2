"""Registry: national records, identities and roles, IRCC lifecycle and publish workflow."""
