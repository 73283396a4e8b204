"""geoseg REST service (FastAPI): thin routers over a durable job store and worker processes."""
