# The portal image: web (gunicorn) and worker (Celery) run from it with different commands.
FROM python:3.11-slim-bookworm

# g++, libssl-dev and libbz2-dev build zeroc-ice (omero-py's transport) from source, once.
RUN apt-get update && apt-get install -y --no-install-recommends g++ libssl-dev libbz2-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/portal
COPY . .
# the versions the tests passed with (constraints.txt), omero-py's included
ENV PIP_CONSTRAINT=/srv/portal/constraints.txt
RUN pip install --no-cache-dir -e '.[server]' && PYTHON=python scripts/install-omero.sh

RUN useradd --system --home /srv/portal portal && mkdir -p /data/staging && chown -R portal /data
USER portal
ENV PORTAL_MODE=production PORTAL_DATA_DIR=/data PORTAL_STAGING_DIR=/data/staging PORTAL_HOST=0.0.0.0
EXPOSE 5000
CMD ["upload-portal", "serve", "--no-worker", "--processes", "2"]
