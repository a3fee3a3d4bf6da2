"""The notifier's revisions, oldest first (a package, so that wheels carry them)."""
