# The segstream image: one distribution, every command (`segstream consume`, `offline`, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumer/ consumer/
COPY producer/ producer/
COPY offline/ offline/
COPY state/ state/
RUN pip install . \
    && useradd --create-home --uid 10001 segstream

USER segstream
EXPOSE 9400
CMD ["segstream", "--help"]
