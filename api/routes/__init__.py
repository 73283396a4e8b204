"""Thin FastAPI routers; the work happens in api.intake, api.jobs and api.worker."""
