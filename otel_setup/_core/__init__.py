"""Settings, providers, the configure() glue and the Telemetry handle.

What runs once at startup, and what tears it down.
"""
