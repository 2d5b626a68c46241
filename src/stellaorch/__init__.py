"""Stella Orchestrator: multi-tenant DAG runs with a hash-chained ledger."""

__version__ = "0.1.0"
