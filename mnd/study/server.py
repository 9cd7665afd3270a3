"""A small local web page for the subjective test (section IV-B-5, TABLE V), standard library only.

Pages: ``/`` log in with a name or code (the same name resumes where the
rater stopped); ``/instructions`` the viewing conditions and the scale,
shown before the first pair; ``/rate`` one pair side by side with TABLE V's
seven rules, a progress bar and keyboard shortcuts; ``/thanks`` at the end.
Images are served as ``/image/<pair id>/<left|right>`` for the logged-in
rater only: the browser never names a file, and a URL does not say which
method is on which side.

``POST /rate`` takes a form (``pair``, ``score``) or JSON
(``{"pair": "P001", "score": 2}``); a rating that is refused (bad score,
unknown pair, already answered, malformed body, not logged in) gets a 4xx
answer (JSON for a JSON request, a short HTML page otherwise) and writes
nothing.

A body must come with one plain decimal ``Content-Length`` of at most
:data:`MAX_BODY` bytes (else 400, 411 or 413) and arrive in full: a body
still incomplete :data:`REQUEST_TIMEOUT` seconds after its headers gets 408,
one that ends early gets 400, and neither is recorded; a request line or
headers left unfinished that long close the connection. A request the
server fails on is answered 500 and reported in one line on stderr, never
a traceback.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mnd.errors import InputError
from mnd.study.page import error_page, instructions_page, login_page, rate_page, thanks_page
from mnd.study.store import RatingRejected, Study

COOKIE = "mnd_rater"
MAX_BODY = 4096
"""The largest request body accepted, in bytes (a login or one answer is far smaller)."""

REQUEST_TIMEOUT = 10.0
"""Seconds a client may stay silent while sending a request line or headers, and may take to send a whole body
(then 408, or the connection is closed)."""

_LENGTH = re.compile(r"[0-9]+")


def _score(raw: Any) -> int:
    """A score from a form (text) or JSON (integer); anything else is refused."""
    if isinstance(raw, str) and re.fullmatch(r"[+-]?[0-9]{1,2}", raw.strip()):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RatingRejected("score", f"{raw!r} is not an integer from -3 to 3 (TABLE V)", 400)
    return raw


class Handler(BaseHTTPRequestHandler):
    """Answers one request; :attr:`study` is set on the subclass :func:`make_server` builds."""

    study: Study
    server_version = "mnd-rating"
    sys_version = ""
    timeout = REQUEST_TIMEOUT  # socketserver sets it on the connection: a stalled client cannot hold a thread
    _answered = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: raters' requests are not printed."""

    # --- plumbing ---

    def _send(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", headers={"Location": where, **(headers or {})})

    def _json(self, status: int, value: dict[str, Any]) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _wants_json(self) -> bool:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() == "application/json"

    def _refuse(self, status: int, problem: str) -> None:
        if self._wants_json():
            self._json(status, {"ok": False, "error": problem})
        else:
            self._send(status, error_page(status, problem))

    def _rater(self) -> int | None:
        try:
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        return self.study.rater_of(morsel.value) if morsel else None

    def _body(self) -> bytes | None:
        """The whole request body, or None after answering 400/408/411/413 (and closing the connection).

        The length must be one plain decimal ``Content-Length`` (``str.isdigit``
        also takes ``²``, which ``int`` refuses); a body that stops arriving
        within :attr:`timeout` seconds, or ends before its length, is refused,
        so nothing is ever recorded from part of a body.
        """
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") is not None:
            return self._refuse_body(HTTPStatus.LENGTH_REQUIRED,
                                     "send the body with a Content-Length (no Transfer-Encoding)")
        if not lengths:
            return self._refuse_body(HTTPStatus.LENGTH_REQUIRED, "a body with a Content-Length is required")
        digits = lengths[0].strip()
        if len(lengths) > 1 or not _LENGTH.fullmatch(digits):
            shown = ", ".join(lengths)[:40]
            return self._refuse_body(HTTPStatus.BAD_REQUEST, f"Content-Length {shown!r} is not a number of bytes")
        significant = digits.lstrip("0") or "0"  # int() refuses over 4300 digits: a long number is too large anyway
        length = int(significant) if len(significant) <= len(str(MAX_BODY)) else MAX_BODY + 1
        if length > MAX_BODY:
            return self._refuse_body(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        body, budget = b"", self.timeout or REQUEST_TIMEOUT
        deadline = time.monotonic() + budget
        try:
            while len(body) < length:  # one deadline for the whole body, not one per byte that trickles in
                self.connection.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = self.rfile.read1(length - len(body))
                if not chunk:
                    break
                body += chunk
        except TimeoutError:
            return self._refuse_body(HTTPStatus.REQUEST_TIMEOUT,
                                     f"the body did not arrive within {budget:g} seconds")
        finally:
            self.connection.settimeout(self.timeout)
        if len(body) < length:
            return self._refuse_body(HTTPStatus.BAD_REQUEST,
                                     f"the body ended after {len(body)} of its {length} bytes")
        return body

    def _refuse_body(self, status: int, problem: str) -> None:
        """Answer a request whose body is not read (or not whole); the connection is closed after it."""
        self.close_connection = True
        self._refuse(status, problem)

    def _dispatch(self, routes: dict[str, Callable[..., None]]) -> None:
        try:
            self._route(routes)
        except (ConnectionError, TimeoutError):  # the client went away or stalled mid-answer: no one to answer
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug must not cost the rater an answer or print a traceback
            self.close_connection = True
            _report(self.client_address, exc)
            if not self._answered:
                self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "the server could not handle this request")

    def _route(self, routes: dict[str, Callable[..., None]]) -> None:
        path = urlsplit(self.path).path
        try:
            match = re.fullmatch(r"/image/([A-Za-z0-9]{1,16})/(left|right)", path)
            if match and "image" in routes:
                routes["image"](*match.groups())
            elif path in routes:
                routes[path]()
            else:
                self._refuse(HTTPStatus.NOT_FOUND, f"no page {path}")
        except RatingRejected as exc:
            self._refuse(exc.status, str(exc))
        except InputError as exc:  # the study file became unusable
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))

    # --- routes ---

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        """Pages and images."""
        self._dispatch({"/": self._home, "/instructions": self._instructions, "/rate": self._rate,
                        "/thanks": self._thanks, "/logout": self._logout, "image": self._image})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        """Log in, or answer a pair."""
        self._dispatch({"/login": self._login, "/rate": self._answer})

    def _home(self) -> None:
        if self._rater() is None:
            self._send(HTTPStatus.OK, login_page(self.study))
        else:
            self._redirect("/rate")

    def _login(self) -> None:
        body = self._body()
        if body is None:
            return
        try:
            name = parse_qs(body.decode("utf-8"), strict_parsing=False).get("name", [""])[0]
        except UnicodeDecodeError:
            name = ""
        try:
            rater, token = self.study.login(name)
        except RatingRejected as exc:
            self._send(exc.status, login_page(self.study, exc.problem))
            return
        cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        answered = self.study.progress(rater)[1]
        self._redirect("/rate" if answered else "/instructions", {"Set-Cookie": cookie})

    def _logout(self) -> None:
        self._redirect("/", {"Set-Cookie": f"{COOKIE}=; Path=/; Max-Age=0"})

    def _instructions(self) -> None:
        rater = self._rater()
        if rater is None:
            self._redirect("/")
            return
        self._send(HTTPStatus.OK, instructions_page(self.study, self.study.rater_name(rater)))

    def _rate(self) -> None:
        rater = self._rater()
        if rater is None:
            self._redirect("/")
            return
        shown = self.study.next_pair(rater)
        if shown is None:
            self._redirect("/thanks")
            return
        self._send(HTTPStatus.OK, rate_page(shown.pair_id, shown.position, shown.answered, shown.total))

    def _thanks(self) -> None:
        rater = self._rater()
        if rater is None:
            self._redirect("/")
            return
        total, answered = self.study.progress(rater)
        if answered < total:
            self._redirect("/rate")
            return
        self._send(HTTPStatus.OK, thanks_page(total))

    def _image(self, pair_id: str, side: str) -> None:
        rater = self._rater()
        if rater is None:
            self._refuse(HTTPStatus.UNAUTHORIZED, "log in first")
            return
        self._send(HTTPStatus.OK, self.study.image(rater, pair_id, side), "image/png")

    def _answer(self) -> None:
        rater = self._rater()
        if rater is None:
            self._refuse(HTTPStatus.UNAUTHORIZED, "log in first")
            return
        body = self._body()
        if body is None:
            return
        pair, raw = self._parse_answer(body)
        self.study.record(rater, pair, _score(raw))
        if self._wants_json():
            total, answered = self.study.progress(rater)
            self._json(HTTPStatus.OK, {"ok": True, "answered": answered, "total": total})
        else:
            self._redirect("/rate")

    def _parse_answer(self, body: bytes) -> tuple[str, Any]:
        """(pair id, raw score) of a form or JSON body; a malformed one is refused with 400."""
        try:
            text = body.decode("utf-8")
            if self._wants_json():
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
                pair, raw = value.get("pair"), value.get("score")
            else:
                fields = parse_qs(text, strict_parsing=True, max_num_fields=8)
                if any(len(v) != 1 for v in fields.values()):
                    raise ValueError("a field given twice")
                pair, raw = fields.get("pair", [None])[0], fields.get("score", [None])[0]
        except (UnicodeDecodeError, ValueError) as exc:
            raise RatingRejected("body", f"malformed request body ({exc})", 400) from None
        except RecursionError:  # e.g. [[[[...]]]] 2000 deep
            raise RatingRejected("body", "malformed request body (nested too deeply)", 400) from None
        if not isinstance(pair, str) or not pair:
            raise RatingRejected("pair", "no pair id in the request", 400)
        if raw is None:
            raise RatingRejected("score", "no score in the request", 400)
        return pair, raw


def _report(client: Any, exc: BaseException) -> None:
    """One line on stderr for a request that failed inside the server."""
    who = client[0] if isinstance(client, tuple) and client else client
    print(f"mnd: warning: a request from {who} failed ({type(exc).__name__}: {' '.join(str(exc).split())})"[:500],
          file=sys.stderr, flush=True)


class StudyServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that reports a failed request in one line (a client gone away: silently)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: D102 - socketserver's hook
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (ConnectionError, TimeoutError)):
            _report(client_address, exc)


def make_server(study: Study, host: str = "127.0.0.1", port: int = 8000, *,
                timeout: float = REQUEST_TIMEOUT) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``study`` (not started).

    ``timeout``: seconds a client may stall while sending a request before it
    is answered 408 or dropped.
    """
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    handler = type("StudyHandler", (Handler,), {"study": study, "timeout": timeout})
    try:
        server = StudyServer((host, port), handler)
    except OSError as exc:
        raise InputError(f"{host}:{port}", f"cannot listen there ({exc.strerror or exc})") from None
    except OverflowError:
        raise InputError("--port", f"{port} is not a port number (0 to 65535; 0 picks a free one)") from None
    except (TypeError, ValueError) as exc:  # a NUL in the host name, a label over 63 characters
        raise InputError("--host", f"{host!r} is not a host name or address ({exc})") from None
    return server


def url_of(server: ThreadingHTTPServer, host: str) -> str:
    """The address to open (the machine's name when listening on every interface)."""
    port = server.server_address[1]
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/"


def serve(study: Study, host: str = "127.0.0.1", port: int = 8000, *, out: Any = None) -> int:
    """Serve the study until Ctrl-C (or SIGTERM); prints the URL first. Returns 0."""
    out = out or sys.stdout
    server = make_server(study, host, port)
    print(f"study {study.name}: {study.pair_count()} pairs per rater ({study.args.dataset}, {study.args.setting})",
          file=out)
    print(f"rate at {url_of(server, host)}  (Ctrl-C stops; answered pairs are saved as they come)", file=out,
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this machine on the network can open the "
              "page and rate", file=out, flush=True)
    previous = _stop_on_sigterm()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"stopped; {len(study.ratings())} ratings stored in {study.path}", file=out, flush=True)
    return 0


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the server like Ctrl-C (main thread only); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)
