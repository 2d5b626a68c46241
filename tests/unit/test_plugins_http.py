"""The http plugin against real local servers: allowlist, redirects, caps, statuses, traceparent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins import StepContext
from stellaorch.plugins.http import HttpPlugin
from stellaorch.plugins.http_params import check_http_params

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """An HTTP server on 127.0.0.1 port 0 in a thread; `routes` map a path to a handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers),
                     "body": body}
                )  # fmt: skip
                server.routes.get(self.path.split("?")[0], _not_found)(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def authority(self) -> str:
        """`127.0.0.1:port`, as a `network` entry."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return f"http://{self.authority}{path}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(status: int, body: bytes = b"", **headers: str) -> Route:
    """A handler answering `status` with `body` and headers (underscores become dashes)."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    return handle


def _not_found(h: BaseHTTPRequestHandler) -> None:
    answer(404, b"no route")(h)


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh local server."""
    started = Server()
    yield started
    started.close()


@pytest.fixture
def other() -> Iterator[Server]:
    """A second local server, never on the allowlist."""
    started = Server()
    yield started
    started.close()


def ctx(params: dict[str, Any], network: list[str], timeout: float = 10.0) -> StepContext:
    """One attempt of an http step."""
    return StepContext(
        tenant="acme", run_id="run-1", dag_id="dag", step_id="call", attempt=3, params=params,
        timeout_seconds=timeout, trace_id=TRACE_ID, network=tuple(network),
    )  # fmt: skip


async def call(server: Server, path: str = "/", **params: Any) -> dict[str, Any]:
    """Call `path` on `server` (allowlisted); the outputs."""
    context = ctx({"url": server.url(path), **params}, [server.authority])
    return (await HttpPlugin().run(context)).outputs


async def failure(server: Server, path: str = "/", **params: Any) -> StepFailed:
    """Call expecting a StepFailed."""
    with pytest.raises(StepFailed) as raised:
        await call(server, path, **params)
    return raised.value


async def test_a_json_answer_becomes_status_headers_and_json(server: Server) -> None:
    server.routes["/ok"] = answer(200, b'{"items": 3}', Content_Type="application/json", ETag="v1")
    outputs = await call(server, "/ok")
    assert outputs["status"] == 200 and outputs["json"] == {"items": 3}
    assert outputs["headers"]["etag"] == "v1"
    assert "text" not in outputs


async def test_a_text_answer_becomes_text(server: Server) -> None:
    server.routes["/t"] = answer(200, "grüße".encode(), Content_Type="text/plain; charset=utf-8")
    assert (await call(server, "/t"))["text"] == "grüße"


async def test_method_headers_and_json_body_are_sent_with_the_traceparent(server: Server) -> None:
    server.routes["/post"] = answer(201, b"{}", Content_Type="application/json")
    await call(server, "/post", method="post", headers={"X-Key": "k1"}, json={"a": [1, "b"]})
    seen = server.seen[-1]
    assert seen["method"] == "POST"
    assert json.loads(seen["body"]) == {"a": [1, "b"]}
    assert seen["headers"]["X-Key"] == "k1"
    assert seen["headers"]["traceparent"] == ctx({}, []).traceparent
    assert seen["headers"]["traceparent"].startswith(f"00-{TRACE_ID}-")


async def test_a_host_not_on_the_allowlist_is_refused_before_connecting(
    server: Server, other: Server
) -> None:
    context = ctx({"url": other.url("/")}, [server.authority])
    with pytest.raises(StepFailed) as raised:
        await HttpPlugin().run(context)
    assert raised.value.code == "HTTP_HOST_NOT_ALLOWED" and not raised.value.retryable
    assert other.seen == []


async def test_a_step_without_an_allowlist_reaches_nothing(server: Server) -> None:
    with pytest.raises(StepFailed) as raised:
        await HttpPlugin().run(ctx({"url": server.url("/")}, []))
    assert raised.value.code == "PARAMS_INVALID" and server.seen == []


async def test_a_redirect_within_the_allowlist_is_followed(server: Server) -> None:
    server.routes["/old"] = answer(302, Location="/new")
    server.routes["/new"] = answer(200, b"moved here")
    outputs = await call(server, "/old")
    assert outputs["text"] == "moved here"
    assert [s["path"] for s in server.seen] == ["/old", "/new"]


async def test_a_redirect_to_a_host_off_the_allowlist_is_refused(
    server: Server, other: Server
) -> None:
    server.routes["/away"] = answer(307, Location=other.url("/steal"))
    error = await failure(server, "/away")
    assert error.code == "HTTP_HOST_NOT_ALLOWED" and "127.0.0.1:" in error.message
    assert other.seen == []


async def test_a_redirect_loop_stops(server: Server) -> None:
    server.routes["/loop"] = answer(302, Location="/loop")
    error = await failure(server, "/loop")
    assert error.code == "HTTP_TOO_MANY_REDIRECTS" and len(server.seen) == 6


async def test_a_see_other_redirect_after_post_becomes_a_get(server: Server) -> None:
    server.routes["/form"] = answer(303, Location="/done")
    server.routes["/done"] = answer(200, b"ok")
    await call(server, "/form", method="POST", json={"x": 1})
    assert [s["method"] for s in server.seen] == ["POST", "GET"]
    assert server.seen[1]["body"] == b""


async def test_a_response_over_the_cap_is_refused(server: Server) -> None:
    server.routes["/big"] = answer(200, b"x" * 5000)
    error = await failure(server, "/big", maxResponseBytes=4096)
    assert error.code == "HTTP_RESPONSE_TOO_LARGE" and not error.retryable


async def test_a_streamed_response_over_the_cap_is_cut(server: Server) -> None:
    def chunked(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    server.routes["/stream"] = chunked
    error = await failure(server, "/stream", maxResponseBytes=10_000)
    assert error.code == "HTTP_RESPONSE_TOO_LARGE"


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "HTTP_CLIENT_ERROR", False),
        (404, "HTTP_CLIENT_ERROR", False),
        (408, "HTTP_CLIENT_ERROR", True),
        (429, "HTTP_CLIENT_ERROR", True),
        (401, "PLUGIN_AUTH_FAILED", False),
        (403, "PLUGIN_AUTH_FAILED", False),
        (500, "HTTP_SERVER_ERROR", True),
        (503, "HTTP_SERVER_ERROR", True),
    ],
)
async def test_error_statuses_map_to_typed_errors(
    server: Server, status: int, code: str, retryable: bool
) -> None:
    server.routes["/s"] = answer(status, b"details")
    error = await failure(server, "/s?token=secret")
    assert (error.code, error.retryable) == (code, retryable)
    assert str(status) in error.message and "secret" not in error.message
    assert "details" in error.logs


async def test_a_slow_endpoint_times_out_retryably(server: Server) -> None:
    release = threading.Event()

    def slow(h: BaseHTTPRequestHandler) -> None:
        release.wait(5)
        answer(200, b"late")(h)

    server.routes["/slow"] = slow
    context = ctx({"url": server.url("/slow")}, [server.authority], timeout=0.3)
    try:
        with pytest.raises(StepFailed) as raised:
            await HttpPlugin().run(context)
    finally:
        release.set()
    assert raised.value.code == "HTTP_TIMEOUT" and raised.value.retryable


async def test_a_refused_connection_is_retryable() -> None:
    gone = Server()
    gone.close()  # its port was just ours: nothing listens there now
    context = ctx({"url": gone.url("/")}, [gone.authority])
    with pytest.raises(StepFailed) as raised:
        await HttpPlugin().run(context)
    assert raised.value.code == "HTTP_CONNECTION_FAILED" and raised.value.retryable


def test_publish_checks_the_static_parameters() -> None:
    problems = dict(
        check_http_params(
            {"url": "ftp://x/", "method": "BREW", "headers": {"Host": "x"}, "body": 1,
             "maxResponseBytes": 10**9}
        )
    )  # fmt: skip
    assert set(problems) == {"url", "method", "headers", "body", "maxResponseBytes"}


def test_publish_accepts_references_in_the_url_headers_and_body() -> None:
    params = {
        "url": "https://api.example.com/feeds/${inputs.feed}",
        "headers": {"X-Date": "${inputs.date}"},
        "json": {"count": "${steps.fetch.outputs.items}"},
        "maxResponseBytes": "${inputs.cap}",
    }
    assert check_http_params(params) == []


def test_publish_requires_a_url() -> None:
    assert [key for key, _ in check_http_params({})] == ["url"]
