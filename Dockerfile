# One image for every pipeline service; docker-compose.yml picks the module each container runs.
# No secret is baked in: settings (passwords, POLYGON_RPC_URL with its key) come from the environment at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The runtime requirements only: containers talk to a real ClickHouse server, so the embedded one (chdb-core) and
# the test tools stay out of the image (and so does simulator/, which needs numpy, a dependency of chdb-core).
COPY requirements.txt ./
RUN grep -v -E '^(chdb-core|pytest|pytest-asyncio|pytest-timeout|ruff)==' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pipeline \
    && mkdir -p /app/logs /app/data \
    && chown pipeline:pipeline /app/logs /app/data

COPY common/ common/
COPY ingesters/ ingesters/
COPY processors/ processors/
COPY dashboard/ dashboard/
COPY pipeline/ pipeline/

USER pipeline

# Each compose service sets its own command (`python -m <package>.<module>`); alone, the image shows the CLI.
CMD ["python", "-m", "pipeline", "--help"]
