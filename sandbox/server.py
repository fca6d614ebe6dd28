"""A small threaded HTTP(S) server that both sandboxes build on.

It owns what the two protocols share: binding a free loopback port, optional TLS from a
test CA made at start (``trustme``), counting every API request per operation, applying
injected faults before a request reaches the protocol code, and a JSON control API
under ``/_sandbox/`` (never counted) so a sandbox running as a separate process can be
inspected and steered:

- ``GET /_sandbox/calls``            per-operation request counts
- ``POST /_sandbox/calls/reset``     zero the counters
- ``GET|POST|DELETE /_sandbox/faults``  list / add (JSON body of FaultRule fields) / clear
- ``GET /_sandbox/state``            the sandbox's state snapshot (subclass defined)

Subclasses implement :meth:`operation`, :meth:`dispatch` and :meth:`fault_response`.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.faults import CallCounter, FaultInjector, FaultKind, FaultRule

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode(), merged)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             headers: dict[str, str] | None = None) -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type, **(headers or {})})


class _DropConnection(Exception):
    """Raised inside a handler to close the socket without an answer."""


class SandboxServer:
    """Base class: start/stop on a free port, count, inject faults, serve the control API."""

    name = "sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False, seed: int = 0) -> None:
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.calls = CallCounter()
        self.faults = FaultInjector(seed)
        self.ca_bundle: Path | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    # -- to implement ---------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        """Name of the API operation this request is (counted), or None to not count it."""
        raise NotImplementedError

    def dispatch(self, request: Request, operation: str | None) -> Response:
        raise NotImplementedError

    def fault_response(self, operation: str, rule: FaultRule) -> Response:
        """The protocol's own shape for an injected HTTP error or throttle."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    # -- lifecycle ------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} sandbox is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer((self.host, self.requested_port), handler)
        self._httpd.daemon_threads = True
        if self.tls:
            self._httpd.socket = self._tls_context().wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.name}-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tls_context(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._tmpdir = tempfile.TemporaryDirectory(prefix=f"{self.name}-tls-")
        self.ca_bundle = Path(self._tmpdir.name) / "sandbox-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        return context

    # -- request handling -------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        operation = self.operation(request)
        if operation is not None:
            number = self.calls.hit(operation)
            rule = self.faults.check(operation, number, self.calls.total)
            if rule is not None and rule.after:
                response = self.dispatch(request, operation)  # the request takes effect ...
                if rule.kind is FaultKind.LATENCY:
                    time.sleep(rule.delay)
                    return response
                if rule.kind is FaultKind.DROP:  # ... and the answer is lost
                    raise _DropConnection
                return self.fault_response(operation, rule)
            if rule is not None:
                if rule.kind is FaultKind.LATENCY:
                    time.sleep(rule.delay)
                elif rule.kind is FaultKind.DROP:
                    raise _DropConnection
                else:
                    return self.fault_response(operation, rule)
        return self.dispatch(request, operation)

    def _control(self, request: Request) -> Response:
        what = request.path[len(CONTROL_PREFIX):].strip("/")
        if what == "calls" and request.method == "GET":
            return Response.json({"total": self.calls.total, "by_operation": self.calls.snapshot()})
        if what == "calls/reset" and request.method == "POST":
            self.calls.reset()
            return Response.json({"ok": True})
        if what == "faults":
            if request.method == "POST":
                spec = request.json()
                rule = self.faults.inject(spec.pop("operation"), spec.pop("kind"), **spec)
                return Response.json(rule.to_dict(), status=201)
            if request.method == "DELETE":
                self.faults.clear()
                return Response.json({"ok": True})
            return Response.json([rule.to_dict() for rule in self.faults.rules()])
        if what == "state" and request.method == "GET":
            return Response.json(self.state())
        return Response.json({"error": f"unknown control endpoint {request.path}"}, status=404)


def _make_handler(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"{server.name}-sandbox/1.0"
        # Without TCP_NODELAY, small responses on keep-alive connections wait ~40 ms for
        # delayed ACKs; real servers answer at once, and benchmarks would measure the stall.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                response = server.handle(request)
            except _DropConnection:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            except Exception:  # a sandbox bug must be loud, and answer like a server would
                log.exception("%s sandbox failed on %s %s", server.name, self.command, self.path)
                response = Response.text("internal sandbox error", status=500)
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s: " + format, server.name, *args)

    return Handler


def run_cli(server: SandboxServer, info: dict[str, Any], info_file: str | None = None) -> None:
    """Run a started sandbox in the foreground until SIGINT/SIGTERM.

    Prints one JSON line describing how to reach it (and writes it to ``info_file``) so
    scripts can start the sandbox as a process and read its port.
    """
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    line = json.dumps(info)
    if info_file:
        tmp = Path(info_file).with_suffix(".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(info_file)
    print(line, flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
