"""`zhplm serve`: every route answers what the Python pipeline returns, requests are batched
dynamically under concurrency, limits and errors follow TEI's codes, and SIGTERM answers
the requests in flight. Tiny Chinese models over the zh vocab fixture."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from model_helpers import tiny_task_models, wait_until_healthy

from zhplm import pipeline
from zhplm.serving import Settings, create_app, infer_task, load_models
from zhplm.serving.batching import BatchQueue
from zhplm.tokenization import Tokenizer

ZH = ["今天天气很好，我们去公园散步。", "这本书的内容非常丰富，值得一读。",
      "江泽民在北京会见了克林顿。"]
MASKED = ["今天天气很[MASK]。", "北京是中国的[MASK]都，我[MASK]欢这里。"]
TOL = 1e-5
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, zh_vocab_dir) -> dict[str, Path]:
    """task -> a tiny model directory whose architectures imply that task."""
    root = tmp_path_factory.mktemp("serve_models")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    models = tiny_task_models(tokenizer.vocab_size, tokenizer.pad_token_id)
    del models["electra-text-classification"]
    return {task: model.save_pretrained(root / task, tokenizer=tokenizer) or root / task
            for task, model in models.items()}


NAMES = {"fill-mask": "mlm", "feature-extraction": "enc", "text-classification": "cls",
         "token-classification": "ner", "question-answering": "qa",
         "replaced-token-detection": "rtd"}


@pytest.fixture(scope="module")
def pipes(model_dirs):
    return {task: pipeline(task, model=d, dtype="fp32") for task, d in model_dirs.items()}


@pytest.fixture(scope="module")
def client(model_dirs):
    settings = Settings(dtype="fp32")
    specs = [f"{NAMES[task]}={d}" for task, d in model_dirs.items()]
    with TestClient(create_app(load_models(specs, settings), settings)) as c:
        yield c


def _same(a, b, path="body"):
    """Equal structure and values, floats within TOL (JSON has no tuples: lists)."""
    if isinstance(b, np.ndarray):
        b = b.tolist()
    if isinstance(b, tuple):
        b = list(b)
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, a, b)
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert abs(a - float(b)) <= TOL, (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_task_is_implied_by_the_directory(model_dirs, tmp_path):
    for task, directory in model_dirs.items():
        assert infer_task(directory) == task
    (tmp_path / "onnx_export.json").write_text(json.dumps({"task": "fill-mask"}))
    assert infer_task(tmp_path) == "fill-mask"


def test_fill_mask_embed_and_openai_bodies_equal_the_pipelines(client, pipes):
    fill = pipes["fill-mask"]
    for inputs in (MASKED[0], MASKED[1], MASKED):
        response = client.post("/fill-mask", json={"inputs": inputs, "top_k": 3})
        assert response.status_code == 200, response.text
        assert "x-truncated" not in response.headers
        _same(response.json(), fill(inputs, top_k=3))
    embed = pipes["feature-extraction"]
    for pooling in ("mean", "cls"):
        for normalize in (True, False):
            response = client.post("/embed", json={"inputs": ZH, "pooling": pooling,
                                                   "normalize": normalize})
            assert response.status_code == 200, response.text
            _same(response.json(), embed(ZH, pooling=pooling, normalize=normalize))
    response = client.post("/embed", json={"inputs": ZH[0]})  # a single text: still a list
    _same(response.json(), embed([ZH[0]], pooling="mean", normalize=True))
    body = client.post("/v1/embeddings", json={"input": ZH, "model": "enc"}).json()
    assert body["object"] == "list" and body["model"] == "enc"
    expected = embed(ZH, pooling="mean", normalize=True)
    for i, item in enumerate(body["data"]):
        assert item["object"] == "embedding" and item["index"] == i
        _same(item["embedding"], expected[i])
    tokens = sum(len(ids) for ids in embed.tokenizer(ZH)["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    b64 = client.post("/v1/embeddings", json={"input": ZH[0], "model": "text-embedding-3-small",
                                              "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    _same(vector.tolist(), expected[0])


def test_predict_ner_qa_rtd_tokenize_bodies_equal_the_pipelines(client, pipes):
    classify = pipes["text-classification"]
    pair = {"text": ZH[0], "text_pair": ZH[1]}
    _same(client.post("/predict", json={"inputs": ZH[0]}).json(), classify(ZH[0], top_k=None))
    _same(client.post("/predict", json={"inputs": ZH[0], "top_k": 1}).json(),
          classify(ZH[0], top_k=1))
    _same(client.post("/predict", json={"inputs": [ZH[0], ZH[1]]}).json(),  # a pair
          classify(pair, top_k=None))
    _same(client.post("/predict", json={"inputs": [ZH[2], [ZH[0], ZH[1]], [ZH[1]]],
                                        "top_k": 2}).json(),
          classify([ZH[2], pair, ZH[1]], top_k=2))
    tagger = pipes["token-classification"]
    for strategy in ("simple", "none"):
        _same(client.post("/ner", json={"inputs": ZH, "aggregation_strategy": strategy}).json(),
              tagger(ZH, aggregation_strategy=strategy))
    _same(client.post("/ner", json={"inputs": ZH[2]}).json(), tagger(ZH[2]))
    qa = pipes["question-answering"]
    questions = [{"question": "谁在北京？", "context": ZH[2]},
                 {"question": "书怎么样？", "context": ZH[1] * 40}]  # several windows
    _same(client.post("/qa", json=questions[0]).json(), qa(questions[0]))
    _same(client.post("/qa", json=questions).json(), qa(questions))
    _same(client.post("/qa", json={"inputs": questions, "model": "qa"}).json(), qa(questions))
    rtd = pipes["replaced-token-detection"]
    _same(client.post("/rtd", json={"inputs": ZH}).json(), rtd(ZH))
    _same(client.post("/rtd", json={"inputs": ZH[0], "threshold": 0.2}).json(),
          rtd(ZH[0], threshold=0.2))
    tokens = client.post("/tokenize", json={"inputs": ["今天 hello", ZH[0]]}).json()
    encoded = rtd.tokenizer(["今天 hello", ZH[0]], return_offsets_mapping=True)
    for row, ids, offsets in zip(tokens, encoded["input_ids"], encoded["offset_mapping"],
                                 strict=True):
        assert [t["id"] for t in row] == ids
        assert [t["special"] for t in row] == [True] + [False] * (len(ids) - 2) + [True]
        assert [(t["start"], t["stop"]) for t in row[1:-1]] == [tuple(o) for o in
                                                                 offsets[1:-1]]
        assert [t["text"] for t in row] == rtd.tokenizer.convert_ids_to_tokens(ids)


def _parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(name, labels): value}; every line must parse."""
    samples = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = sample.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


def test_health_info_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert {m["name"]: m["task"] for m in info["models"]} == {
        NAMES[t]: t for t in NAMES}
    assert all(m["backend"] == "torch" and m["dtype"] == "fp32" for m in info["models"])
    assert info["limits"]["max_client_batch_size"] == 32
    client.post("/fill-mask", json={"inputs": MASKED[0]})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = _parse_metrics(response.text)
    ok = frozenset({("route", "/fill-mask"), ("status", "200")})
    assert samples[("zhplm_requests_total", ok)] >= 1
    assert samples[("zhplm_batch_requests_count", frozenset({("model", "mlm")}))] >= 1
    assert ("zhplm_queue_depth", frozenset({("model", "mlm")})) in samples
    assert any(name == "zhplm_request_duration_seconds_bucket" for name, _ in samples)


def test_errors_follow_tei_codes_and_never_take_the_server_down(model_dirs):
    settings = Settings(dtype="fp32", payload_limit=4000, max_client_batch_size=4,
                        api_key="s3cret", max_input_length=12)
    models = load_models([f"mlm={model_dirs['fill-mask']}"], settings)
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(models, settings)) as c:
        def check(response, status, error_type=None, contains=""):
            assert response.status_code == status, response.text
            body = response.json()
            assert set(body) == {"error", "error_type"}
            assert error_type is None or body["error_type"] == error_type
            assert contains in body["error"]
        check(c.post("/fill-mask", json={"inputs": MASKED[0]}), 401, "Unauthorized")
        check(c.post("/fill-mask", json={"inputs": MASKED[0]},
                     headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/health").status_code == 200  # open without a key
        check(c.post("/fill-mask", content=b'{"inputs": ',
                     headers={**auth, "Content-Type": "application/json"}), 422, "Validation",
              "not valid JSON")
        check(c.post("/fill-mask", json={"inputs": 3}, headers=auth), 422, "Validation",
              "inputs")
        check(c.post("/fill-mask", json={"inputs": MASKED[0], "top_k": "x"}, headers=auth),
              422)
        check(c.post("/fill-mask", json={"inputs": "x" * 5000}, headers=auth), 413,
              "PayloadTooLarge")
        streamed = c.post("/fill-mask", content=iter([b'{"inputs": "' + b"x" * 3000] * 2),
                          headers={**auth, "Content-Type": "application/json"})
        check(streamed, 413, "PayloadTooLarge")  # no Content-Length: counted as it arrives
        check(c.post("/fill-mask", json={"inputs": MASKED * 3}, headers=auth), 422,
              "Validation", "--max-client-batch-size")
        check(c.post("/fill-mask", json={"inputs": []}, headers=auth), 422)
        check(c.post("/fill-mask", json={"inputs": "今天天气很好。"}, headers=auth), 422,
              "Validation", "[MASK]")
        check(c.post("/fill-mask", json={"inputs": [MASKED[0], "没有面具。"]}, headers=auth),
              422, "Validation", "input 1 has no [MASK]")
        check(c.post("/embed", json={"inputs": "你好"}, headers=auth), 422, "Validation",
              "mlm (fill-mask)")
        check(c.post("/fill-mask", json={"inputs": MASKED[0], "model": "nope"}, headers=auth),
              422, "Validation", "nope")
        check(c.post("/fill-mask", json={"inputs": MASKED[0], "linguistic": True},
                     headers=auth), 422, "Validation", "LERT")
        check(c.post("/fill-mask", json={"inputs": MASKED[0], "targets": []},
                     headers=auth), 422, "Validation", "targets")
        long = "[MASK]" + "很好" * 30
        response = c.post("/fill-mask", json={"inputs": long}, headers=auth)
        assert response.status_code == 200 and response.headers["x-truncated"] == "true"
        _same(response.json(), models[0].pipeline(long))
        assert c.get("/health").status_code == 200
        ok = c.post("/fill-mask", json={"inputs": MASKED[0]}, headers=auth)
        assert ok.status_code == 200
        metrics = _parse_metrics(c.get("/metrics", headers=auth).text)
        assert metrics[("zhplm_errors_total",
                        frozenset({("route", "/fill-mask"), ("status", "401")}))] == 2
    strict = Settings(dtype="fp32", max_input_length=12, truncate=False)
    models = load_models([f"mlm={model_dirs['fill-mask']}"], strict)
    with TestClient(create_app(models, strict)) as c:
        response = c.post("/fill-mask", json={"inputs": "[MASK]" + "很好" * 30})
        assert response.status_code == 422 and "--max-input-length" in response.json()["error"]
    busy = Settings(dtype="fp32", max_concurrent_requests=0)
    with TestClient(create_app(models, busy)) as c:
        response = c.post("/fill-mask", json={"inputs": MASKED[0]})
        assert response.status_code == 429 and response.json()["error_type"] == "Overloaded"
        assert c.get("/health").status_code == 200


def test_an_onnx_export_is_served_like_its_pipeline(model_dirs, tmp_path):
    from zhplm.export.onnx import export_onnx

    out = tmp_path / "cls-onnx"
    export_onnx(model_dirs["text-classification"], out, quantize="int8")
    settings = Settings(dtype="int8")
    models = load_models([f"cls={out}"], settings)
    assert models[0].describe()["backend"] == "onnxruntime"
    expected = pipeline("text-classification", model=out, dtype="int8")
    with TestClient(create_app(models, settings)) as c:
        info = c.get("/info").json()["models"][0]
        assert (info["backend"], info["dtype"]) == ("onnxruntime", "int8")
        _same(c.post("/predict", json={"inputs": [[t] for t in ZH]}).json(),
              expected(ZH, top_k=None))


def test_health_answers_while_a_batch_computes(model_dirs):
    settings = Settings(dtype="fp32")
    models = load_models([f"cls={model_dirs['text-classification']}"], settings)
    computing = threading.Event()
    run = models[0].run

    def slow_run(inputs, options):
        computing.set()
        time.sleep(1.5)
        return run(inputs, options)

    models[0].run = slow_run  # type: ignore[method-assign]
    app = create_app(models, settings)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            predict = asyncio.create_task(c.post("/predict", json={"inputs": ZH[0]}))
            await asyncio.to_thread(computing.wait, 10)
            health = await c.get("/health")
            # answered while the model computes: the prediction is still running
            assert health.status_code == 200 and not predict.done()
            assert (await predict).status_code == 200

    asyncio.run(scenario())


def test_batch_queue_batches_isolates_failures_and_drains():
    calls: list[list] = []
    release = threading.Event()

    def run(inputs, options):
        calls.append(list(inputs))
        if len(calls) == 1:
            release.wait(5)  # hold the first batch so the next requests queue up
        if "bad" in inputs:
            raise ValueError("bad input")
        return [x * options.get("times", 1) for x in inputs]

    queue = BatchQueue(run, max_batch_tokens=10, max_batch_requests=3)
    queue.start()
    first = queue.submit(["a"], 1)
    time.sleep(0.1)
    futures = [queue.submit([c], 1) for c in "bcde"]  # b c d batch; e is the 4th request
    other = queue.submit(["f"], 1, {"times": 2})  # other options: a batch of its own
    heavy = queue.submit(["g", "h"], 20)  # over max_batch_tokens: alone
    bad = [queue.submit(["bad"], 1), queue.submit(["i"], 1)]
    assert queue.depth == 8
    release.set()
    assert first.result(5) == ["a"]
    assert [f.result(5) for f in futures] == [["b"], ["c"], ["d"], ["e"]]
    assert other.result(5) == ["ff"] and heavy.result(5) == ["g", "h"]
    with pytest.raises(ValueError, match="bad input"):
        bad[0].result(5)
    assert bad[1].result(5) == ["i"]  # its neighbour is answered
    assert calls[1] == ["b", "c", "d"] and ["g", "h"] in calls
    late = queue.submit(["z"], 1)
    assert queue.close(5) and late.result(0) == ["z"]  # close drains what is queued


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_clients_are_batched_and_answered(model_dirs, pipes):
    import uvicorn

    settings = Settings(dtype="fp32")
    app = create_app(load_models([str(model_dirs["fill-mask"])], settings), settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    texts = [f"第{i}个[MASK]子，今天天气很好。" for i in range(32)]
    expected = {t: pipes["fill-mask"](t, top_k=2) for t in texts}
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)

        async def client(i: int, http: httpx.AsyncClient) -> int:
            good = 0
            for j in range(20):
                text = texts[(i + j) % len(texts)]
                r = await http.post("/fill-mask", json={"inputs": text, "top_k": 2})
                assert r.status_code == 200, r.text
                _same(r.json(), expected[text])
                good += 1
            return good

        async def main() -> list[int]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         limits=limits) as http:
                return await asyncio.gather(*(client(i, http) for i in range(32)))

        assert sum(asyncio.run(main())) == 32 * 20
        metrics = _parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        model = frozenset({("model", "fill-mask")})
        single = metrics[("zhplm_batch_requests_bucket", model | {("le", "1")})]
        batches = metrics[("zhplm_batch_requests_count", model)]
        assert metrics[("zhplm_batch_requests_sum", model)] == 32 * 20
        assert single < batches  # some batch held more than one request
        assert batches < 32 * 20
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def test_sigterm_answers_requests_in_flight(model_dirs):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zhplm", "serve", "--model", str(model_dirs["fill-mask"]),
         "--port", str(port), "--dtype", "fp32", "--max-batch-requests", "2"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, 60, lambda: process.stderr.read().decode())
        texts = [("今天天气很好，" * 40) + "[MASK]" + str(i) for i in range(32)]

        async def main() -> tuple[list[int], int]:
            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         limits=httpx.Limits(max_connections=64)) as http:
                tasks = [asyncio.create_task(http.post("/fill-mask", json={"inputs": texts}))
                         for _ in range(12)]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                pending = sum(not t.done() for t in tasks)
                process.send_signal(signal.SIGTERM)
                responses = await asyncio.gather(*tasks)
                return [r.status_code for r in responses], pending

        statuses, pending = asyncio.run(main())
        assert statuses == [200] * 12
        assert pending > 0  # requests were in flight when SIGTERM arrived
        # uvicorn re-raises SIGTERM after its graceful shutdown: killed by it, cleanly
        assert process.wait(30) in (0, -signal.SIGTERM)
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_serve_help_lists_the_limits():
    out = subprocess.run([sys.executable, "-m", "zhplm", "serve", "--help"], env=ENV,
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--max-batch-tokens", "--max-client-batch-size", "--payload-limit",
                 "--max-concurrent-requests", "--api-key", "--no-truncate"):
        assert flag in out
