"""The composition root: engine, API app, uvicorn and worker/scheduler loops, from Settings.

The CLI parses flags and calls this package; it never builds the API app or the server.
"""
