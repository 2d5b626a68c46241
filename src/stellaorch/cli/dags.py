"""`stella orch dag …`: check a spec file or render a Python DAG locally; list, show, publish,
disable over the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import UsageInvalid
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.output import print_json, say, warn
from stellaorch.cli.pyref import load_object
from stellaorch.cli.render import Printer
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.limits import MAX_OPERATOR_REASON_CHARS, MAX_OPERATOR_TICKET_CHARS
from stellaorch.domain.spec import (
    DagSpec,
    compile_dag,
    load_spec_file,
    parse_spec,
    spec_invalid,
)
from stellaorch.engine.catalog import plugin_problems
from stellaorch.engine.dag_signing import sign_spec
from stellaorch.plugins.builtin import builtin_registry
from stellaorch.sdk import Dag
from stellaorch.security.keys import newest_ed25519_key
from stellaorch.security.trust import load_private_key


def validate_file(path: Path) -> dict[str, Any]:
    """Parse and check a spec file (see `check_spec`); a summary of what it publishes as."""
    return {"file": str(path), **check_spec(load_spec_file(path))}


def check_spec(spec: DagSpec) -> dict[str, Any]:
    """Compile a parsed spec; SpecInvalid lists every problem with its path.

    Built-in plugins' names and static parameters are checked too, as publish checks them.
    A bundle reference (`name@version`) names a tenant's imported bundle, which only the
    server knows: it is checked at publish.
    """
    compiled = compile_dag(spec)
    local = [i for i, step in enumerate(spec.steps) if "@" not in step.plugin]
    problems = [
        p
        for p in plugin_problems(spec, builtin_registry())
        if any(p["path"].startswith(f"steps[{i}].") for i in local)
    ]
    if problems:
        raise spec_invalid(problems)
    return {
        "dagId": compiled.spec.dag_id,
        "version": compiled.spec.version,
        "specHash": compiled.spec_hash,
        "steps": len(compiled.order),
        "order": list(compiled.order),
    }


def python_dag(target: str) -> tuple[DagSpec, str]:
    """The spec and its YAML text for the `stellaorch.sdk.Dag` that `module:attr` names.

    The YAML text is what is validated (exactly as `dag validate` checks a file), so what
    `dag render` prints is a spec that publishes as this one.
    """
    dag = load_object(target)
    if not isinstance(dag, Dag):
        raise UsageInvalid(f"{target!r} is not a stellaorch.sdk.Dag")
    text = yaml.safe_dump(
        dag.document(), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    spec = parse_spec(text, fmt="yaml")
    check_spec(spec)
    return spec, text


async def render(target: str) -> None:
    """Print the YAML spec of a Python DAG (keys in the spec's order, params sorted)."""
    _, text = python_dag(target)
    say(text.rstrip("\n"))


async def validate(path: Path, *, as_json: bool) -> None:
    """Print what a valid spec would publish as: id, version, hash and execution order."""
    summary = validate_file(path)
    if as_json:
        print_json(summary)
        return
    say(f"valid: {summary['file']}")
    say(f"dagId:    {summary['dagId']}")
    say(f"version:  {summary['version']}")
    say(f"specHash: {summary['specHash']}")
    say(f"order:    {' -> '.join(summary['order'])}")


# --- over the API -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorNote:
    """Why an admin change is made (recorded in the audit log), and its ticket."""

    reason: str
    ticket: str | None = None

    def headers(self) -> dict[str, str]:
        """X-Stella-Operator-Reason and -Ticket; header values must be printable ASCII."""
        reason = _header_text(self.reason, "--reason", MAX_OPERATOR_REASON_CHARS)
        headers = {"X-Stella-Operator-Reason": reason}
        if self.ticket:
            ticket = _header_text(self.ticket, "--ticket", MAX_OPERATOR_TICKET_CHARS)
            headers["X-Stella-Operator-Ticket"] = ticket
        return headers


def _header_text(value: str, flag: str, limit: int) -> str:
    """The value, if it can travel in an HTTP header unchanged and the server takes its size."""
    text = value.strip()
    if not text or not text.isascii() or not text.isprintable():
        raise UsageInvalid(f"{flag} must be non-empty printable ASCII (it is sent as a header)")
    if len(text) > limit:
        raise UsageInvalid(f"{flag} must be at most {limit} characters")
    return text


def version_path(dag_id: str, version: str, suffix: str = "") -> str:
    """`/dags/<id>/<version><suffix>`, both escaped."""
    return f"/dags/{quote(dag_id, safe='')}/{quote(version, safe='')}{suffix}"


async def list_dags(
    client: ApiClient, printer: Printer, dag_id: str | None, active: bool | None, paging: Paging
) -> None:
    """DAG versions by dagId, newest version first."""
    params = {"dagId": dag_id, "active": None if active is None else str(active).lower()}
    await print_pages(client, printer, "dag", "/dags", params, paging)


async def show_dag(client: ApiClient, printer: Printer, dag_id: str, version: str) -> None:
    """One version (its spec is in the JSON output)."""
    printer.one("dag", await client.get(version_path(dag_id, version)))


def publish_spec(spec_file: Path | None, target: str | None) -> DagSpec:
    """The spec to publish: from exactly one of a file or a Python DAG (`module:attr`)."""
    if (spec_file is None) == (target is None):
        raise UsageInvalid("give exactly one of --file or --from")
    if spec_file is not None:
        return compile_dag(load_spec_file(spec_file)).spec
    return python_dag(str(target))[0]


def publish_body(
    spec: DagSpec, signature_file: Path | None, key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    """The spec as checked locally (invalid specs never leave the machine), plus signature.

    Without a signature file the spec is signed with `key` when there is one.
    """
    body = spec.to_document()
    if signature_file is not None:
        body["signature"] = _read_envelope(signature_file)
    elif key is not None:
        body["signature"] = sign_spec(spec, key)
    return body


def local_signing_key(key_file: Path | None, keys_dir: Path) -> Ed25519PrivateKey | None:
    """The key `--key` names, else the newest Ed25519 private key of the key directory."""
    if key_file is not None:
        return load_private_key(key_file)
    return newest_ed25519_key(keys_dir)


async def sign_file(spec_file: Path, key_file: Path, out: Path | None) -> None:
    """Write (or print) the DSSE envelope signing a spec file with an Ed25519 key."""
    envelope = sign_spec(compile_dag(load_spec_file(spec_file)).spec, load_private_key(key_file))
    text = json.dumps(envelope, indent=2, sort_keys=True) + "\n"
    if out is None:
        say(text.rstrip("\n"))
    else:
        _write_text(out, text)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _read_envelope(path: Path) -> dict[str, Any]:
    """A DSSE envelope: a JSON object with payloadType, payload and signatures."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(f"cannot read signature file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValidationError(f"signature file {path} is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or "signatures" not in envelope:
        raise ValidationError(f"signature file {path} is not a DSSE envelope")
    return envelope


async def publish(
    client: ApiClient, printer: Printer, body: dict[str, Any], note: OperatorNote
) -> None:
    """Publish a version (the same content again returns it unchanged)."""
    printer.one("dag", await client.post("/dags", body, note.headers()))


async def set_enabled(
    client: ApiClient,
    printer: Printer,
    dag_id: str,
    version: str,
    *,
    enabled: bool,
    note: OperatorNote,
    cancel_queued: bool = False,
) -> None:
    """Enable or disable a version; disabled versions take no new runs (`cancel_queued`:
    its queued runs are cancelled too); say which schedules paused and runs were cancelled."""
    action = ":enable" if enabled else ":disable"
    path = version_path(dag_id, version, action)
    body = {"cancelQueued": True} if cancel_queued else None
    view = await client.post(path, body, note.headers())
    printer.one("dag", view)
    if view.get("pausedSchedules"):
        warn(f"paused schedules: {', '.join(view['pausedSchedules'])}")
    if cancel_queued:
        warn(f"cancelled {len(view.get('cancelledRuns') or [])} queued run(s)")
    if view.get("remaining"):
        warn(f"{view['remaining']} more queued runs: cancel them with run bulk-cancel")
