"""The demo in a real browser: start `lgvq demo` on a run, open it in headless Chromium with a
prompt in the link (`?prompt=...` fills the prompt box and generates), wait until the generated
grid is on the page, and save a screenshot.

    python scripts/check_demo_in_browser.py RUN_OR_PIPELINE_DIR [--out demo.png] [--prompt "..."]

Needs the demo extra (pip install -e ".[demo]"), Chromium (Debian: apt-get install chromium) and
the `websockets` package (it drives Chromium over the DevTools protocol). The tests drive the same
page through Gradio's Python client; this script is the check by eye.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from websockets.sync.client import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"error: the process serving {url} ended (exit {process.returncode})")
        try:
            urllib.request.urlopen(url, timeout=15)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: nothing answered at {url} within {seconds:.0f} s")


class DevTools:
    """A minimal Chrome DevTools protocol session on one page."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def drive(tools: DevTools, port: int, args) -> tuple[int, str]:
    """Open the link with the prompt, wait for the grid, save the screenshot; (images shown, link)."""
    link = f"http://127.0.0.1:{port}/?prompt={urllib.parse.quote(args.prompt)}"
    tools.call("Page.navigate", url=link)
    deadline, shown = time.monotonic() + args.timeout, 0
    while time.monotonic() < deadline and shown < 4:
        time.sleep(1)
        shown = tools.evaluate("document.querySelectorAll('.gallery-item img, button.thumbnail-item img, "
                               "[data-testid=\"gallery\"] img').length") or 0
    time.sleep(1)  # the last image paints
    Path(args.out).write_bytes(base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"]))
    prompt_box = tools.evaluate("document.querySelector('textarea') && document.querySelector('textarea').value")
    print(f"opened {link}: the prompt box reads {prompt_box!r}, {shown} generated images on the page; "
          f"screenshot in {args.out}")
    return shown, link


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a scripts/run_pipeline.sh folder, or a prior run")
    p.add_argument("--out", default="demo.png")
    p.add_argument("--prompt", default="a large red circle above a small blue square")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the grid")
    args = p.parse_args()
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        raise SystemExit("error: no Chromium found (Debian: apt-get install chromium)")
    run = Path(args.run)
    pipeline = (run / "prior" / "model").is_dir() or (run / "tokenizer" / "model").is_dir()
    which = ["--run", str(run)] if pipeline else ["--prior", str(run)]
    port, debug_port = free_port(), free_port()
    profile = tempfile.mkdtemp()
    server_log = open(Path(profile) / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "lgvq", "demo", *which, "--port", str(port)],
                              stdout=server_log, stderr=subprocess.STDOUT)
    chrome = None
    try:
        try:
            wait_for(f"http://127.0.0.1:{port}/", 120, server)
        except SystemExit:
            print((Path(profile) / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}",
                                   "--window-size=1280,1100", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{debug_port}/json/version", 30)
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json"))
        page_ws = next(page for page in pages if page["type"] == "page")["webSocketDebuggerUrl"]
        with connect(page_ws, max_size=None) as ws:
            shown, link = drive(DevTools(ws), port, args)
        return 0 if shown >= 4 else 1
    finally:
        for process in (chrome, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
