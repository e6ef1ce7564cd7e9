"""Loads HTML pages in headless Chromium (Debian's `chromium`) over the
DevTools protocol on a pipe (standard library only) and prints, as JSON,
per page: every console message, uncaught exception and browser log entry
of level warning or error, every request that leaves the machine, every chart (`figure.chart`: its data-points,
rendered size and count of drawn marks), every image (decoded or not), and
the section ids and texts. Writes a full-page PNG screenshot of each page.

Per chart it also measures the layout as drawn (client rectangles in the
DOM): pairs of SVG texts whose boxes overlap (`text_overlaps`), texts drawn
over the data of a line chart (`text_over_data`: the boxes crossed by a
coloured polyline's segments or covering a marker; a legend inside the plot
shows up here), legends (`.legend`) over that data (`legend_over_data`),
the tick labels centred under the x axis (`x_ticks`), the legend's
entries (`legend`) and how many coloured polylines it took for that data
(`data_lines`: 0 where the two "over the data" lists are empty because no
data line was found, not because nothing covers one).

Usage: browser_check.py OUT_DIR NAME=PAGE.html [NAME=PAGE.html ...]
Results are keyed by NAME; screenshots go to OUT_DIR/NAME.png. Chromium: $GEOSSL_CHROMIUM or
`chromium` on PATH.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

INSPECT = r"""
(() => {
  // Boxes overlap when they share more than a pixel each way (touching
  // glyph boxes of neighbouring labels are fine).
  const overlap = (a, b) =>
    Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
    Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const inside = (r, x, y) => x > r.left + 0.5 && x < r.right - 0.5 && y > r.top + 0.5 && y < r.bottom - 0.5;
  // Whether segment (x0,y0)-(x1,y1) enters box r (sampled every half pixel).
  const crosses = (r, x0, y0, x1, y1) => {
    const n = Math.max(1, Math.ceil(2 * Math.hypot(x1 - x0, y1 - y0)));
    for (let i = 0; i <= n; i++) {
      if (inside(r, x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n)) return true;
    }
    return false;
  };
  // The data of a line chart: coloured polylines (axes and ticks are black)
  // and the markers; none in charts without coloured polylines.
  const dataOf = svg => {
    const lines = [...svg.querySelectorAll('polyline')].filter(p => {
      const stroke = (p.getAttribute('stroke') || '').toUpperCase();
      return stroke !== '#000000' && stroke !== 'NONE' && p.points.length >= 2;
    }).map(p => {
      const m = p.getScreenCTM();
      return [...p.points].map(q => new DOMPoint(q.x, q.y).matrixTransform(m));
    });
    const markers = lines.length ? [...svg.querySelectorAll('circle')].map(c => c.getBoundingClientRect()) : [];
    return {lines, markers};
  };
  const over = (r, data) =>
    data.markers.some(m => overlap(r, m)) ||
    data.lines.some(pts => pts.some((p, i) => i > 0 && crosses(r, pts[i - 1].x, pts[i - 1].y, p.x, p.y)));
  const charts = [...document.querySelectorAll('figure.chart')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = svg ? svg.querySelectorAll('polyline, circle, rect, polygon, path').length : 0;
    const texts = svg ? [...svg.querySelectorAll('text')]
      .map(t => ({text: t.textContent.trim(), anchor: t.getAttribute('text-anchor'), box: t.getBoundingClientRect()}))
      .filter(t => t.text !== '') : [];
    const text_overlaps = [];
    texts.forEach((a, i) => texts.slice(i + 1).forEach(b => {
      if (overlap(a.box, b.box)) text_overlaps.push([a.text, b.text]);
    }));
    const data = svg ? dataOf(svg) : {lines: [], markers: []};
    const text_over_data = texts.filter(t => over(t.box, data)).map(t => t.text);
    const legends = [...f.querySelectorAll('.legend')];
    const legend_over_data = legends.filter(l => over(l.getBoundingClientRect(), data)).map(l => l.textContent);
    const x_ticks = texts.filter(t => t.anchor === 'middle' && /^-?[0-9.]+$/.test(t.text)).map(t => t.text);
    const legend = [...f.querySelectorAll('.legend li')].map(l => l.textContent);
    return {id: f.id, points: Number(f.dataset.points), width: box.width, height: box.height, marks,
            texts: texts.length, text_overlaps, text_over_data, legend_over_data, x_ticks, legend,
            data_lines: data.lines.length};
  });
  const images = [...document.images].map(i => ({alt: i.alt, decoded: i.complete && i.naturalWidth > 0}));
  const sections = [...document.querySelectorAll('section')].map(s => s.id);
  const section_text = Object.fromEntries([...document.querySelectorAll('section')].map(s => [s.id, s.innerText]));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  return {title: document.title, charts, images, sections, section_text, links};
})()
"""


class Browser:
    def __init__(self, chromium: str, profile: str):
        # Our end of the pipes: Chromium reads commands on fd 3 and writes
        # replies and events on fd 4 (--remote-debugging-pipe).
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        args = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def wire():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            args,
            preexec_fn=wire,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline: float):
        while b"\0" not in self.buffer:
            if time.time() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params=None, session=None, timeout=60.0):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout=60.0):
        deadline = time.time() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method and e.get("sessionId") == session:
                return e
            self.events.append(e)

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def problems(events, session):
    """Console errors/warnings, exceptions and log entries of one page."""
    found = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            found.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                found.append(f"network request: {url}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            found.append(f"log.{entry['level']}: {entry.get('text')} {entry.get('url', '')}")
    return found


def check(browser: Browser, page: str, screenshot: str):
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    browser.send("Page.navigate", {"url": "file://" + os.path.abspath(page)}, session=session)
    browser.wait_for("Page.loadEventFired", session)
    result = browser.send(
        "Runtime.evaluate", {"expression": INSPECT, "returnByValue": True}, session=session
    )["result"]["value"]
    height = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": min(int(height) + 1, 16000), "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(shot))
    # Late messages (after load) are collected by this last round trip.
    browser.send("Runtime.evaluate", {"expression": "1"}, session=session)
    result["problems"] = problems(browser.events, session)
    result["screenshot"] = screenshot
    result["page_height"] = height
    browser.send("Target.closeTarget", {"targetId": target})
    return result


def main() -> None:
    out_dir, pages = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    chromium = os.environ.get("GEOSSL_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        sys.exit("chromium not found: scripts/setup.sh installs Debian's chromium for the tests")
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(chromium, profile)
        try:
            results = {}
            for arg in pages:
                name, page = arg.split("=", 1)
                results[name] = check(browser, page, os.path.join(out_dir, f"{name}.png"))
        finally:
            browser.close()
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
