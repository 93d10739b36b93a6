"""A burst against `omni-gpt2o serve`: N requests at once, how many got a picture or "busy", the server's
resident memory before and at its peak, and whether it answers afterwards (Linux: reads /proc).

    .venv/bin/python bench/serve_burst.py --checkpoint runs/demo/checkpoint --requests 50
"""

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def post(url: str, body: dict) -> tuple[int, float]:
    request = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
            return answer.status, time.perf_counter() - started
    except urllib.error.HTTPError as err:
        return err.code, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--port", type=int, default=7862)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="the server's: auto | bf16 | fp32")
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "-m", "omni_gpt2o", "serve", "--checkpoint", args.checkpoint,
                               "--port", str(args.port), "--device", args.device, "--precision", args.precision])
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/info", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        post(url, {"prompt": "warm up", "steps": args.steps})
        before, peak, done = rss_mb(server.pid), [0.0], threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            answers = list(pool.map(lambda i: post(url, {"prompt": f"a red circle number {i}", "steps": args.steps}),
                                    range(args.requests)))
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
        codes = [code for code, _ in answers]
        after = post(url, {"prompt": "a blue square at the top", "steps": args.steps})
        print(f"{args.requests} requests of {args.steps} steps at once: {codes.count(200)} pictures, "
              f"{codes.count(503)} busy, {len(codes) - codes.count(200) - codes.count(503)} other, in {wall:.2f} s; "
              f"resident memory {before:.0f} MB -> peak {peak[0]:.0f} MB; afterwards: {after[0]} in {after[1]:.2f} s")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
