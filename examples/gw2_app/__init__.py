"""The reference service in miniature: a Guild Wars 2 companion backend with AI features.

FastAPI + SQLAlchemy + Redis + httpx calls to the GW2 API and an OpenAI-compatible API,
instrumented with a single ``otel_setup.configure(app)`` call in :mod:`.main`.
"""
