"""DAG specs: the published document's model, its parsing and validation, and its compiled form."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from stellaorch.domain.canonical import hash_json
from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.graph import adjacency, reverse, topological_order
from stellaorch.domain.limits import (
    MAX_JSON_DEPTH,
    MAX_SPEC_BYTES,
    text_depth_exceeds,
    value_depth_exceeds,
)
from stellaorch.domain.spec_rules import SpecOutline, graph_problems, problem
from stellaorch.domain.spec_yaml import load_yaml
from stellaorch.domain.templating import output_step_ids, secret_names

__all__ = [
    "Backoff",
    "CompiledDag",
    "DagSpec",
    "Edge",
    "RetryPolicy",
    "StepSpec",
    "compile_dag",
    "load_spec_file",
    "parse_spec",
    "spec_hash",
    "spec_invalid",
    "topological_order",
]

_MODEL_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    populate_by_name=True,
    alias_generator=to_camel,
    # Strict: "3" is not an int and true is not 1; a spec means exactly what it says.
    strict=True,
    allow_inf_nan=False,
)
_STEP_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_DAG_ID = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_PLUGIN_VERSION = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# ASCII digits only: Python's \d would also accept other scripts' digits.
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?")
_NETWORK_ENTRY = re.compile(r"[^\s/@]{1,260}")
_PORT_SUFFIX = re.compile(r"(\[[^\]]*\]|[^:]*):([0-9]+)")
# Every number a spec carries is bounded: each reaches the database or an OS limit, where an
# out-of-range value fails every run of the version instead of its publish (README, DagSpec).
_RESOURCE_LIMITS = {"cpuSeconds": 86_400.0, "memoryMb": 1_048_576.0}
_MAX_STEPS = 10_000
_MAX_CONCURRENCY = 10_000
_MAX_NETWORK_ENTRIES = 100
_MAX_VERSION_LENGTH = 64  # the store's column
_MAX_DELAY_MS = 86_400_000


class Backoff(BaseModel):
    """Exponential backoff between attempts: initialMs * factor**n, capped, with jitter."""

    model_config = _MODEL_CONFIG

    initial_ms: int = Field(default=1000, ge=0, le=_MAX_DELAY_MS)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_ms: int = Field(default=60_000, ge=0, le=_MAX_DELAY_MS)
    jitter: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> Backoff:
        if self.max_ms < self.initial_ms:
            raise ValueError(f"maxMs ({self.max_ms}) must be >= initialMs ({self.initial_ms})")
        return self


class RetryPolicy(BaseModel):
    """How often a failing step is attempted and how long to wait in between."""

    model_config = _MODEL_CONFIG

    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff: Backoff = Field(default_factory=Backoff)


class StepSpec(BaseModel):
    """One step of a DAG: which plugin runs, with what parameters and limits."""

    model_config = _MODEL_CONFIG

    id: str = Field(pattern=_STEP_ID)
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    concurrency: int | None = Field(default=None, ge=1, le=_MAX_CONCURRENCY)
    disabled: bool = False
    network: list[str] = Field(default_factory=list, max_length=_MAX_NETWORK_ENTRIES)
    resources: dict[str, float] | None = None

    @property
    def plugin_name(self) -> str:
        """The plugin's name without any `@version`."""
        return self.plugin.partition("@")[0]

    @property
    def plugin_version(self) -> str | None:
        """The pinned plugin version, or None when the step names the plugin alone."""
        _, at, version = self.plugin.partition("@")
        return version if at else None

    @field_validator("plugin")
    @classmethod
    def _check_plugin(cls, value: str) -> str:
        name, at, version = value.partition("@")
        if not _PLUGIN_NAME.fullmatch(name) or (at and not _PLUGIN_VERSION.fullmatch(version)):
            raise ValueError(f"plugin must be 'name' or 'name@version', got {value!r}")
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        _require_json(value, "with")
        return value

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: list[str]) -> list[str]:
        bad = [entry for entry in value if not _NETWORK_ENTRY.fullmatch(entry)]
        if bad:
            raise ValueError(f"network entries must be host[:port] (max 260), got {bad[0]!r:.80}")
        ports = [int(m.group(2)) for e in value if (m := _PORT_SUFFIX.fullmatch(e))]
        if any(not 1 <= port <= 65_535 for port in ports):
            raise ValueError("network ports must be from 1 to 65535")
        return value

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, limit in (value or {}).items():
            top = _RESOURCE_LIMITS.get(name)
            if top is None:
                raise ValueError(f"unknown resource {name!r}; allowed: cpuSeconds, memoryMb")
            if not (0 < limit <= top and math.isfinite(limit)):
                raise ValueError(f"{name} must be a number > 0 and <= {top:g}, got {limit:g}")
        return value


class Edge(BaseModel):
    """A dependency: `to` runs only after `from` succeeded."""

    model_config = _MODEL_CONFIG

    source: str = Field(alias="from")
    target: str = Field(alias="to")


class DagSpec(BaseModel):
    """One immutable version of a DAG as published."""

    model_config = _MODEL_CONFIG

    dag_id: str = Field(pattern=_DAG_ID)
    version: str
    steps: list[StepSpec] = Field(min_length=1, max_length=_MAX_STEPS)
    edges: list[Edge] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _normalise_version(cls, value: Any) -> Any:
        # Integers are stored as their decimal string so 3 and "3" are one version.
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            value = str(value)
        elif not isinstance(value, str) or not _VERSION.fullmatch(value) or not value.strip("0"):
            raise ValueError(
                "version must be a positive integer or a semver string (quoted in YAML), "
                f"got {value!r:.80}"
            )
        if len(value) > _MAX_VERSION_LENGTH:
            raise ValueError(f"version must be at most {_MAX_VERSION_LENGTH} characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        _require_json(value, "metadata")
        return value

    def to_document(self) -> dict[str, Any]:
        """The canonical JSON document of this version (camelCase, defaults included)."""
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class CompiledDag:
    """A validated spec with the graph facts the scheduler needs, computed once."""

    spec: DagSpec
    spec_hash: str
    order: tuple[str, ...]
    steps: Mapping[str, StepSpec]
    predecessors: Mapping[str, tuple[str, ...]]
    successors: Mapping[str, tuple[str, ...]]
    roots: tuple[str, ...]
    output_refs: Mapping[str, tuple[str, ...]]
    position: Mapping[str, int]
    secret_refs: Mapping[str, tuple[str, ...]]  # names of referenced secrets, sorted


def parse_spec(
    source: str | bytes | Mapping[str, Any], *, fmt: Literal["auto", "yaml", "json"] = "auto"
) -> DagSpec:
    """Parse and fully validate a spec; every problem is reported in one SpecInvalid."""
    document = _load_document(source, fmt)
    if not isinstance(document, Mapping):
        raise spec_invalid([problem("$", "the spec must be a mapping at the top level")])
    if value_depth_exceeds(document):
        raise _too_deep()
    try:
        spec, problems = _validate_fields(document)
        problems += graph_problems(SpecOutline.of_document(document))
    except RecursionError:
        raise spec_invalid([problem("$", "the spec is nested too deeply")]) from None
    if spec is None or problems:
        raise spec_invalid(problems)
    return spec


def load_spec_file(path: Path) -> DagSpec:
    """Read a spec from a .yaml, .yml or .json file (other suffixes are sniffed)."""
    formats: dict[str, Literal["yaml", "json"]] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise spec_invalid([problem("$", f"cannot read {path}: {error.strerror}")]) from None
    return parse_spec(raw, fmt=formats.get(path.suffix.lower(), "auto"))


def spec_hash(spec: DagSpec) -> str:
    """`sha256:<hex>` over the spec's canonical document."""
    return hash_json(spec.to_document())


def compile_dag(spec: DagSpec) -> CompiledDag:
    """Validate the graph of `spec` and precompute order, neighbours and output references."""
    problems = graph_problems(_outline(spec))
    if problems:
        raise spec_invalid(problems)
    step_ids = [step.id for step in spec.steps]
    pairs = [(edge.source, edge.target) for edge in spec.edges]
    successors = adjacency(step_ids, pairs)
    predecessors = reverse(successors)
    order = tuple(topological_order(step_ids, pairs))
    return CompiledDag(
        spec=spec,
        spec_hash=spec_hash(spec),
        order=order,
        steps=MappingProxyType({step.id: step for step in spec.steps}),
        predecessors=_frozen_lists(predecessors),
        successors=_frozen_lists(successors),
        roots=tuple(step_id for step_id in order if not predecessors[step_id]),
        output_refs=MappingProxyType({s.id: output_step_ids(s.params) for s in spec.steps}),
        position=MappingProxyType({step_id: i for i, step_id in enumerate(order)}),
        secret_refs=MappingProxyType({step.id: secret_names(step.params) for step in spec.steps}),
    )


def _frozen_lists(lists: Mapping[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
    """A read-only view with tuple values."""
    return MappingProxyType({key: tuple(values) for key, values in lists.items()})


def _outline(spec: DagSpec) -> SpecOutline:
    """The graph rules' view of a validated model."""
    return SpecOutline(
        step_ids=tuple(step.id for step in spec.steps),
        params=tuple(step.params for step in spec.steps),
        edges=tuple((edge.source, edge.target) for edge in spec.edges),
    )


# --- loading ---------------------------------------------------------------------------------


def _load_document(source: str | bytes | Mapping[str, Any], fmt: str) -> Any:
    """Turn text into a document; mappings pass through untouched."""
    if isinstance(source, Mapping):
        return source
    if len(source) > MAX_SPEC_BYTES:
        raise spec_invalid([problem("$", f"the spec is larger than {MAX_SPEC_BYTES} bytes")])
    text = _decode(source)
    # YAML would read most JSON too, but JSON's own parser gives the better error message.
    if fmt == "json" or (fmt == "auto" and text.lstrip().startswith("{")):
        if text_depth_exceeds(text.encode()):
            raise _too_deep()
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as error:
            if fmt == "json":
                raise spec_invalid([problem("$", f"not valid JSON: {error}")]) from None
    try:
        return load_yaml(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise spec_invalid([problem("$", f"not valid YAML: {_yaml_reason(error)}")]) from None


def _yaml_reason(error: Exception) -> str:
    """A one-line reason with 1-based line and column instead of PyYAML's multi-line report."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error) or type(error).__name__


def _decode(source: str | bytes) -> str:
    """Text as str; bytes must be UTF-8 (a BOM is tolerated)."""
    if isinstance(source, str):
        return source
    try:
        return source.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise spec_invalid([problem("$", f"not UTF-8 text: {error.reason}")]) from None


def _require_json(value: Any, where: str) -> None:
    """Reject values a JSON document cannot hold (YAML dates, sets, NaN, non-string keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _require_json(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            _require_json(item, f"{where}[{position}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}, which JSON cannot represent")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where} is a {type(value).__name__}, not a JSON value; quote it")


# --- problems --------------------------------------------------------------------------------


def spec_invalid(problems: list[dict[str, str]]) -> SpecInvalid:
    """One error for all problems: the first in the message, all of them in the details."""
    first = problems[0]
    others = len(problems) - 1
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return SpecInvalid(
        f"invalid DAG spec: {first['path']}: {first['message']}{more}",
        details={"errors": problems},
    )


def _too_deep() -> SpecInvalid:
    """Refused before any recursive validation walks it (see domain.limits)."""
    return spec_invalid([problem("$", f"the spec nests deeper than {MAX_JSON_DEPTH} levels")])


def _validate_fields(document: Mapping[str, Any]) -> tuple[DagSpec | None, list[dict[str, str]]]:
    """Pydantic validation, its errors translated to our paths and wording."""
    try:
        return DagSpec.model_validate(dict(document)), []
    except PydanticValidationError as error:
        return None, [problem(_loc_path(e["loc"]), _clean(e["msg"])) for e in error.errors()]


def _loc_path(loc: tuple[int | str, ...]) -> str:
    """('steps', 2, 'id') -> 'steps[2].id'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":  # pydantic's marker for "the key itself was invalid"
            path += f".{part}" if path else part
    return path or "$"


def _clean(message: str) -> str:
    """Drop pydantic's 'Value error, ' prefix from our own validators' messages."""
    return message.removeprefix("Value error, ")
