"""The run event stream over WebSocket: connect, read messages, and `run stream`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from stellaorch.cli.client import ApiTarget, Params, error_from_body
from stellaorch.cli.errors import ApiUnreachable, RemoteError, SettingsInvalid
from stellaorch.cli.output import say, silence_stdout

STREAM_PATH = "/runs/stream"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A refused subscription is accepted, sent one error envelope, then closed with one of these
# codes; the HTTP status they stand for decides the exit code (auth codes win by code).
_STATUS_OF_CLOSE = {1008: 400, 1011: 500, 1013: 503}
_CLOSE_MEANING = {
    1000: "normal closure",
    1001: "going away",
    1006: "connection lost",
    1011: "server error",
    1012: "service restart",
    1013: "try again later",
}


@asynccontextmanager
async def open_stream(target: ApiTarget, params: Params) -> AsyncIterator[ClientConnection]:
    """A subscribed WebSocket; handshake and connection failures become product errors."""
    url = target.websocket_url(STREAM_PATH, params)
    try:
        socket = await connect(url, additional_headers=target.headers(), max_size=MAX_MESSAGE_BYTES)
    except InvalidStatus as exc:
        raise error_from_body(
            exc.response.status_code, bytes(exc.response.body or b""), target
        ) from exc
    except InvalidURI as exc:
        raise SettingsInvalid(f"--api-url {target.url!r} gives no usable stream URL") from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ApiUnreachable(f"cannot open the run stream at {url}: {exc}") from exc
    try:
        yield socket
    finally:
        await socket.close()


async def messages(socket: ClientConnection) -> AsyncIterator[str]:
    """Each message's text, unchanged; a refusal or a closed stream is raised."""
    refusal: dict[str, Any] | None = None
    while True:
        try:
            text = await socket.recv(decode=True)
        except ConnectionClosed as exc:
            raise (_refused(refusal, exc) if refusal else _closed(exc)) from None
        assert isinstance(text, str)  # decode=True: text frames come back as str
        refusal = _envelope(text)
        if refusal is None:
            yield text


def _envelope(text: str) -> dict[str, Any] | None:
    """The `error` of a refusal message (events never have a top-level `error` key)."""
    if not text.startswith('{"error"'):
        return None
    document = parse_event(text)
    error = document.get("error") if document is not None and len(document) == 1 else None
    return error if isinstance(error, dict) else None


def _refused(error: dict[str, Any], exc: ConnectionClosed) -> RemoteError:
    """The refusal as an API error; the close code stands in for the HTTP status."""
    code = exc.rcvd.code if exc.rcvd else 1008
    return RemoteError(
        _STATUS_OF_CLOSE.get(code, 400),
        str(error.get("code") or "STREAM_REFUSED"),
        str(error.get("message") or "the stream was refused"),
        trace_id=str(error.get("traceId") or ""),
    )


def _closed(exc: ConnectionClosed) -> ApiUnreachable:
    """The stream ended: the server shut down, dropped a slow consumer, or the link broke."""
    frame = exc.rcvd
    if frame is None:
        return ApiUnreachable("the run stream was cut off (no close frame)")
    why = frame.reason or _CLOSE_MEANING.get(frame.code, "no reason given")
    return ApiUnreachable(f"the run stream was closed: {frame.code} {why}")


def stream_params(
    dag_id: str | None, status: str | None, run_id: str | None, after: int | None
) -> dict[str, str | int | None]:
    """The stream's query filters."""
    return {"dagId": dag_id, "status": status, "runId": run_id, "after": after}


def seq_of(text: str) -> int | None:
    """The `seq` of an event message, if it has one."""
    try:
        event = json.loads(text)
    except ValueError:
        return None
    seq = event.get("seq") if isinstance(event, Mapping) else None
    return seq if isinstance(seq, int) else None


async def print_stream(target: ApiTarget, params: Params, *, table: bool = False) -> None:
    """Print every event message on its own line until stopped: as received, or as columns."""
    last: int | None = None
    async with open_stream(target, params) as socket:
        try:
            if table:
                say(event_row(STREAM_COLUMNS))
            async for text in messages(socket):
                say(event_row(event_cells(text)) if table else text)
                last = seq_of(text) or last
        except ApiUnreachable as exc:
            if last is not None:
                exc.message += f"; resume with --after {last}"
            raise
        except BrokenPipeError:
            # The reader went away (`| head`): that ends the stream, it is not an error.
            silence_stdout()


def parse_event(text: str) -> dict[str, Any] | None:
    """An event message as a dict, or None when it is not a JSON object."""
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


# `run stream -o table`: one fixed-width line per event.
STREAM_COLUMNS = ("SEQ", "TIMESTAMP", "TYPE", "RUN_ID", "STEP_ID", "ATTEMPT", "STATUS")
_WIDTHS = (8, 24, 14, 36, 24, 7, 10)


def event_cells(text: str) -> tuple[str, ...]:
    """The table cells of one message; a message that is not an event shows as its text."""
    event = parse_event(text)
    if event is None or "type" not in event:
        return ("-", "-", "message", "-", "-", "-", text[:200])
    keys = ("seq", "timestamp", "type", "runId", "stepId", "attempt", "status")
    return tuple("-" if event.get(k) is None else str(event[k]) for k in keys)


def event_row(cells: tuple[str, ...]) -> str:
    """Cells padded to the stream table's column widths (the last one unpadded)."""
    padded = [c.ljust(w) for c, w in zip(cells[:-1], _WIDTHS, strict=False)]
    return "  ".join([*padded, cells[-1]]).rstrip()
