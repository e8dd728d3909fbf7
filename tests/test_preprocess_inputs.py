"""`preprocess` on corpora as users have them: several files, directories and glob patterns; a
byte-counting progress bar; a killed run that resumes from its last finished shard."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zhplm import datasets
from zhplm.data import corpus
from zhplm.data.corpus import PROGRESS_FILE, TokenDataset, expand_inputs, preprocess
from zhplm.errors import DataError, InputError

# small shards and chunks: a few dozen shards, most of them cut inside a chunk
ARGS = {"shard_tokens": 2500, "chunk_documents": 50, "min_sentence_tokens": 2}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A corpus directory of real documents as three files in two sub-directories (with an
    invalid UTF-8 line, a malformed and an empty JSON record, a one-token sentence), plus
    files that must not be read; and the three corpus files in their sorted order."""
    lines = list(datasets.corpus_lines())
    lines = lines[:500] + lines[-500:]  # reviews, then People's Daily
    root = tmp_path_factory.mktemp("tree") / "corpus"
    first, second = root / "a" / "01.txt", root / "a" / "02.jsonl"
    third = root / "b" / "x" / "03.txt"
    for path in (first, third):
        path.parent.mkdir(parents=True, exist_ok=True)
    first.write_bytes("\n".join(lines[:400]).encode() + b"\nbad \xff line\n")
    records = [json.dumps({"text": line}, ensure_ascii=False) for line in lines[400:700]]
    second.write_text("\n".join([*records, "{oops", '{"text": " "}']) + "\n", encoding="utf-8")
    third.write_text("\n".join([*lines[700:], "嗯"]) + "\n", encoding="utf-8")
    (root / "b" / ".hidden.txt").write_text("不要读我。\n", encoding="utf-8")
    (root / "b" / "notes.md").write_text("不要读我。\n", encoding="utf-8")
    (root / "b" / ".cache").mkdir()
    (root / "b" / ".cache" / "old.txt").write_text("不要读我。\n", encoding="utf-8")
    return root, [first, second, third]


@pytest.fixture(scope="module")
def expected(tmp_path_factory, tree, zh_vocab_dir) -> Path:
    """The dataset of the three files named one by one, in one uninterrupted run."""
    out = tmp_path_factory.mktemp("expected") / "ds"
    preprocess(tree[1], zh_vocab_dir, out, **ARGS)
    return out


def contents(directory: Path) -> dict[str, bytes]:
    """Every file of a dataset directory; meta.json without its ``seconds`` line."""
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    files["meta.json"] = b"\n".join(line for line in files["meta.json"].splitlines()
                                    if not line.strip().startswith(b'"seconds"'))
    return files


def temp_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# --------------------------------------------------------------------------- inputs


def test_directories_globs_and_files_agree(tmp_path, tree, expected, zh_vocab_dir):
    root, files = tree
    assert expand_inputs(root) == files  # sorted by path; hidden and .md files left out
    assert expand_inputs([str(root / "*" / "*.jsonl"), root / "a" / "01.txt"]) == [
        files[1], files[0]]
    assert expand_inputs(str(root / "**" / "*.txt")) == [files[0], files[2]]
    assert expand_inputs(str(root / "[ab]")) == files  # a pattern matching directories
    want = contents(expected)
    for name, inputs in [("dir", [root]), ("globs", [str(root / "a" / "*"),
                                                     str(root / "b" / "**" / "*.txt")])]:
        meta = preprocess(inputs, zh_vocab_dir, tmp_path / name, **ARGS)
        assert meta["sources"] == [str(f) for f in files]
        assert contents(tmp_path / name) == want, name
    assert len(TokenDataset(expected).meta["shards"]) > 20


def test_inputs_that_name_no_file_are_clear_errors(tmp_path, tree, zh_vocab_dir):
    root, _ = tree
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / "README.md").write_text("x")
    with pytest.raises(DataError, match=r"pattern '.*nothing/\*\.txt' matches no file; check "
                                        r"the pattern \(quote it"):
        preprocess([root, str(tmp_path / "nothing" / "*.txt")], zh_vocab_dir, tmp_path / "ds")
    with pytest.raises(DataError, match=r"directory .*empty holds no \.txt or \.jsonl file"):
        preprocess(tmp_path / "empty", zh_vocab_dir, tmp_path / "ds")
    with pytest.raises(DataError, match=r"missing\.txt does not exist"):
        preprocess([root, tmp_path / "missing.txt"], zh_vocab_dir, tmp_path / "ds")
    with pytest.raises(InputError, match=r"no corpus files given"):
        preprocess([], zh_vocab_dir, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing was written


def test_cli_takes_directories_and_patterns(tmp_path, tree, zh_vocab_dir, capsys):
    from zhplm.cli import main

    root, files = tree
    assert main(["preprocess", str(root), "--vocab", str(zh_vocab_dir), "--out",
                 str(tmp_path / "dir")]) == 0
    assert main(["preprocess", str(root / "?" / "**" / "0*"), "--vocab", str(zh_vocab_dir),
                 "--out", str(tmp_path / "glob")]) == 0
    assert contents(tmp_path / "dir") == contents(tmp_path / "glob")
    assert TokenDataset(tmp_path / "glob").meta["sources"] == [str(f) for f in files]
    assert main(["preprocess", str(root / "*.txt"), "--vocab", str(zh_vocab_dir), "--out",
                 str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "zhplm preprocess: error: corpus pattern" in err and "matches no file" in err
    assert "B/s" in err  # the progress bar counts bytes


# --------------------------------------------------------------------------- progress


def test_progress_counts_input_bytes_to_the_total(tmp_path, tree, zh_vocab_dir, monkeypatch,
                                                  capsys):
    ends: list[tuple[int, int, int]] = []

    class Recording(corpus._ProgressBar):
        def close(self) -> None:
            ends.append((self.bar.n, self.bar.total, self.documents))
            super().close()

    monkeypatch.setattr(corpus, "_ProgressBar", Recording)
    root, files = tree
    meta = preprocess(root, zh_vocab_dir, tmp_path / "ds", progress=True, workers=2)
    total = sum(f.stat().st_size for f in files)
    assert ends == [(total, total, meta["num_documents"])]
    err = capsys.readouterr().err
    assert "100%" in err and "B/s" in err and f"docs={meta['num_documents']}" in err


# --------------------------------------------------------------------------- resuming

HANGING_RUN = """
import json, sys, time
from zhplm.data import corpus, shards

job = json.loads(sys.argv[1])
flush = shards.ShardWriter.flush

def flush_then_hang(self):
    flush(self)  # writes the shard, then progress.json
    if len(self.shards) == job["hang_after"]:
        print("flushed", flush=True)
        time.sleep(600)

shards.ShardWriter.flush = flush_then_hang
corpus.preprocess(job["inputs"], job["vocab"], job["out"], workers=job["workers"], **job["args"])
"""


def killed_run(inputs: list[Path], vocab: Path, out: Path, *, workers: int, hang_after: int,
               sig: int = signal.SIGKILL) -> Path:
    """Run preprocess in a subprocess, kill it with ``sig`` once it has written
    ``hang_after`` shards; return the temporary directory it leaves."""
    job = {"inputs": [str(p) for p in inputs], "vocab": str(vocab), "out": str(out),
           "workers": workers, "hang_after": hang_after, "args": ARGS}
    child = subprocess.Popen([sys.executable, "-c", HANGING_RUN, json.dumps(job)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "flushed\n"
    finally:
        os.kill(child.pid, sig)
        child.wait(timeout=60)
        child.stdout.close()
    [left] = temp_dirs(out)
    assert left.name.startswith(f".{out.name}.tmp-{child.pid}-") and not out.exists()
    return left


@pytest.mark.parametrize(("sig", "workers", "hang_after"),
                         [(signal.SIGKILL, 2, 6), (signal.SIGINT, 1, 11), (signal.SIGKILL, 1, 0)],
                         ids=["sigkill-2-workers", "ctrl-c-1-worker", "sigkill-at-last-shard"])
def test_killed_run_resumes_to_the_same_bytes(tmp_path, tree, expected, zh_vocab_dir, caplog,
                                              sig, workers, hang_after):
    root, files = tree
    out = tmp_path / "ds"
    last = len(TokenDataset(expected).meta["shards"])
    hang_after = hang_after or last  # 0: once every shard is written, before meta.json
    left = killed_run(files, zh_vocab_dir, out, workers=workers, hang_after=hang_after,
                      sig=sig)
    progress = json.loads((left / PROGRESS_FILE).read_text(encoding="utf-8"))
    assert len(progress["shards"]) == hang_after and progress["chunk"] > 0
    if hang_after < last:
        assert progress["written"] > 0  # the next shard starts inside a chunk
    # a shard being written when the run was killed, a killed atomic write, a stray file
    (left / f"shard-{hang_after:05d}.tokens.npy").write_bytes(b"\x93NUMPY cut off")
    (left / f".{PROGRESS_FILE}.tmp-1-0123abcd").write_text("{")
    (left / "meta.json").write_text("{}")
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in left.glob("shard-00000.*")}
    caplog.set_level(logging.INFO, logger="zhplm.data")
    meta = preprocess([root], zh_vocab_dir, out, workers=3 - workers, **ARGS)  # same files
    assert f"resuming the killed run in {out.parent}" in caplog.text
    assert f"writing on from shard-{hang_after:05d}" in caplog.text
    assert temp_dirs(out) == []
    assert contents(out) == contents(expected)
    assert {k: v for k, v in meta.items() if k != "seconds"} == {
        k: v for k, v in TokenDataset(expected).meta.items() if k != "seconds"}
    assert meta["skipped"]["invalid_utf8"] == meta["skipped"]["malformed_json"] == 1
    assert meta["skipped"]["short_sentences"] > 0
    # the finished shards were kept, not written again
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in out.glob("shard-00000.*")} == finished


def test_other_arguments_or_inputs_start_afresh(tmp_path, tree, expected, zh_vocab_dir,
                                                caplog):
    _, files = tree
    out = tmp_path / "ds"
    left = killed_run(files, zh_vocab_dir, out, workers=1, hang_after=1)
    caplog.set_level(logging.INFO, logger="zhplm.data")
    other = {**ARGS, "shard_tokens": 4000}
    meta = preprocess(files, zh_vocab_dir, out, **other)
    assert "with other inputs or arguments; it is not resumed" in caplog.text
    assert f"removed {left}" in caplog.text and "resuming" not in caplog.text
    assert not left.exists() and temp_dirs(out) == []
    assert meta["num_documents"] == TokenDataset(expected).num_documents
    assert meta["shards"][0]["num_tokens"] >= 4000
    # an input file changed since the killed run: not resumed either
    left = killed_run(files, zh_vocab_dir, tmp_path / "again", workers=1, hang_after=1)
    os.utime(files[2], ns=(files[2].stat().st_atime_ns, files[2].stat().st_mtime_ns + 10**9))
    caplog.clear()
    preprocess(files, zh_vocab_dir, tmp_path / "again", **ARGS)
    assert "not resumed" in caplog.text and not left.exists()
    assert contents(tmp_path / "again") == contents(expected)
