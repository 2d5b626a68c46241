"""The HTTP API: FastAPI app, auth dependency, error envelope, stream."""
