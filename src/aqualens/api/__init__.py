"""REST API (FastAPI) under /api/v1, DEEPaaS v2 routes under /v2."""
