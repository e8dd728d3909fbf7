"""The browser widget at `/` of `zhplm serve`: headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; no browser is downloaded) types into the cards of a real server over
tiny models, clicks Compute, and the page shows what the API answers for the same input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from model_helpers import tiny_task_models, wait_until_healthy

from zhplm.serving import Settings, create_app, load_models
from zhplm.tokenization import Tokenizer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NAMES = {"fill-mask": "mlm", "token-classification": "ner", "text-classification": "cls",
         "question-answering": "qa", "replaced-token-detection": "rtd",
         "feature-extraction": "enc"}
MASKED = "北京是中国的[MASK]都，我很喜欢这里。"
NER_CANDIDATES = ["江泽民在北京会见了克林顿。", "今天天气很好，我们去公园散步。",
                  "这本书的内容非常丰富，值得一读。", "上海和广州都是中国的大城市。"]
TIMEOUT = 60_000  # ms, for every wait on the page
TOL = 1e-6


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium and Playwright; in CI (`.ci/run` sets CI) a missing one fails."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is missing: pip install -e '.[dev]'"
    if reason and os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it, see .ci/run)")
    if reason:
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory, zh_vocab_dir):
    """A `zhplm serve` subprocess over a tiny model of every task: its base URL."""
    root = tmp_path_factory.mktemp("widget_models")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    models = tiny_task_models(tokenizer.vocab_size, tokenizer.pad_token_id)
    specs = []
    for task, name in NAMES.items():
        models[task].save_pretrained(root / name, tokenizer=tokenizer)
        specs += ["--model", f"{name}={root / name}"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "wb")  # closed in the finally below
    process = subprocess.Popen([sys.executable, "-m", "zhplm", "serve", *specs, "--host",
                                "127.0.0.1", "--port", str(port), "--dtype", "fp32"],
                               env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, 120, (root / "server.log").read_text)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = os.environ.get("ZHPLM_TEST_ARTIFACTS")
    out = Path(folder) if folder else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def _compute(page, task: str, values: dict[str, str]):
    """Fill a card's inputs, click Compute, wait for its result: the card."""
    card = page.locator(f'section.card[data-task="{task}"]')
    for name, value in values.items():
        card.locator(f'[name="{name}"]').fill(value)
    card.locator("button.compute").click()
    page.wait_for_selector(f'section.card[data-task="{task}"][data-state]', timeout=TIMEOUT)
    assert card.get_attribute("data-state") == "done", card.locator(".result").inner_text()
    assert card.locator("pre.raw-json").text_content().strip().startswith(("[", "{"))
    return card


def _bars(card) -> list[tuple[str, float]]:
    return [(b.get_attribute("data-label"), float(b.get_attribute("data-score")))
            for b in card.locator(".bar").all()]


def _close(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    return len(a) == len(b) and all(x == y and abs(s - t) <= TOL
                                    for (x, s), (y, t) in zip(a, b, strict=True))


def test_widget_shows_what_the_api_answers(chromium, server, artifacts):
    from playwright.sync_api import sync_playwright

    api = httpx.Client(base_url=server, timeout=60)
    started = time.perf_counter()
    assert "widget.js" in api.get("/").text
    assert api.get("/static/widget.css").status_code == 200
    ner_text = next((t for t in NER_CANDIDATES if api.post("/ner", json={"inputs": t}).json()),
                    None)
    assert ner_text is not None, "the tiny NER model finds no entity in any candidate"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_ARGS, timeout=TIMEOUT)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(TIMEOUT)
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready]")
            tasks = {c.get_attribute("data-task")
                     for c in page.locator("section.card").all()}
            assert tasks == set(NAMES)

            # fill-mask: one bar per candidate (top_k = 5), as /fill-mask answers
            card = _compute(page, "fill-mask", {"text": MASKED})
            expected = api.post("/fill-mask", json={"inputs": MASKED, "top_k": 5}).json()
            assert _close(_bars(card), [(c["token_str"], c["score"]) for c in expected])

            # text classification: every label (top_k null)
            text = "这本书的内容非常丰富，值得一读。"
            card = _compute(page, "text-classification", {"text": text})
            expected = api.post("/predict", json={"inputs": text, "top_k": None}).json()
            assert len(expected) == 3
            assert _close(_bars(card), [(c["label"], c["score"]) for c in expected])

            # NER: the highlighted spans are the entities' text and types
            card = _compute(page, "token-classification", {"text": ner_text})
            entities = api.post("/ner", json={"inputs": ner_text,
                                              "aggregation_strategy": "simple"}).json()
            marks = card.locator("mark.entity").all()
            assert [(m.text_content(), m.get_attribute("data-type")) for m in marks] == [
                (ner_text[e["start"]:e["end"]], e["entity_group"]) for e in entities]
            assert card.locator(".spans").text_content() == ner_text  # nothing lost

            # QA: the answer highlighted in the context, with its score
            question, context = "谁在北京会见了克林顿？", "江泽民在北京会见了克林顿。"
            card = _compute(page, "question-answering",
                            {"question": question, "context": context})
            answer = api.post("/qa", json={"question": question, "context": context}).json()
            mark = card.locator("mark.answer")
            assert mark.text_content() == context[answer["start"]:answer["end"]]
            assert abs(float(mark.get_attribute("data-score")) - answer["score"]) <= TOL

            # replaced-token detection: one shaded span per token
            text = "今天天气很好，我们去公园散步。"
            card = _compute(page, "replaced-token-detection", {"text": text})
            tokens = api.post("/rtd", json={"inputs": text}).json()
            probs = [float(t.get_attribute("data-prob"))
                     for t in card.locator(".rtd-token").all()]
            assert len(probs) == len(tokens)
            assert all(abs(a - t["score"]) <= TOL for a, t in zip(probs, tokens, strict=True))

            # feature extraction: cosine of the two /embed vectors
            a, b = "今天天气很好。", "今天是个好天气。"
            card = _compute(page, "feature-extraction", {"text": a, "text2": b})
            u, v = api.post("/embed", json={"inputs": [a, b], "normalize": True}).json()
            cosine = sum(x * y for x, y in zip(u, v, strict=True))
            shown = float(card.locator(".similarity").get_attribute("data-similarity"))
            assert abs(shown - cosine) <= 1e-5

            # an API error is shown in the card
            card = page.locator('section.card[data-task="fill-mask"]')
            card.locator('[name="text"]').fill("没有掩码的句子。")
            card.locator("button.compute").click()
            page.wait_for_selector('section.card[data-task="fill-mask"][data-state="error"]')
            assert "Validation" in card.locator(".result .error").inner_text()
            _compute(page, "fill-mask", {"text": MASKED})  # back to a clean card

            assert not errors, errors
            shot = artifacts / "widget.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nwidget screenshot: {shot} "
                  f"({time.perf_counter() - started:.1f} s in the browser)")
            assert shot.stat().st_size > 0
        finally:
            browser.close()
            api.close()


def test_widget_routes_need_no_api_key(zh_vocab_dir, tmp_path):
    """With --api-key, / and /static/* stay open (they carry no data); /info is 401."""
    from fastapi.testclient import TestClient

    settings = Settings(dtype="fp32", api_key="s3cret")
    with TestClient(create_app(_mlm(zh_vocab_dir, tmp_path, settings), settings)) as c:
        assert c.get("/").headers["content-type"].startswith("text/html")
        assert c.get("/static/widget.js").status_code == 200
        missing = c.get("/static/missing.js")
        assert missing.status_code == 404 and missing.json()["error_type"] == "NotFound"
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_widget_asks_for_the_api_key(chromium, zh_vocab_dir, tmp_path):
    """/info answers 401: the page shows a key field, then sends `Authorization: Bearer`."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    settings = Settings(dtype="fp32", api_key="s3cret")
    app = create_app(_mlm(zh_vocab_dir, tmp_path, settings), settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=CHROMIUM_ARGS, timeout=TIMEOUT)
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT)
                page.goto(url + "/")
                page.wait_for_selector("#auth:not([hidden])")
                assert page.locator("section.card").count() == 0
                page.fill("#api-key", "wrong")
                page.click("#auth button")
                page.wait_for_selector("#auth-error:not([hidden])")
                page.fill("#api-key", "s3cret")
                page.click("#auth button")
                page.wait_for_selector("body[data-ready]")
                card = _compute(page, "fill-mask", {"text": MASKED})
                assert card.locator(".bar").count() == 5
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def _mlm(zh_vocab_dir, tmp_path, settings):
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    model = tiny_task_models(tokenizer.vocab_size, tokenizer.pad_token_id)["fill-mask"]
    model.save_pretrained(tmp_path / "mlm", tokenizer=tokenizer)
    return load_models([f"mlm={tmp_path / 'mlm'}"], settings)
