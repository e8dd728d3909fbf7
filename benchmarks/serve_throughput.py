"""`zhplm serve` under load vs the in-process pipeline (issue 10's target: the server
sustains >= 80% of the in-process pipeline's throughput under 32 concurrent clients, with
p50/p99 latency reported).

For the tiny Chinese classifier (ONNX export, POST /predict) and MiniLM-L6 (ONNX export,
POST /embed), both the exports `inference.py` caches under /tmp/zhplm-bench:

* in-process: `zhplm.pipeline(task, model=DIR)` over N real sentences (16-32 tokens each),
  called in batches of 32 -> texts/s;
* server: `python -m zhplm serve --model DIR --port PORT` as a subprocess (OMP_NUM_THREADS=2),
  32 concurrent clients, each sending requests of `--texts-per-request` texts (default 1)
  back to back -> texts/s, p50/p99 latency (client side), and the mean number of inputs per
  model call the server's batcher formed (from /metrics).

The clients are `wrk` (C, Debian's `wrk` package; `--duration` seconds, cycling through the
texts with a Lua script) by default: it costs the shared two cores little. `--client httpx`
uses 32 asyncio + httpx clients in this process instead (N requests in all); in Python they
take a good share of the CPU the server needs, so they measure the client as much as the
server.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/serve_throughput.py
        [--clients 32] [--client wrk|httpx] [--duration 20] [--texts-per-request 1]
        [--n-tiny 2000] [--n-minilm 640]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inference import MINILM, exports, tiny_classifier  # noqa: E402

BATCH = 32
MIN_TOKENS, MAX_TOKENS = 16, 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences_for(model_dir: Path, sentences: list[str], n: int) -> list[str]:
    """`n` texts of MIN_TOKENS..MAX_TOKENS tokens ([CLS]/[SEP] included): the real sentences
    of that length, plus (for short sentence lists) pairs of consecutive ones; cycled."""
    from zhplm.tokenization import Tokenizer

    tokenizer = Tokenizer.from_pretrained(model_dir)
    candidates = list(sentences)
    candidates += [f"{a} {b}" for a, b in zip(sentences, sentences[1:] + sentences[:1],
                                               strict=True)]
    fit = [t for t in candidates
           if MIN_TOKENS <= len(tokenizer(t)["input_ids"]) <= MAX_TOKENS]
    if not fit:
        raise SystemExit(f"no sentence of {MIN_TOKENS}-{MAX_TOKENS} tokens for {model_dir}")
    return [fit[i % len(fit)] for i in range(n)]


def in_process(task: str, model_dir: Path, texts: list[str]) -> tuple[float, str]:
    """texts/s of the pipeline over `texts` in batches of BATCH (one warm-up batch first),
    with the options the server's route uses."""
    from zhplm import pipeline

    pipe = pipeline(task, model=model_dir)
    kwargs = ({"pooling": "mean", "normalize": True} if task == "feature-extraction"
              else {"top_k": None})
    pipe(texts[:BATCH], **kwargs)
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        pipe(texts[i:i + BATCH], **kwargs)
    elapsed = time.perf_counter() - start
    return len(texts) / elapsed, f"{pipe.backend.name}/{pipe.dtype}"


def batch_stats(metrics: str, model: str) -> tuple[float, float]:
    """(sum, count) of the zhplm_batch_inputs histogram for `model`."""
    out = []
    for suffix in ("sum", "count"):
        pattern = rf'^zhplm_batch_inputs_{suffix}\{{model="{re.escape(model)}"\}} (\S+)$'
        found = re.search(pattern, metrics, re.MULTILINE)
        out.append(float(found.group(1)) if found else 0.0)
    return out[0], out[1]


WRK_SCRIPT = """
bodies = {%s}
counter = 0
request = function()
  counter = counter %% #bodies + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, bodies[counter])
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "seconds": %%f, "non2xx": %%d, "socket": %%d, '
    .. '"p50_ms": %%f, "p99_ms": %%f}\\n', summary.requests, summary.duration / 1e6,
    summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal of `text` (UTF-8 bytes as decimal escapes)."""
    return '"' + "".join(f"\\{b}" for b in text.encode()) + '"'


def wrk_load(base: str, route: str, bodies: list[str], clients: int, seconds: float
             ) -> dict:
    """`wrk` with `clients` connections for `seconds`, cycling through `bodies`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (", ".join(lua_string(b) for b in bodies), route))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{round(seconds)}s", "--timeout",
                              "30s", "-s", f.name, base], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    result = json.loads(out.strip().splitlines()[-1])
    if result["non2xx"] or result["socket"]:
        raise RuntimeError(f"wrk: {result['non2xx']} non-2xx answers, {result['socket']} "
                           f"socket errors\n{out}")
    return result


async def load(base: str, route: str, bodies: list[str], clients: int
               ) -> tuple[float, list[float]]:
    """`clients` httpx workers sending `bodies` back to back until all are sent: (elapsed
    seconds, per-request latencies in seconds)."""
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                r = await client.post(route, content=body.encode(), headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{route}: {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies


def request_bodies(texts: list[str], per_request: int, route: str) -> list[str]:
    """JSON bodies of `per_request` consecutive texts each (a plain string for 1; for
    /predict a batch is a list of sequences `[[text], ...]`, as TEI's)."""
    if per_request == 1:
        return [json.dumps({"inputs": t}, ensure_ascii=False) for t in texts]
    chunks = [texts[i:i + per_request]
              for i in range(0, len(texts) - per_request + 1, per_request)]
    return [json.dumps({"inputs": [[t] for t in chunk] if route == "/predict" else chunk},
                       ensure_ascii=False) for chunk in chunks]


def serve_bench(model_dir: Path, route: str, texts: list[str], clients: int, client: str,
                seconds: float, per_request: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    log = open(Path("/tmp/zhplm-bench") / f"serve-{model_dir.name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "zhplm", "serve", "--model",
                             str(model_dir), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    bodies = request_bodies(texts, per_request, route)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server not healthy after 180 s; see {log.name}")
            time.sleep(0.25)
        asyncio.run(load(base, route, bodies[:4 * clients], clients))  # warm-up
        before = batch_stats(httpx.get(f"{base}/metrics").text, model_dir.name)
        if client == "wrk":
            r = wrk_load(base, route, bodies, clients, seconds)
            sent, elapsed = r["requests"], r["seconds"]
            p50, p99 = r["p50_ms"], r["p99_ms"]
        else:
            elapsed, latencies = asyncio.run(load(base, route, bodies, clients))
            ms = np.asarray(latencies) * 1000
            sent = len(bodies)
            p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
        after = batch_stats(httpx.get(f"{base}/metrics").text, model_dir.name)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    calls = after[1] - before[1]
    return {"texts_s": sent * per_request / elapsed, "p50": p50, "p99": p99,
            "mean_batch": (after[0] - before[0]) / calls if calls else float("nan"),
            "exit": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk")
    parser.add_argument("--duration", type=float, default=20, help="seconds of wrk load")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--n-tiny", type=int, default=2000)
    parser.add_argument("--n-minilm", type=int, default=640)
    args = parser.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk, or --client httpx")
    logging.getLogger("zhplm").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")

    from zhplm import datasets
    from zhplm.env import env_line
    from zhplm.export.validation import ENGLISH_SENTENCES

    print(env_line())
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} (benchmark), "
          f"2 (server); {args.clients} {args.client} clients, {args.texts_per_request} "
          f"text(s) per request; in-process batches of {BATCH}", flush=True)
    zh = list(datasets.corpus_lines("test"))
    models = [("tiny-zh-cls", "text-classification", "/predict",
               exports(tiny_classifier(), "tiny-zh-cls")["none"], zh, args.n_tiny),
              ("minilm", "feature-extraction", "/embed",
               exports(MINILM, "minilm")["none"], list(ENGLISH_SENTENCES), args.n_minilm)]
    rows = []
    for name, task, route, model_dir, sentences, n in models:
        texts = sentences_for(model_dir, sentences, n)
        base_tps, how = in_process(task, model_dir, texts)
        print(f"{name}: in-process {base_tps:.1f} texts/s ({how}, N={n})", flush=True)
        r = serve_bench(model_dir, route, texts, args.clients, args.client, args.duration,
                        args.texts_per_request)
        print(f"{name}: server {r['texts_s']:.1f} texts/s (server exit {r['exit']})",
              flush=True)
        rows.append((f"{name} ({route})", base_tps, r))
    print(f"\n| model | in-process texts/s | server texts/s ({args.client}, "
          f"{args.texts_per_request}/request) | ratio (target >= 0.8) | p50 ms | p99 ms "
          f"| mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, base_tps, r in rows:
        print(f"| {label} | {base_tps:.1f} | {r['texts_s']:.1f} | "
              f"{r['texts_s'] / base_tps:.2f} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['mean_batch']:.1f} |")


if __name__ == "__main__":
    main()
