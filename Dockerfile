# Same install steps as the README: pip install the package, run `cds-service serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CDS_HOST=0.0.0.0 CDS_PORT=8080 CDS_DATA_DIR=/var/lib/cds-service

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY fhir_fixtures ./fhir_fixtures
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /var/lib/cds-service --create-home cds \
 && rm -rf /app

USER cds
WORKDIR /var/lib/cds-service
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
ENTRYPOINT ["cds-service", "serve"]
