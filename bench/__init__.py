"""Overhead benchmark for otel_setup: ``python -m bench --help``.

Not part of the pytest suite; ``tests/test_overhead_guard.py`` reuses its
in-process driver for a short CI regression check.
"""
