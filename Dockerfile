# The citywatch image: one image, one service per container (the command picks it:
# worker, ingest, simulate, alerts serve, storage migrate, train ...).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CITYWATCH_HOME=/var/lib/citywatch

# LightGBM needs the OpenMP runtime; psycopg[binary] brings its own libpq.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p citywatch ingest streams models storage dashboards \
    && pip install . \
    && pip uninstall -y citywatch
COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/citywatch citywatch \
    && mkdir -p /var/lib/citywatch/models /var/lib/citywatch/faust \
    && chown -R citywatch /var/lib/citywatch

USER citywatch
VOLUME ["/var/lib/citywatch"]
ENTRYPOINT ["citywatch"]
CMD ["--help"]
