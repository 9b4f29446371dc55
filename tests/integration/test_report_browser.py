"""The report in a real headless browser (Debian ``chromium``), driven over the DevTools protocol.

Checks that the page loads from a ``file://`` URL with no console error, no uncaught exception
and no request leaving the file (no CDN), that every figure drew (one ``.js-plotly-plot`` with
an ``svg.main-svg`` per figure the page declares), that the charts answer real mouse events
(hover label, legend toggle, drag to zoom), and that hostile strings in the data never run. A full-page screenshot is kept in the
pytest tmp dir and copied to ``artifacts/report-screenshot.png``.

Chromium missing is a failure, not a skip: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from offline.report import build_html, write_report
from offline.result import FitResult
from tests.report_fits import HOSTILE, hostile_fit_result, mall_fit_result, refit_result

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--remote-allow-origins=*", "--hide-scrollbars",
)  # fmt: skip
TIMEOUT_S = 60.0

# Counts the figures that drew, reads what the page declares, and checks they are live plotly graphs.
PROBE = """JSON.stringify({
  declared: Number(document.querySelector('meta[name="segstream-figures"]').content),
  divs: document.querySelectorAll('.plotly-graph-div').length,
  drawn: [...document.querySelectorAll('.js-plotly-plot')]
           .filter(d => d.querySelector('svg.main-svg')).length,
  interactive: [...document.querySelectorAll('.js-plotly-plot')]
           .filter(d => d._fullLayout && d.querySelector('.modebar')).length,
  legends: document.querySelectorAll('.js-plotly-plot g.legend').length,
  plotly: typeof Plotly === 'object' ? Plotly.version : null,
  scripts_with_src: document.querySelectorAll('script[src]').length,
  height: document.documentElement.scrollHeight
})"""


def chromium_path() -> str:
    """The chromium binary, or a failed test saying how to install it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed: the report's browser test needs Debian's chromium "
            "(apt-get update && apt-get install -y chromium)",
            pytrace=False,
        )
    return path


class DevTools:
    """A minimal DevTools-protocol client over one page target; events are kept in order."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT_S, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method`` and return its result, recording every event that arrives meanwhile."""
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, deadline: float) -> dict[str, Any]:
        """Wait for the first event named ``method`` (already received or coming)."""
        while time.monotonic() < deadline:
            for e in self.events:
                if e["method"] == method:
                    return e
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {method} within {TIMEOUT_S} s")

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A fresh headless chromium (own profile dir) and a DevTools session on its page."""
    exe = chromium_path()
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        port_file = profile / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start; see {tmp_path / 'chromium.log'}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def write_page(result: FitResult, path: Path) -> Path:
    """Only the HTML page (the PNG exports are covered by the Mall test and the unit tests)."""
    path.write_text(build_html(result), encoding="utf-8")
    return path


def load_and_probe(tools: DevTools, page: Path) -> dict[str, Any]:
    """Open ``page`` and wait until every declared figure drew (or the deadline passes)."""
    for domain in ("Runtime", "Log", "Page", "Network"):
        tools.send(f"{domain}.enable")
    tools.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
               deviceScaleFactor=1, mobile=False)  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    tools.send("Page.navigate", url=page.resolve().as_uri())
    tools.wait_event("Page.loadEventFired", deadline)
    probe = json.loads(tools.evaluate(PROBE))
    while probe["drawn"] < probe["declared"] and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a condition with a deadline, not a fixed wait
        probe = json.loads(tools.evaluate(PROBE))
    return probe


def console_errors(tools: DevTools) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors seen so far."""
    out = []
    for e in tools.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a)) for a in p.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def screenshot(tools: DevTools, height: int, path: Path) -> None:
    """A full-page PNG screenshot."""
    tools.send("Emulation.setDeviceMetricsOverride", width=1280, height=min(height, 16000),
               deviceScaleFactor=1, mobile=False)  # fmt: skip
    shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def assert_page_is_healthy(tools: DevTools, probe: dict[str, Any]) -> None:
    assert probe["plotly"], "plotly.js did not load"
    assert probe["declared"] == probe["divs"] > 0
    assert probe["drawn"] == probe["declared"], probe
    assert probe["interactive"] == probe["declared"], probe
    assert probe["scripts_with_src"] == 0
    assert console_errors(tools) == []
    urls = [e["params"]["request"]["url"] for e in tools.events
            if e["method"] == "Network.requestWillBeSent"]  # fmt: skip
    assert urls and all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    dialogs = [e for e in tools.events if e["method"] == "Page.javascriptDialogOpening"]
    assert dialogs == []


def test_mall_report_draws_every_chart_offline(browser: DevTools, tmp_path: Path) -> None:
    result = mall_fit_result()
    assert len(result.model.segments) == 5
    page = write_report(result, tmp_path / "mall")
    probe = load_and_probe(browser, page)
    shot = tmp_path / "report-screenshot.png"
    screenshot(browser, probe["height"], shot)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    shutil.copy(shot, ROOT / "artifacts" / "report-screenshot.png")
    assert_page_is_healthy(browser, probe)
    assert probe["declared"] == 11
    assert probe["legends"] >= 2  # the segment scatter plots carry toggleable legends
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def center(tools: DevTools, selector: str) -> tuple[float, float]:
    """Viewport coordinates of the centre of the first element matching ``selector``."""
    js = (
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    x, y = tools.evaluate(js)
    return float(x), float(y)


def mouse(tools: DevTools, kind: str, x: float, y: float) -> None:
    """A real mouse event (``mouseMoved``, ``mousePressed``, ``mouseReleased``)."""
    button = "none" if kind == "mouseMoved" else "left"
    tools.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, clickCount=1)


def wait_true(tools: DevTools, expression: str) -> bool:
    """Poll a JS condition until it holds or the deadline passes."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if tools.evaluate(expression) is True:
            return True
        time.sleep(0.05)
    return False


def test_charts_answer_hover_legend_clicks_and_zoom(browser: DevTools, tmp_path: Path) -> None:
    page = write_page(mall_fit_result(), tmp_path / "mall.html")
    probe = load_and_probe(browser, page)
    assert probe["drawn"] == probe["declared"]
    gd = "document.getElementById('fig-scatter')"
    # hover: move the mouse onto a point, a hover label appears with the segment name
    mouse(browser, "mouseMoved", *center(browser, "#fig-scatter .scatterlayer .trace path.point"))
    assert wait_true(browser, f"!!{gd}.querySelector('.hoverlayer .hovertext')")
    label = browser.evaluate(f"{gd}.querySelector('.hoverlayer .hovertext').textContent")
    assert any(s.name in label for s in mall_fit_result().model.segments), label
    # legend toggle: clicking the first legend entry hides that segment
    x, y = center(browser, "#fig-scatter g.legend g.traces")
    mouse(browser, "mousePressed", x, y)
    mouse(browser, "mouseReleased", x, y)
    assert wait_true(browser, f"{gd}._fullData[0].visible === 'legendonly'")
    # zoom: a drag across the plot area narrows the x range
    before = browser.evaluate(f"{gd}._fullLayout.xaxis.range.slice()")
    x0, y0 = center(browser, "#fig-scatter .nsewdrag")
    mouse(browser, "mousePressed", x0 - 120, y0 - 80)
    for step in range(1, 6):
        mouse(browser, "mouseMoved", x0 - 120 + 40 * step, y0 - 80 + 30 * step)
    mouse(browser, "mouseReleased", x0 + 80, y0 + 70)
    assert wait_true(
        browser,
        f"(() => {{ const r = {gd}._fullLayout.xaxis.range;"
        f" return r[1] - r[0] < {before[1] - before[0]} * 0.9; }})()",
    )
    assert console_errors(browser) == []


def test_hostile_strings_are_shown_not_run(browser: DevTools, tmp_path: Path) -> None:
    page = write_page(hostile_fit_result(), tmp_path / "hostile.html")
    probe = load_and_probe(browser, page)
    assert_page_is_healthy(browser, probe)  # includes: no alert() dialog opened
    text = browser.evaluate("document.body.innerText")
    assert HOSTILE in text  # rendered as text in the tables and cards
    svg_text = browser.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot svg text')].map(t => t.textContent).join('|')"
    )
    assert HOSTILE in svg_text  # and as text inside the plotly charts
    # no script element came from the data: plotly config + plotly.js + one per figure
    assert browser.evaluate("document.scripts.length") == 2 + probe["declared"]


def test_refit_report_draws_the_transition_matrix(browser: DevTools, tmp_path: Path) -> None:
    page = write_page(refit_result(), tmp_path / "refit.html")
    probe = load_and_probe(browser, page)
    assert_page_is_healthy(browser, probe)
    drawn = browser.evaluate(
        "!!document.querySelector('#fig-transition.js-plotly-plot svg.main-svg')"
    )
    assert drawn is True
