# Auto-instrumentation image for the OpenTelemetry Operator (instrumentation.yaml).
# The operator copies /autoinstrumentation into the application pod and puts it
# on PYTHONPATH; otel_setup's entry points then act as distro and configurator.
# Build from the repository root:
#   docker build -f deploy/k8s/autoinstrumentation.Dockerfile -t <registry>/otel-setup-autoinstrumentation:<version> .
# The application image must use the same Python minor version (3.11).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --target /autoinstrumentation .

FROM busybox:1.36.1
COPY --from=build /autoinstrumentation /autoinstrumentation
RUN chmod -R go+r /autoinstrumentation
