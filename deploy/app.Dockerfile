# The example service with otel_setup, started through opentelemetry-instrument
# (the same entry point the Kubernetes operator injects). Build context: repo root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv
COPY . .
RUN pip install . \
 && if [ -f examples/gw2_app/requirements.txt ]; then pip install -r examples/gw2_app/requirements.txt; fi \
 && useradd --system --uid 10001 app

USER app
# ASGI import path of the example service.
ENV APP_MODULE=examples.gw2_app.main:app
EXPOSE 8000
CMD ["sh", "-c", "exec opentelemetry-instrument uvicorn \"$APP_MODULE\" --host 0.0.0.0 --port 8000"]
