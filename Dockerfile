# Syndicate: the API (`syndicate serve`) and delivery workers (`syndicate worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY syndicate ./syndicate
COPY feeds ./feeds
COPY storage ./storage
RUN pip install . \
    && useradd --create-home --uid 10001 syndicate \
    && mkdir -p /app/data && chown syndicate /app/data

USER syndicate
EXPOSE 8080
ENV SYNDICATE_HOST=0.0.0.0 \
    SYNDICATE_PORT=8080
ENTRYPOINT ["syndicate"]
CMD ["serve"]
