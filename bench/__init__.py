"""Benchmarks of absch-monitor: ``python -m bench [--quick] [--only NAME]``.

Everything here measures and reports; nothing asserts a timing. See ``bench/README.md``.
"""
