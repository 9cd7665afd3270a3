"""The rater's pages of the rating study's web server (section IV-B-5, TABLE V): plain HTML, no library.

``/`` log in with a name or code; ``/instructions`` the viewing conditions
and the scale, shown before the first pair; ``/rate`` one pair side by side
with TABLE V's seven rules, a progress bar and keyboard shortcuts;
``/thanks`` at the end. :mod:`mnd.study.server` answers with them.
"""

from __future__ import annotations

import html

from mnd.study.protocol import SCALE
from mnd.study.store import Study

KEYS = "1234567"

STYLE = """
body{font-family:sans-serif;background:#808080;color:#111;margin:0;padding:1em}
main{max-width:70em;margin:auto}
.box{background:#9a9a9a;padding:1em;border-radius:4px}
.pair{display:flex;justify-content:center;gap:2em;margin:1em 0}
.pair figure{margin:0;text-align:center}
.pair img{image-rendering:pixelated;display:block;background:#808080}
.scale{display:grid;grid-template-columns:repeat(7,1fr);gap:.4em}
.scale button{font-size:.9em;padding:.6em .4em;border:2px solid #444;background:#ddd;cursor:pointer}
.scale button.selected{border-color:#000;background:#fff;outline:3px solid #1a4fd6}
progress{width:100%;height:1.2em}
kbd{border:1px solid #444;border-radius:3px;padding:0 .3em;background:#eee}
.error{background:#fdd;padding:1em}
"""

RATE_SCRIPT = """
const form = document.getElementById('rating');
const buttons = Array.from(form.querySelectorAll('button.score'));
let selected = Math.floor(buttons.length / 2), sent = false;
function mark() { buttons.forEach((b, i) => b.classList.toggle('selected', i === selected)); }
form.addEventListener('submit', e => { if (sent) { e.preventDefault(); } sent = true; });
document.addEventListener('keydown', e => {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const k = '1234567'.indexOf(e.key);
  if (e.key.length === 1 && k >= 0) { e.preventDefault(); buttons[k].click(); }
  else if (e.key === 'ArrowLeft') { e.preventDefault(); selected = Math.max(0, selected - 1); mark(); }
  else if (e.key === 'ArrowRight') {
    e.preventDefault(); selected = Math.min(buttons.length - 1, selected + 1); mark();
  }
  else if (e.key === 'Enter') { e.preventDefault(); buttons[selected].click(); }
});
mark();
"""

KEYBOARD_HELP = (
    "<p>Keyboard: <kbd>1</kbd> to <kbd>7</kbd> pick a rule directly (1 = left image is much better, "
    "7 = right image is much better); <kbd>&larr;</kbd> and <kbd>&rarr;</kbd> move the highlighted rule, "
    "<kbd>Enter</kbd> picks it. Or click a rule.</p>"
)


def _page(title: str, body: str, script: str = "") -> bytes:
    tail = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style></head>"
            f"<body><main>{body}</main>{tail}</body></html>").encode()


def scale_list() -> str:
    """TABLE V as an HTML list: each rule, its key and its score."""
    items = "".join(f"<li><kbd>{KEYS[k]}</kbd> {html.escape(rule)} ({score:+d})</li>".replace("+0", "0")
                    for k, (rule, score) in enumerate(SCALE.items()))
    return f"<ol class='rules' style='list-style:none'>{items}</ol>"


def login_page(study: Study, problem: str = "") -> bytes:
    """The first page: a name or code."""
    error = f"<p class='error'>{html.escape(problem)}</p>" if problem else ""
    return _page("Image quality test", (
        "<h1>Image quality test</h1><div class='box'>"
        f"<p>You will compare {study.pair_count()} pairs of images. Enter your name or the code you were given. "
        "Entering the same name again later resumes where you stopped.</p>"
        f"{error}<form method='post' action='/login'><label>Name or code "
        "<input name='name' id='name' maxlength='64' autofocus required></label> "
        "<button type='submit' id='start'>Continue</button></form></div>"))


def instructions_page(study: Study, name: str) -> bytes:
    """What the rater does, under which viewing conditions, and the scale."""
    return _page("Instructions", (
        f"<h1>Instructions</h1><div class='box'><p>Welcome, {html.escape(name)}.</p>"
        "<p>Each screen shows two versions of the same photo side by side. Compare their quality and pick the "
        "rule that fits best. The order of the pairs and which version is on which side are random; some pairs "
        "may look alike, which is fine: say so with &ldquo;Two images are same quality&rdquo;.</p>"
        "<h2>Viewing conditions</h2><p>The paper's test follows ITU-R BT.500-11 and shows the two images side by "
        "side in random order on the screen; it gives no further detail. As that recommendation asks:</p>"
        "<ul><li>Sit in a quiet room with dim, even lighting; no lamp or window should reflect on the screen.</li>"
        "<li>Keep the browser zoom at 100% and do not change the screen's brightness or contrast during the test; "
        "images are shown pixel for pixel, never rescaled.</li>"
        "<li>Sit straight in front of the screen and keep the same viewing distance throughout.</li>"
        "<li>Take a break when you are tired: a session should not last more than about half an hour. You can "
        "close the page at any time and log in again with the same name to go on.</li>"
        "<li>There is no time limit per pair, but there are no right answers either: give your own judgement.</li>"
        "</ul><h2>The scale (TABLE V)</h2>" + scale_list() + KEYBOARD_HELP +
        f"<form method='get' action='/rate'><button type='submit' id='begin' autofocus>Begin the test "
        f"({study.pair_count()} pairs)</button></form></div>"))


def rate_page(pair_id: str, position: int, answered: int, total: int) -> bytes:
    """One pair side by side, TABLE V's rules as buttons, and the progress."""
    pid = html.escape(pair_id)
    buttons = "".join(
        f"<button type='submit' class='score' name='score' value='{score}' data-key='{KEYS[k]}' "
        f"title='key {KEYS[k]}'><kbd>{KEYS[k]}</kbd> {html.escape(rule)}</button>"
        for k, (rule, score) in enumerate(SCALE.items()))
    return _page(f"Pair {answered + 1} of {total}", (
        f"<p><progress id='progress' value='{answered}' max='{total}'></progress><br>"
        f"Pair {answered + 1} of {total} ({answered} answered)</p>"
        f"<div class='pair' data-pair='{pid}'>"
        f"<figure><img id='left' src='/image/{pid}/left' alt='left image'><figcaption>Left</figcaption></figure>"
        f"<figure><img id='right' src='/image/{pid}/right' alt='right image'><figcaption>Right</figcaption></figure>"
        f"</div><form id='rating' method='post' action='/rate'><input type='hidden' name='pair' value='{pid}'>"
        f"<div class='scale'>{buttons}</div></form>{KEYBOARD_HELP}"), RATE_SCRIPT)


def thanks_page(total: int) -> bytes:
    """The end."""
    return _page("Thank you", f"<h1>Thank you</h1><div class='box'><p>You rated all {total} pairs. "
                 "Your answers are saved; you can close this page.</p></div>")


def error_page(status: int, problem: str) -> bytes:
    """A short HTML answer to a refused request."""
    return _page("Not accepted", f"<h1>{status}</h1><p class='error'>{html.escape(problem)}</p>"
                 "<p><a href='/rate'>Back to the test</a></p>")
