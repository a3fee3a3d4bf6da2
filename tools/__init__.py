"""Developer tooling: embedded broker, SMTP sink, local stack and demo data."""
