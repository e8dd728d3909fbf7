"""Task data built from the built-in corpora, shared by the fine-tuning tests."""

from __future__ import annotations

import json
from pathlib import Path

from zhplm.tasks.builtin import load_builtin


def squad_from_people_daily(path: Path, n: int, scan: int | None = None) -> list[dict]:
    """Write SQuAD-format questions over real People's Daily sentences (the built-in
    `pd-ner` dev split) to `path`: each asks for the first entity of its sentence. At most
    `n` paragraphs, from the first `scan` sentences (default 3n); returns the paragraphs."""
    paragraphs = []
    for i, sentence in enumerate(load_builtin("pd-ner", "dev")[: scan or 3 * n]):
        text = "".join(sentence.tokens)
        spans = [(t[2:], s) for s, t in enumerate(sentence.tags) if t.startswith("B-")]
        if not spans:
            continue
        kind, start = spans[0]
        end = start + 1
        while end < len(sentence.tags) and sentence.tags[end] == f"I-{kind}":
            end += 1
        paragraphs.append({"context": text, "qas": [{
            "id": f"q{i}", "question": f"{kind}是什么？",
            "answers": [{"text": text[start:end], "answer_start": start}]}]})
        if len(paragraphs) == n:
            break
    for p in paragraphs:
        answer = p["qas"][0]["answers"][0]
        assert p["context"][answer["answer_start"]:].startswith(answer["text"])
    path.write_text(json.dumps({"data": [{"title": "pd", "paragraphs": paragraphs}]},
                               ensure_ascii=False), encoding="utf-8")
    return paragraphs
