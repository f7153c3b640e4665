"""`nnlab serve`: trained runs behind an HTTP API (FastAPI on uvicorn) and a page to try them."""
