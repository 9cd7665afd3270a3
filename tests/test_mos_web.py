"""The rating page in a real browser: two raters at once, mouse and keyboard, a killed server, bad requests.

Needs Playwright for Python and a Chromium (``MND_CHROMIUM``, else ``chromium``
on the PATH); without them the test is skipped, unless ``CI`` is set, where it
fails. Screenshots of the instruction and rating pages go to
``MND_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import csv
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mnd import study as mos_study
from mnd.study import server as mos_server
from mnd.cli.main import main as mnd_main
from tests.test_mos_study import (
    CONTROL_ANSWERS,
    DATASET,
    EXPECTED,
    EXPECTED_AVERAGE,
    INTENDED,
    SETTING,
    content_of,
    make_results,
    raw_score,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY = "web"


def _chromium() -> str | None:
    for candidate in (os.environ.get("MND_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _need(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


CHROMIUM = _chromium()
try:
    from playwright.sync_api import BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None


class Server:
    """``mnd mos serve`` in a subprocess, on a loopback port."""

    def __init__(self, results: Path, port: int = 0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnd.cli", "mos", "serve", str(results), "--study", STUDY, "--dataset", DATASET,
             "--setting", SETTING, "--controls", "1", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        for line in self.proc.stdout:  # a thread, so a line never waits in a buffer that select cannot see
            self.lines.append(line)

    def _wait_for_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                if match := re.search(r"rate at (http://\S+)", line):
                    return match.group(1)
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"the server did not start: {''.join(self.lines)}")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(20)
        self.reader.join(10)
        return code, "".join(self.lines)


def _login(page: Page, url: str, name: str) -> None:
    page.goto(url)
    page.fill("#name", name)
    with page.expect_navigation():
        page.click("#start")


def _shown(page: Page, url: str, results: Path) -> tuple[str, tuple[str, str], tuple[str, str]]:
    """(pair id, left content, right content) of the pair on the page, from the bytes the browser got."""
    pair = page.get_attribute(".pair", "data-pair")
    left, right = (content_of(page.request.get(url + f"image/{pair}/{side}").body(), results)
                   for side in ("left", "right"))
    return pair, left, right


def _answer(page: Page, url: str, results: Path, name: str, way: str) -> dict[str, Any]:
    """Answer the pair on the page as ``name`` means it, by mouse or by keyboard; returns what was shown and sent."""
    pair, left, right = _shown(page, url, results)
    if left[1] == "clean":
        score = CONTROL_ANSWERS[name]
    else:
        versus = right[1] if left[1] == "mnd" else left[1]
        score = raw_score(INTENDED[name][(left[0], versus)], left)
    with page.expect_navigation():
        if way == "mouse":
            page.click(f"button.score[value='{score}']")
        elif way == "digits":
            page.keyboard.press(str(4 - score))  # key 1 = +3 ... key 7 = -3
        else:  # arrows from the middle rule (0), then Enter
            for _ in range(abs(score)):
                page.keyboard.press("ArrowLeft" if score > 0 else "ArrowRight")
            page.keyboard.press("Enter")
    return {"pair": pair, "left": left, "right": right, "score": score}


def _stored(results: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["rater"], r["pair_id"]): r for r in mos_study.open_study(results, STUDY).ratings()}


def _order(results: Path, name: str) -> list[str]:
    with sqlite3.connect(mos_study.study_path(results, STUDY)) as db:
        return [r[0] for r in db.execute("SELECT a.pair_id FROM assignments a JOIN raters USING (rater_id) "
                                         "WHERE name = ? ORDER BY position", (name,))]


def _post(context: BrowserContext, url: str, body: str, kind: str = "application/json") -> int:
    return context.request.post(url + "rate", data=body, headers={"Content-Type": kind}).status


def _screenshot(page: Page, name: str, tmp: Path) -> None:
    target = Path(os.environ.get("MND_SCREENSHOTS") or tmp)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=True)


def test_two_raters_in_a_browser_survive_a_killed_server(tmp_path: Path) -> None:
    if sync_playwright is None:
        _need("Playwright for Python is not installed (pip install '.[test]')")
    if CHROMIUM is None:
        _need("no Chromium found (set MND_CHROMIUM or install chromium)")
    results = make_results(tmp_path / "results")
    server = Server(results)
    url, seen = server.url, {"ann": [], "bob": []}
    ways = {"ann": ["mouse"], "bob": ["digits", "arrows"]}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            contexts = {name: browser.new_context(viewport={"width": 900, "height": 700}) for name in seen}
            pages = {name: ctx.new_page() for name, ctx in contexts.items()}
            for name, page in pages.items():
                _login(page, url, name)
                assert page.url.endswith("/instructions") and "ITU-R BT.500" in page.content()
                if name == "ann":
                    _screenshot(page, "instructions.png", tmp_path)
                with page.expect_navigation():
                    page.click("#begin")
            _screenshot(pages["ann"], "rating.png", tmp_path)
            assert "Left image is much better" in pages["ann"].inner_text(".scale")

            def rate(count: int) -> None:  # the two raters take turns, pair by pair
                for _ in range(count):
                    for name, page in pages.items():
                        way = ways[name][len(seen[name]) % len(ways[name])]
                        seen[name].append(_answer(page, url, results, name, way))

            rate(3)
            server.kill()  # SIGKILL: no chance to flush anything
            stored = _stored(results)
            assert len(stored) == 6
            for name, answers in seen.items():
                for a in answers:
                    row = stored[(name, a["pair"])]
                    assert row["score"] == a["score"]
                    assert (row["image"], row["left"], row["right"]) == (a["left"][0], a["left"][1], a["right"][1])

            server = Server(results, server.port)  # same address: the open pages go on
            pages["ann"].reload()
            assert pages["ann"].get_attribute("#progress", "value") == "3"
            rate(3)
            for page in pages.values():
                assert page.url.endswith("/thanks") and "Thank you" in page.content()

            # the order and the sides each rater saw are theirs, and recorded
            for name, answers in seen.items():
                assert [a["pair"] for a in answers] == _order(results, name)
            views = {n: [(a["pair"], a["left"][1] == "mnd") for a in answers] for n, answers in seen.items()}
            assert views["ann"] != views["bob"]
            assert {a["left"][1] for a in seen["ann"] + seen["bob"]} > {"mnd"}  # MND was on the right sometimes

            # refused requests: a 4xx answer and no row
            ctx, done = contexts["ann"], seen["ann"][0]["pair"]
            before = len(_stored(results))
            assert _post(ctx, url, json.dumps({"pair": done, "score": 4})) == 400
            assert _post(ctx, url, json.dumps({"pair": done, "score": "-3.5"})) == 400
            assert _post(ctx, url, json.dumps({"pair": "P999", "score": 1})) == 404
            assert _post(ctx, url, json.dumps({"pair": done, "score": 1})) == 409
            assert _post(ctx, url, "{not json") == 400
            assert _post(ctx, url, json.dumps([done, 1])) == 400
            assert _post(ctx, url, f"pair={done}&score=abc", "application/x-www-form-urlencoded") == 400
            assert _post(ctx, url, f"pair={done}&score=1", "application/x-www-form-urlencoded") == 409
            anonymous = pw.request.new_context()
            assert anonymous.post(url + "rate", data=json.dumps({"pair": done, "score": 1}),
                                  headers={"Content-Type": "application/json"}).status == 401
            assert anonymous.get(url + f"image/{done}/left").status == 401
            assert ctx.request.get(url + "image/..%2Fresults.csv/left").status == 404
            assert ctx.request.get(url + f"image/{done}/middle").status == 404
            assert len(_stored(results)) == before == 12
            browser.close()
    finally:
        code, output = server.interrupt()
    assert code == 0 and "stopped; 12 ratings stored" in output

    out = tmp_path / "tables.csv"
    assert mnd_main(["mos", "tables", str(results), "--study", STUDY, "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    means = {(r["image"], r["versus"]): float(r["mean"]) for r in rows if r["image_id"] != "Average"}
    assert means == pytest.approx({k: v[0] for k, v in EXPECTED.items()})
    averages = {r["versus"]: float(r["mean"]) for r in rows if r["image_id"] == "Average"}
    assert averages == pytest.approx(EXPECTED_AVERAGE)


# --- hostile requests over a raw socket: a 4xx answer, no traceback, no rating --------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Any:
    """A study served in this process on a loopback port (0.5 s request timeout), and a logged-in rater's cookie."""
    results = make_results(tmp_path / "results")
    study = mos_study.create_study(results, STUDY, DATASET, SETTING, controls=1)
    _, token = study.login("eve")
    server = mos_server.make_server(study, "127.0.0.1", 0, timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield study, server.server_address[1], f"Cookie: {mos_server.COOKIE}={token}\r\n".encode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _exchange(port: int, data: bytes, *, half_close: bool = False, wait: float = 10) -> bytes:
    """Send raw bytes, optionally close our sending side, and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def _status(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, f"no HTTP answer: {answer[:200]!r}"
    return int(match.group(1))


def _rate_request(cookie: bytes, body: bytes, length: bytes | None = None, kind: bytes = b"application/json") -> bytes:
    head = b"POST /rate HTTP/1.1\r\nHost: test\r\nContent-Type: " + kind + b"\r\n" + cookie
    if length is not None:
        head += b"Content-Length: " + length + b"\r\n"
    return head + b"\r\n" + body


def test_a_whole_rating_over_a_raw_socket_is_recorded(live: Any, capfd: pytest.CaptureFixture[str]) -> None:
    study, port, cookie = live
    body = json.dumps({"pair": "P001", "score": 2}).encode()
    answer = _exchange(port, _rate_request(cookie, body, str(len(body)).encode()))
    assert _status(answer) == 200 and b'"ok": true' in answer
    assert [(r["rater"], r["pair_id"], r["score"]) for r in study.ratings()] == [("eve", "P001", 2)]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("length", "status"), [
    ("\u00b2".encode("latin-1"), 400),  # str.isdigit() says yes, int() says no
    ("\u0663".encode(), 400),  # an Arabic-Indic digit, sent as UTF-8
    (b"-28", 400), (b"+28", 400), (b"0x1c", 400), (b"28.0", 400), (b"", 400),
    (b"28\r\nContent-Length: 29", 400),  # two lengths
    (None, 411),
    (b"5000", 413), (b"9" * 40, 413),
    (b"9" * 5000, 413),  # int() refuses over 4300 digits
])
def test_a_malformed_content_length_is_answered_4xx(live: Any, capfd: pytest.CaptureFixture[str],
                                                    length: bytes | None, status: int) -> None:
    study, port, cookie = live
    body = json.dumps({"pair": "P001", "score": 2}).encode()  # 28 bytes
    assert _status(_exchange(port, _rate_request(cookie, body, length), half_close=True)) == status
    assert study.ratings() == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_chunked_body_is_refused(live: Any, capfd: pytest.CaptureFixture[str]) -> None:
    study, port, cookie = live
    body = json.dumps({"pair": "P001", "score": 2}).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    request = _rate_request(cookie + b"Transfer-Encoding: chunked\r\n", chunked)
    assert _status(_exchange(port, request, half_close=True)) == 411
    assert study.ratings() == [] and "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("body", [b"[" * 2000 + b"]" * 2000, b'{"score": ' + b"[" * 2000 + b"]" * 2000 + b"}"])
def test_deeply_nested_json_is_answered_400(live: Any, capfd: pytest.CaptureFixture[str], body: bytes) -> None:
    study, port, cookie = live
    answer = _exchange(port, _rate_request(cookie, body, str(len(body)).encode()))
    assert _status(answer) == 400 and b"nested too deeply" in answer
    assert study.ratings() == [] and "Traceback" not in capfd.readouterr().err


def test_a_body_shorter_than_its_length_is_never_recorded(live: Any, capfd: pytest.CaptureFixture[str]) -> None:
    study, port, cookie = live
    body = json.dumps({"pair": "P001", "score": 2}).encode()
    short = _rate_request(cookie, body, str(len(body) + 10).encode())
    started = time.monotonic()
    stalled = _exchange(port, short, wait=10)  # the client waits for more of its own body: the server gives up
    assert _status(stalled) == 408 and time.monotonic() - started < 5
    closed = _exchange(port, short, half_close=True)  # the client says it has sent everything
    assert _status(closed) == 400 and b"ended after 28 of its 38 bytes" in closed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # the whole body, a byte at a time
        sock.sendall(_rate_request(cookie, b"", str(len(body)).encode()))
        started = time.monotonic()
        for byte in body:  # one byte every 0.1 s until the server answers
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(bytes([byte]))
        trickled = sock.recv(65536)
    assert _status(trickled) == 408 and time.monotonic() - started < 2.5  # 0.5 s for the body, not per byte
    form = _rate_request(cookie, b"pair=P001&score=2", b"30", b"application/x-www-form-urlencoded")
    assert _status(_exchange(port, form, half_close=True)) == 400
    assert study.ratings() == [] and "Traceback" not in capfd.readouterr().err


def test_a_stalled_request_line_or_login_is_dropped_without_a_traceback(
    live: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    study, port, _ = live
    assert _exchange(port, b"GET / HT") == b""  # never finished: the connection is closed, nothing else
    login = b"POST /login HTTP/1.0\r\nContent-Length: 20\r\n\r\nname=mallory"
    assert _status(_exchange(port, login)) == 408
    with sqlite3.connect(study.path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM raters")] == ["eve"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_failing_request_gets_500_and_one_line_on_stderr(live: Any, capfd: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    study, port, cookie = live

    def broken(*args: object) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mos_study.Study, "image", broken)
    answer = _exchange(port, b"GET /image/P001/left HTTP/1.0\r\n" + cookie + b"\r\n")
    assert _status(answer) == 500
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "mnd: warning: a request from 127.0.0.1 failed (RuntimeError: disk on fire)" in err


@pytest.mark.parametrize("host", ["a\x00b", "\u00e4" * 64, "x" * 300])
def test_a_host_that_cannot_be_listened_on_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       host: str) -> None:
    results = make_results(tmp_path / "results")
    argv = ["mos", "serve", str(results), "--study", STUDY, "--dataset", DATASET, "--setting", SETTING,
            "--host", host, "--port", "0"]
    assert mnd_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnd: error: ") and err.count("\n") == 1 and "Traceback" not in err
