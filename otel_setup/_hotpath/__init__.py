"""What runs on every request.

Metric recording, sampling, keeping failing and slow traces, span and context helpers.
"""
