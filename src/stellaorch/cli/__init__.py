"""The `stella` command line: service and local commands over the engine (Typer)."""
