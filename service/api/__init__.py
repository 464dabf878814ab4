"""The HTTP API: a FastAPI app over the session store (``main.create_app``); the contract is
documented in docs/api.md and served as OpenAPI at ``/openapi.json``."""
