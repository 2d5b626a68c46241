"""Per-attempt resource metrics: what the worker measures, and the document that is stored.

Every attempt gets wall time and bytes of output (log bytes and outputs JSON); a plugin that
runs processes (`script`) adds the CPU time and peak RSS `os.wait4` gave for its process tree.
The document is stored as a content-addressed blob and linked as the attempt's `metricsRef`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from stellaorch.domain.canonical import canonical_json

MEDIA_TYPE = "application/vnd.stella.step-metrics+json"


class AttemptProbe:
    """Counts an attempt's log bytes on their way to `sink` and keeps the reported usage."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._started = time.monotonic()
        self.log_bytes = 0
        self.usage: dict[str, Any] = {}

    def feed(self, data: bytes) -> None:
        """Count and forward log bytes."""
        self.log_bytes += len(data)
        self._sink(data)

    def report_usage(self, usage: Mapping[str, Any]) -> None:
        """Keep what the plugin measured of its processes."""
        self.usage.update(usage)

    def metrics(
        self, logs: str, outputs: Mapping[str, Any] | None, plugin: str | None
    ) -> dict[str, Any]:
        """The attempt's metrics document, taken now that it ended."""
        return attempt_metrics(
            wall_seconds=time.monotonic() - self._started,
            log_bytes=max(self.log_bytes, len(logs.encode("utf-8"))),
            outputs=outputs,
            usage=self.usage,
            plugin=plugin,
        )


def attempt_metrics(
    *,
    wall_seconds: float,
    log_bytes: int,
    outputs: Mapping[str, Any] | None,
    usage: Mapping[str, Any],
    plugin: str | None,
) -> dict[str, Any]:
    """The metrics document; CPU and RSS fields are null when nothing measured them."""
    user = usage.get("cpuUserSeconds")
    system = usage.get("cpuSystemSeconds")
    cpu = round(float(user) + float(system), 6) if user is not None and system is not None else None
    outputs_bytes = len(json.dumps(outputs, separators=(",", ":")).encode()) if outputs else 0
    rss = usage.get("maxRssKiB")
    return {
        "schema": "stella.step-metrics/v1",
        "plugin": plugin,
        "wallSeconds": round(wall_seconds, 6),
        "cpuSeconds": cpu,
        "cpuUserSeconds": user,
        "cpuSystemSeconds": system,
        "maxRssBytes": int(rss) * 1024 if rss is not None else None,
        "logBytes": log_bytes,
        "outputsBytes": outputs_bytes,
        "outputBytes": log_bytes + outputs_bytes,
    }


def encode(metrics: Mapping[str, Any]) -> bytes:
    """The stored bytes: canonical JSON, so equal metrics share a blob."""
    return canonical_json(dict(metrics)).encode("utf-8")
