"""An attempt's outcome with every value of the secrets it used replaced, before it is stored.

Logs, outputs and the error message are cleaned of every live version of each secret the
attempt resolved, in the encodings `ValueRedactor` knows; the store never sees the values.
"""

from __future__ import annotations

from dataclasses import replace

from stellaorch.engine.requests import Outcome
from stellaorch.observability.secret_values import ValueRedactor


def redacted(outcome: Outcome) -> Outcome:
    """`outcome` cleaned of its lease's secret values (unchanged when it used none)."""
    if not outcome.lease.secrets.live:
        return outcome
    redactor = ValueRedactor(outcome.lease.secrets.live)
    error = outcome.error
    if error is not None:
        error = {key: redactor.tree(value) for key, value in error.items()}
    outputs = None if outcome.outputs is None else redactor.tree(dict(outcome.outputs))
    return replace(outcome, outputs=outputs, logs=redactor.text(outcome.logs), error=error)
