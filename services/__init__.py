"""The four absch-monitor services."""
