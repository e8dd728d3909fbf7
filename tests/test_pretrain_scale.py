"""Pre-training memory does not grow with the corpus; resume stays exact across epochs with
collation workers (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pretrain_helpers import kill_then_resume, read_losses, recipe_args

from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
from zhplm.data.instances import InstanceConfig, SpecialIds
from zhplm.data.shards import TokenDataset
from zhplm.tokenization import Tokenizer

KINDS = ("tokens", "word_starts", "sentences", "documents")

PEAK_RSS_ANON = r"""
import json, sys, threading, time
peak = [0]
def sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
from zhplm.pretraining import PretrainRecipe, run_pretraining
from zhplm.recipe import load_recipe
run_pretraining(load_recipe(PretrainRecipe, None, sys.argv[1:]))
time.sleep(0.05)
print(json.dumps({"peak_rss_anon_kb": peak[0]}))
"""


def replicated(dataset: Path, copies: int, out: Path) -> Path:
    """A dataset of `copies` x the shards of `dataset` (hard links: no disk, no preprocess)."""
    meta = json.loads((dataset / "meta.json").read_text())
    out.mkdir()
    shards = []
    for _ in range(copies):
        for shard in meta["shards"]:
            name = f"shard-{len(shards):05d}"
            for kind in KINDS:
                os.link(dataset / f"{shard['name']}.{kind}.npy", out / f"{name}.{kind}.npy")
            shards.append({**shard, "name": name})
    for key in ("num_tokens", "num_sentences", "num_documents"):
        meta[key] *= copies
    meta["shards"] = shards
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def peak_rss_anon_mb(dataset: Path, vocab_dir: Path, out: Path) -> float:
    args = recipe_args(dataset, vocab_dir, out, **{
        "train.total_steps": 3, "train.save_checkpoint_steps": 0, "data.seq_length": 128,
        "data.dev_fraction": 0.01, "data.eval_instances": 32, "train.batch_size": 8})
    run = subprocess.run([sys.executable, "-c", PEAK_RSS_ANON, *args], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_rss_anon_kb"] / 1024


def test_pretraining_memory_does_not_grow_with_the_corpus(small_dataset, zh_vocab_dir,
                                                          tmp_path):
    tokens = TokenDataset(small_dataset).num_tokens
    smaller = replicated(small_dataset, 10, tmp_path / "x10")
    larger = replicated(small_dataset, 20, tmp_path / "x20")
    small_mb = peak_rss_anon_mb(smaller, zh_vocab_dir, tmp_path / "run10")
    large_mb = peak_rss_anon_mb(larger, zh_vocab_dir, tmp_path / "run20")
    # building every instance in memory took ~23 bytes per corpus token: 10 x tokens more
    # would be ~90 MB here; the index takes a few bytes per instance of 126 tokens
    per_token_before = 23 * 10 * tokens / 2**20
    assert large_mb - small_mb < min(16.0, per_token_before / 4), (small_mb, large_mb)


def test_sigkill_resume_across_epoch_boundaries_with_workers(zh_vocab_dir, tmp_path):
    from zhplm import datasets
    from zhplm.data.corpus import preprocess

    corpus = tmp_path / "corpus.txt"  # 300 documents: epochs of a few small steps
    corpus.write_text("\n".join(list(datasets.corpus_lines())[:300]) + "\n", encoding="utf-8")
    small_dataset = tmp_path / "dataset"
    preprocess([corpus], zh_vocab_dir / "vocab.txt", small_dataset)
    special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(zh_vocab_dir))
    dataset = TokenDataset(small_dataset)
    train, _ = DocumentSet.split(dataset.num_documents, 0.05)
    epoch = build_epoch(Corpus(dataset.shards, train), InstanceConfig("full_sentences", 64),
                        special, 42, 0)
    batch = 2 * int(np.ceil(len(epoch) / 7 / 2))  # an epoch of ~7 steps: 20 steps cross two
    full, killed = kill_then_resume(lambda out: recipe_args(
        small_dataset, zh_vocab_dir, out, **{"train.batch_size": batch, "data.workers": 2,
                                             "data.prefetch": 3}), tmp_path / "runs")
    state = json.loads((killed / "checkpoints" / "step-00000020" / "trainer_state.json")
                       .read_text())
    assert state["data"]["epoch"] >= 2, state
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert all(r["data_wait_s"] >= 0 for r in records if "loss" in r)
    assert len(read_losses(full)) == 20
