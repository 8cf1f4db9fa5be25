"""What keeps secrets in the process.

Redaction rules, export-side scrubbing, inbound propagation limits, ``/metrics`` access.
"""
