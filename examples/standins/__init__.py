"""Loopback stand-ins for the Guild Wars 2 API and an OpenAI-compatible API.

They let the example service, the tests and the demo stack run without the internet while
reproducing the upstream behaviour that telemetry must cope with: error bodies, rate limits,
slow and failing calls.
"""
