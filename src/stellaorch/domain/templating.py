"""References in step parameters (`${inputs.x}`, `${steps.<id>.outputs.y}`, `${secrets.n}`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import StellaError, ValidationError

ReferenceKind = Literal["inputs", "steps", "secrets"]

_OPENER = re.compile(r"\$\$\{|\$\{")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_SHAPES = "${inputs.<path>}, ${steps.<stepId>.outputs.<path>} or ${secrets.<name>}"


class ReferenceSyntaxError(ValidationError):
    """A `${...}` that breaks the reference grammar; `details['path']` says where it sits."""

    code = "REFERENCE_INVALID"


class ReferenceUnresolved(StellaError):
    """A well-formed reference whose target is missing when parameters are substituted."""

    code = "REFERENCE_UNRESOLVED"


@dataclass(frozen=True)
class Reference:
    """One parsed reference; `text` is the reference exactly as written, `${` to `}`."""

    kind: ReferenceKind
    step_id: str | None
    path: tuple[str, ...]
    text: str


# A parsed string is a sequence of pieces: literal text or a reference.
Piece: TypeAlias = "str | Reference"


def find_references(params: Any) -> list[Reference]:
    """Every reference in a parameter tree: lists in order, mapping keys sorted, left to right."""
    return [reference for _, reference in locate_references(params)]


def secret_names(params: Any) -> tuple[str, ...]:
    """Sorted names of the secrets a parameter tree references."""
    return tuple(sorted({r.path[0] for r in find_references(params) if r.kind == "secrets"}))


def output_step_ids(params: Any) -> tuple[str, ...]:
    """Sorted ids of the steps whose outputs a parameter tree references."""
    return tuple(sorted({ref.step_id for ref in find_references(params) if ref.step_id}))


def locate_references(params: Any) -> list[tuple[str, Reference]]:
    """Like find_references, paired with where each sits (`url`, `headers.auth`, `items[0]`)."""
    return list(_walk(params, ""))


def lone_reference(value: Any) -> Reference | None:
    """The reference `value` consists of, if it is exactly one (it then keeps its JSON type).

    A value of unknown type at publish time: its checks wait until it is substituted.
    """
    if not isinstance(value, str) or "${" not in value:
        return None
    try:
        tokens = _tokenize(value)
    except ReferenceSyntaxError:
        return None  # malformed references are reported by the spec's own rules
    return tokens[0] if len(tokens) == 1 and isinstance(tokens[0], Reference) else None


def with_placeholders(params: Any, placeholder: str = "x") -> Any:
    """A copy of a parameter tree with every reference rendered as `placeholder` text.

    For publish-time checks of a value's shape: `$${` becomes `${` as it will at run time.
    """
    if isinstance(params, str):
        return "".join(p if isinstance(p, str) else placeholder for p in _tokenize(params))
    if isinstance(params, Mapping):
        return {key: with_placeholders(item, placeholder) for key, item in params.items()}
    if isinstance(params, list | tuple):
        return [with_placeholders(item, placeholder) for item in params]
    return params


def substitute(
    params: Any,
    *,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    secrets: Mapping[str, str] | None = None,
) -> Any:
    """A new parameter tree with every reference replaced by the value it names."""
    return _substitute(params, _Scope(inputs=inputs, outputs=outputs, secrets=secrets or {}))


@dataclass(frozen=True)
class _Scope:
    """The values references may name during one substitution."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Mapping[str, Any]]
    secrets: Mapping[str, str]

    def resolve(self, reference: Reference) -> Any:
        """The value `reference` names, or ReferenceUnresolved naming the reference."""
        value: Any = self._root(reference)
        for depth, key in enumerate(reference.path):
            value = _descend(value, key, reference, depth)
        return value

    def _root(self, reference: Reference) -> Any:
        """The mapping the reference's path starts from."""
        if reference.kind == "inputs":
            return self.inputs
        if reference.kind == "secrets":
            return self.secrets
        step_id = reference.step_id or ""
        if step_id not in self.outputs:
            raise _unresolved(reference, f"step {step_id!r} has no outputs")
        return self.outputs[step_id]


def _descend(container: Any, key: str, reference: Reference, depth: int) -> Any:
    """One step down a reference path: a mapping key, or a list index written in digits."""
    if isinstance(container, Mapping) and key in container:
        return container[key]
    if isinstance(container, list | tuple) and key.isdigit() and int(key) < len(container):
        return container[int(key)]
    missing = ".".join(reference.path[: depth + 1])
    raise _unresolved(reference, f"{missing!r} not found")


def _unresolved(reference: Reference, why: str) -> ReferenceUnresolved:
    """The error for a reference that cannot be resolved; names the reference, never values."""
    return ReferenceUnresolved(
        f"cannot resolve {reference.text}: {why}", details={"reference": reference.text}
    )


def _substitute(value: Any, scope: _Scope) -> Any:
    """Rebuild containers, substitute strings, keep other scalars (they are immutable)."""
    if isinstance(value, str):
        return _substitute_text(value, scope)
    if isinstance(value, Mapping):
        return {key: _substitute(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(item, scope) for item in value]
    return value


def _substitute_text(text: str, scope: _Scope) -> Any:
    """A lone reference keeps its JSON type; embedded ones are rendered into the string."""
    tokens = _tokenize(text)
    if len(tokens) == 1 and isinstance(tokens[0], Reference):
        # Deep copy so callers can mutate the result without touching recorded outputs.
        return copy.deepcopy(scope.resolve(tokens[0]))
    return "".join(_render(token, scope) for token in tokens)


def _render(token: Piece, scope: _Scope) -> str:
    """A literal as-is; a resolved string as-is; any other value as canonical JSON."""
    if isinstance(token, str):
        return token
    value = scope.resolve(token)
    return value if isinstance(value, str) else canonical_json(value)


def _walk(value: Any, where: str) -> Iterator[tuple[str, Reference]]:
    """Depth-first walk of a parameter tree; mapping keys are data, never references."""
    if isinstance(value, str):
        for token in _tokens_at(value, where):
            if isinstance(token, Reference):
                yield where, token
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            yield from _walk(value[key], f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            yield from _walk(item, f"{where}[{position}]")


def _tokens_at(text: str, where: str) -> tuple[Piece, ...]:
    """Tokenise, adding the location to a syntax error so spec errors can point at it."""
    try:
        return _tokenize(text)
    except ReferenceSyntaxError as error:
        raise ReferenceSyntaxError(error.message, details={"path": where}) from None


@lru_cache(maxsize=4096)
def _tokenize(text: str) -> tuple[Piece, ...]:
    """Split text into literal pieces and references; `$${` is a literal `${`."""
    if "${" not in text:
        return (text,) if text else ()
    tokens: list[Piece] = []
    literal = ""
    position = 0
    while (opener := _OPENER.search(text, position)) is not None:
        literal += text[position : opener.start()]
        if opener.group() == "$${":
            literal += "${"
            position = opener.end()
            continue
        close = text.find("}", opener.end())
        if close < 0:
            raise ReferenceSyntaxError(f"unterminated reference in {text!r}: '${{' without '}}'")
        tokens += [literal] if literal else []
        tokens.append(_parse_reference(text[opener.start() : close + 1]))
        literal, position = "", close + 1
    literal += text[position:]
    return tuple([*tokens, literal] if literal else tokens)


def _parse_reference(text: str) -> Reference:
    """Parse one `${...}` into a Reference, or raise ReferenceSyntaxError."""
    kind, _, rest = text[2:-1].strip().partition(".")
    parts = tuple(rest.split(".")) if rest else ()
    if kind not in ("inputs", "steps", "secrets"):
        raise ReferenceSyntaxError(f"unknown reference kind {kind!r} in {text}; use {_SHAPES}")
    if not parts or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise ReferenceSyntaxError(f"malformed reference {text}; use {_SHAPES}")
    if kind == "steps":
        return _step_reference(parts, text)
    if kind == "secrets":
        # Secret names may contain dots; a secret is one opaque string, not a tree.
        return Reference("secrets", None, (".".join(parts),), text)
    return Reference("inputs", None, parts, text)


def _step_reference(parts: tuple[str, ...], text: str) -> Reference:
    """Split `<stepId>.outputs.<path>`; step ids may hold dots, so cut at the first `outputs`."""
    cut = parts.index("outputs", 1) if "outputs" in parts[1:] else -1
    if cut < 0 or cut == len(parts) - 1:
        raise ReferenceSyntaxError(
            f"malformed reference {text}; expected ${{steps.<stepId>.outputs.<path>}}"
        )
    return Reference("steps", ".".join(parts[:cut]), parts[cut + 1 :], text)
