"""The demo page under load: N concurrent clients, each sending R requests, over loopback.

    python benchmarks/demo_load.py --run runs/pipeline --clients 32 --requests 5

Starts `lgvq demo` in its own process (its queue and concurrency limit as a user gets them),
then each client (a thread with its own gradio_client) alternates text to image (--images per
request) and captioning of a generated image where the run has a captioner. Reports the requests'
latency (p50 / p95 / max, seconds, queueing included), errors, hung clients, the wall time and the
server's peak memory (its VmHWM), and writes them as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run: str, port: int, concurrency: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lgvq", "demo", "--run", run, "--port", str(port)]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the demo stopped: {server.stderr.read()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(1)
    server.kill()
    raise SystemExit("the demo did not start within 5 minutes")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a scripts/run_pipeline.sh output folder with a text prior")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=5, help="requests per client")
    p.add_argument("--images", type=int, default=4, help="images per text-to-image request")
    p.add_argument("--concurrency", type=int, help="the demo's --concurrency (default: its own)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a client counts as hung")
    p.add_argument("--out", default="demo_load.json")
    args = p.parse_args()
    import gradio_client

    port = free_port()
    server = start_server(args.run, port, args.concurrency)
    url = f"http://127.0.0.1:{port}/"
    has_captioner = (Path(args.run) / "captioner" / "model").is_dir()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        c = gradio_client.Client(url, verbose=False)
        image = None
        for j in range(args.requests):
            start = time.perf_counter()
            try:
                if j % 2 == 1 and has_captioner and image is not None:
                    c.predict(gradio_client.handle_file(image), 3, api_name="/caption")
                else:
                    samples = c.predict("a small red circle above a large blue square", args.images, 1.5, 1.0, 0,
                                        1.0, i * 100 + j, api_name="/generate")
                    image = samples[0]["image"]
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"client {i} request {j}: {e!r}"[:300])
            with lock:
                latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, args.timeout - (time.perf_counter() - started)))
    wall = time.perf_counter() - started
    hung = sum(t.is_alive() for t in threads)
    peak = peak_rss_mib(server.pid)
    server.terminate()
    server.wait(timeout=60)

    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    result = {"run": args.run, "clients": args.clients, "requests_per_client": args.requests,
              "images_per_request": args.images, "concurrency": args.concurrency or "default",
              "requests_done": len(latencies), "errors": errors, "hung_clients": hung,
              "latency_s": {"p50": statistics.median(latencies) if latencies else None, "p95": q[18],
                            "max": max(latencies, default=None)},
              "wall_s": wall, "server_peak_rss_mib": peak, "cpu_count": os.cpu_count()}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(latencies)} requests from {args.clients} clients in {wall:.0f} s: p50 {result['latency_s']['p50']:.2f} s, "
          f"p95 {q[18]:.2f} s, max {result['latency_s']['max']:.2f} s; {len(errors)} errors, {hung} hung; "
          f"server peak memory {peak:.0f} MiB")
    return 0 if not errors and not hung else 1


if __name__ == "__main__":
    sys.exit(main())
