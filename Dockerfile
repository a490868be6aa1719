# box-bot: the GitHub App (webhook server and worker), listening on port 3000.
# Configure it with environment variables (APP_ID, PRIVATE_KEY, WEBHOOK_SECRET, BOX_API_KEY, …);
# the SQLite database lives in the /data volume unless DATABASE_URL says otherwise.
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000 \
    DATABASE_URL=sqlite:////data/box-bot.sqlite3

RUN useradd --create-home --uid 10001 boxbot \
    && mkdir /data \
    && chown boxbot:boxbot /data

WORKDIR /app
# The dependencies first, listed from pyproject.toml alone: a change to the code reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the code; bot/ops/app.yml, the manifest `box-bot register` uses, is installed with it.
COPY README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-deps . && rm -rf /app/build

USER boxbot
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"
CMD ["box-bot", "serve"]
