"""The `zhplm` command line: each verb parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zhplm.errors import InputError, ZhplmError

Handler = Callable[[argparse.Namespace], int]


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=None))


def cmd_init(args: argparse.Namespace) -> int:
    """Create a randomly initialised model directory from a size preset and a vocab (an
    ELECTRA preset writes a pair: OUT/discriminator/ and OUT/generator/)."""
    import torch

    from zhplm.config import ELECTRA_PRESETS, PRESETS, preset
    from zhplm.modeling import BertForMaskedLM, BertForPreTraining, BertModel
    from zhplm.tokenization import Tokenizer

    if args.preset not in PRESETS and args.preset not in ELECTRA_PRESETS:
        raise InputError(
            f"--preset {args.preset}: unknown preset; BERT presets (one model directory): "
            f"{', '.join(sorted(PRESETS))}; ELECTRA presets (OUT/discriminator/ + "
            f"OUT/generator/): {', '.join(ELECTRA_PRESETS)}")
    if args.preset in ELECTRA_PRESETS:
        return _init_electra_pair(args)
    if args.generator_hidden_fraction is not None:
        raise InputError(f"--generator-hidden-fraction sizes an ELECTRA generator; preset "
                         f"{args.preset!r} is not an ELECTRA preset (use one of "
                         f"{', '.join(ELECTRA_PRESETS)}, or drop the option)")
    tokenizer = Tokenizer.from_pretrained(args.vocab)
    config = preset(args.preset, vocab_size=tokenizer.vocab_size,
                    pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(args.seed)
    model_class = {"mlm": BertForMaskedLM, "pretraining": BertForPreTraining,
                   "encoder": BertModel}[args.head or "mlm"]
    model = model_class(config)
    model.save_pretrained(args.out, tokenizer=tokenizer)
    print(f"initialised {model_class.__name__} ({args.preset}: L={config.num_hidden_layers} "
          f"H={config.hidden_size}, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"vocab {config.vocab_size}) in {args.out}")
    return 0


def _init_electra_pair(args: argparse.Namespace) -> int:
    """`zhplm init --preset electra-*`: a discriminator and a generator sharing embeddings."""
    import torch

    from zhplm.config import GENERATOR_HIDDEN_FRACTION, electra_preset
    from zhplm.modeling import ElectraPretrainingPair
    from zhplm.modeling.electra import DISCRIMINATOR_DIR, GENERATOR_DIR
    from zhplm.tokenization import Tokenizer

    if args.head is not None:
        raise InputError(f"--head {args.head} applies to BERT presets; {args.preset} writes an "
                         f"ELECTRA pair ({DISCRIMINATOR_DIR}/ = ElectraForPreTraining, "
                         f"{GENERATOR_DIR}/ = ElectraForMaskedLM); drop --head")
    fraction = GENERATOR_HIDDEN_FRACTION if args.generator_hidden_fraction is None \
        else args.generator_hidden_fraction
    tokenizer = Tokenizer.from_pretrained(args.vocab)
    discriminator, generator = electra_preset(
        args.preset, generator_hidden_fraction=fraction, vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(args.seed)
    pair = ElectraPretrainingPair(discriminator, generator)
    out = pair.save_pretrained(args.out, tokenizer=tokenizer)
    print(f"initialised an ELECTRA pair ({args.preset}, vocab {discriminator.vocab_size}, "
          f"{pair.num_parameters() / 1e6:.2f}M parameters in all, embeddings shared) in {out}")
    for name, model in ((DISCRIMINATOR_DIR, pair.discriminator),
                        (GENERATOR_DIR, pair.generator)):
        config = model.config
        print(f"  {out / name}: {type(model).__name__} (L={config.num_hidden_layers} "
              f"H={config.hidden_size} E={config.embedding_size}, "
              f"{model.num_parameters() / 1e6:.2f}M parameters)")
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    """Predict the [MASK] tokens of each text."""
    from zhplm.pipelines import pipeline

    fill = pipeline("fill-mask", model=args.model, top_k=args.top_k, dtype=args.dtype,
                    truncate=not args.no_truncate, linguistic=args.linguistic,
                    backend=args.backend)
    results = fill(args.text, targets=args.targets)
    if args.json:
        _print_json(results)
        return 0
    for text, result in zip(args.text, results, strict=True):
        print(text)
        several = isinstance(result, list) and result and isinstance(result[0], list | dict) \
            and not (isinstance(result[0], dict) and "token_str" in result[0])
        masks = result if several else [result]
        for n, found in enumerate(masks, 1):
            label = f"  mask {n}: " if len(masks) > 1 else "  "
            predictions = found["tokens"] if isinstance(found, dict) else found
            print(label + "  ".join(f"{p['token_str']} {p['score']:.3f}" for p in predictions))
            if isinstance(found, dict):  # --linguistic: the mask's POS / NER / DEP labels
                for task in (t for t in found if t != "tokens"):
                    print(f"    {task}: " + "  ".join(f"{t['label']} {t['score']:.3f}"
                                                     for t in found[task]))
    return 0


def cmd_rtd(args: argparse.Namespace) -> int:
    """Replaced-token detection: each token's probability of having been replaced."""
    from zhplm.pipelines import pipeline

    detect = pipeline("replaced-token-detection", model=args.model, dtype=args.dtype,
                      backend=args.backend, truncate=not args.no_truncate,
                      threshold=args.threshold)
    results = detect(args.text)
    if args.json:
        _print_json(results)
        return 0
    for text, tokens in zip(args.text, results, strict=True):
        replaced = [t for t in tokens if t["replaced"]]
        print(f"{text}\t{len(replaced)} of {len(tokens)} tokens replaced "
              f"(p > {args.threshold:g})")
        print("  " + "  ".join(
            f"[{t['token']}] {t['score']:.3f}" if t["replaced"] else
            f"{t['token']} {t['score']:.3f}" for t in tokens))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Print one sentence vector per text (or token vectors with --pooling none)."""
    from zhplm.pipelines import pipeline

    extract = pipeline("feature-extraction", model=args.model, dtype=args.dtype,
                       backend=args.backend, truncate=not args.no_truncate)
    pooling = None if args.pooling == "none" else args.pooling
    vectors = extract(args.text, pooling=pooling, normalize=args.normalize)
    data = vectors.tolist() if pooling else [v.tolist() for v in vectors]
    if args.json:
        _print_json(data)
        return 0
    for text, vector in zip(args.text, vectors, strict=True):
        head = " ".join(f"{x:.4f}" for x in vector.reshape(-1)[:8])
        print(f"{text}\t{tuple(vector.shape)}\t[{head} ...]")
    return 0


def cmd_build_vocab(args: argparse.Namespace) -> int:
    """Train a BERT-style WordPiece vocab on text files (or the built-in corpus)."""
    from zhplm.tokenization import build_vocab

    files: list[Any] = list(args.corpus)
    if not files:
        from zhplm import datasets

        files = [datasets.write_corpus(Path(args.out).with_name("builtin_corpus.txt"))]
    out = build_vocab(files, vocab_size=args.size, out=args.out,
                      lowercase=not args.cased, min_frequency=args.min_frequency)
    n = sum(1 for _ in Path(out).open(encoding="utf-8"))
    print(f"wrote {n} tokens to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a model directory: architecture, sizes, parameter count, vocab."""
    from zhplm.config import ModelConfig
    from zhplm.modeling.pretrained import load_state_dict, tokenizer_vocab_size

    model_dir = Path(args.model)
    config = ModelConfig.from_pretrained(model_dir)
    state = load_state_dict(model_dir)
    info = {
        "directory": str(model_dir),
        "architectures": config.extra.get("architectures", []),
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        **({"embedding_size": config.embedding_size}
           if getattr(config, "embedding_size", None) is not None else {}),
        "heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "vocab_size": config.vocab_size,
        "tokenizer_vocab": tokenizer_vocab_size(model_dir),
        "parameters": int(sum(t.numel() for t in state.values())),
        "files": sorted(p.name for p in model_dir.iterdir() if p.is_file()),
    }
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>24}: {value}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    """Tokenize corpus files into a memory-mapped dataset directory."""
    from zhplm.data.corpus import preprocess

    for name in ("zhplm.data.corpus", "zhplm.data.output_dir"):  # resumed / removed runs
        step_log = logging.getLogger(name)
        if step_log.getEffectiveLevel() > logging.INFO:
            step_log.setLevel(logging.INFO)
    inputs: list[Any] = list(args.corpus)
    if not inputs:
        from zhplm import datasets

        inputs = [datasets.write_corpus(Path(args.out).with_name("builtin_corpus.txt"))]
    meta = preprocess(inputs, args.vocab, args.out, workers=args.workers, strict=args.strict,
                      segmenter=args.segmenter, layout=args.layout, overwrite=args.overwrite,
                      progress=True, annotate=args.annotate,
                      shard_tokens=args.shard_tokens)
    skipped = {k: v for k, v in meta["skipped"].items() if v}
    print(f"wrote {args.out}: {meta['num_documents']} documents, {meta['num_sentences']} "
          f"sentences, {meta['num_tokens']} tokens in {len(meta['shards'])} shard(s), "
          f"{meta['num_characters'] / max(meta['seconds'], 1e-9) / 1e6:.2f}M chars/s"
          + (f"; skipped {skipped}" if skipped else ""))
    annotation = meta.get("annotation")
    if annotation is not None:
        counts = ", ".join(f"{task} {n}" for task, n in annotation["labelled_tokens"].items())
        print(f"labels from {annotation['annotator']}: tokens labelled: {counts}; "
              f"unannotated sentences: {annotation['unannotated_sentences']}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train from a recipe (works under torchrun for several processes)."""
    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import load_recipe
    from zhplm.training.trainer import TrainingInterrupted

    overrides = list(args.overrides)
    if args.dtype is not None:  # the flag wins over the recipe's dtype or legacy bf16
        overrides += [f"train.dtype={args.dtype}", "train.bf16=null"]
    recipe = load_recipe(PretrainRecipe, args.config, overrides)
    try:
        metrics = run_pretraining(recipe, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"zhplm pretrain: {exc}", file=sys.stderr)
        return 128 + exc.signum
    shown = {k: round(v, 4) for k, v in metrics.items() if k != "lr"}
    print(f"done: {recipe.output_dir}/model  {shown}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot loss, accuracy and learning rate of a run."""
    from zhplm.training.plot import plot_run

    out = plot_run(args.run_dir, args.out)
    print(f"wrote {out}")
    return 0


def _finetune_config(args: argparse.Namespace) -> Any:
    from zhplm.finetuning import load_config

    overrides = list(args.overrides)
    for flag, key in (("task", "task"), ("model", "model"), ("train", "train"), ("dev", "dev"),
                      ("test", "test"), ("out", "output_dir"), ("epochs", "epochs"),
                      ("batch_size", "batch_size"), ("lr", "lr"),
                      ("max_seq_length", "max_seq_length"), ("seed", "seed"),
                      ("max_train_examples", "max_train_examples")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.bf16:  # deprecated spelling of --dtype bf16
        if args.dtype not in (None, "bf16"):
            raise InputError(f"--bf16 contradicts --dtype {args.dtype}; give only --dtype")
        args.dtype = "bf16"
    if args.dtype is not None:  # the flag wins over a config file's dtype or legacy bf16
        overrides += [f"dtype={args.dtype}", "bf16=null"]
    return load_config(args.config, overrides, hparams=args.hparams, preset=args.preset)


def cmd_env(args: argparse.Namespace) -> int:
    """Print what this machine runs natively and the dtype `auto` picks."""
    from zhplm.env import env_line, env_report

    report = env_report()
    if args.json:
        _print_json(report)
    else:
        print(env_line(report))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a model on a task (optionally a grid over hyper-parameters and seeds)."""
    from zhplm.finetuning import run_finetune
    from zhplm.training.trainer import TrainingInterrupted

    config = _finetune_config(args)
    try:
        if args.grid or args.seeds > 1:
            from zhplm.tasks.grid import parse_grid, run_grid

            summary = run_grid(config, parse_grid(args.grid), args.seeds, config.output_dir,
                               run_finetune, keep_models=args.keep_models)
            print((Path(config.output_dir) / "results.md").read_text(encoding="utf-8"))
            print(f"best cell: {summary['best_cell']}; all runs in "
                  f"{config.output_dir}/results.json")
            return 0
        results = run_finetune(config, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"zhplm finetune: {exc}", file=sys.stderr)
        return 128 + exc.signum
    shown = {k: results[k] for k in ("dev", "test") if k in results}
    print(json.dumps(shown, ensure_ascii=False) if args.json else
          f"done: {config.output_dir} {json.dumps(shown, ensure_ascii=False)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a prediction file against a gold file with the task's official metric."""
    from zhplm.tasks.evaluation import evaluate_files

    _print_json(evaluate_files(args.task, args.gold, args.predictions, scheme=args.scheme))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Label texts (or text pairs) with a fine-tuned classifier."""
    from zhplm.pipelines import pipeline

    if args.pair and len(args.pair) != len(args.text):
        raise InputError(f"--pair has {len(args.pair)} texts for {len(args.text)} inputs")
    classify = pipeline("text-classification", model=args.model, dtype=args.dtype,
                        backend=args.backend, truncate=not args.no_truncate, top_k=args.top_k)
    inputs = [{"text": a, "text_pair": b} for a, b in zip(args.text, args.pair, strict=True)] \
        if args.pair else args.text
    results = classify(inputs)
    if args.json:
        _print_json(results)
        return 0
    for text, result in zip(args.text, results, strict=True):
        ranked = result if isinstance(result, list) else [result]
        print(text + "\t" + "  ".join(f"{r['label']} {r['score']:.3f}" for r in ranked))
    return 0


def cmd_ner(args: argparse.Namespace) -> int:
    """Find entities in texts with a fine-tuned token classifier."""
    from zhplm.pipelines import pipeline

    tagger = pipeline("token-classification", model=args.model, dtype=args.dtype,
                      backend=args.backend, truncate=not args.no_truncate,
                      aggregation_strategy=args.aggregation)
    results = tagger(args.text)
    if args.json:
        _print_json(results)
        return 0
    for text, entities in zip(args.text, results, strict=True):
        found = "  ".join(f"{e.get('word')}/{e.get('entity_group', e.get('entity'))}"
                          for e in entities)
        print(f"{text}\t{found or '(none)'}")
    return 0


def cmd_qa(args: argparse.Namespace) -> int:
    """Answer questions from a context with a fine-tuned extractive QA model."""
    from zhplm.pipelines import pipeline

    qa = pipeline("question-answering", model=args.model, dtype=args.dtype,
                  backend=args.backend)
    context = Path(args.context_file).read_text(encoding="utf-8") if args.context_file \
        else args.context
    if not context:
        raise InputError("give --context TEXT or --context-file FILE")
    results = qa([{"question": q, "context": context} for q in args.text])
    if args.json:
        _print_json(results)
        return 0
    for question, result in zip(args.text, results, strict=True):
        print(f"{question}\t{result['answer'] or '(no answer)'}\t{result['score']:.3f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`zhplm serve`: models over HTTP (FastAPI + uvicorn), TEI-style routes, dynamic
    batching; Ctrl-C / SIGTERM answers what is in flight, then exits."""
    import os

    try:
        from zhplm.serving.app import serve
    except ImportError as exc:
        raise InputError(f"zhplm serve needs FastAPI and uvicorn ({exc}); pip install "
                         f"fastapi uvicorn") from None
    from zhplm.serving.models import Settings

    settings = Settings(
        max_batch_tokens=args.max_batch_tokens, max_batch_requests=args.max_batch_requests,
        max_client_batch_size=args.max_client_batch_size,
        max_input_length=args.max_input_length, truncate=not args.no_truncate,
        payload_limit=args.payload_limit, max_concurrent_requests=args.max_concurrent_requests,
        api_key=args.api_key or os.environ.get("ZHPLM_API_KEY") or None,
        dtype=args.dtype, backend=args.backend)
    serve(args.model, settings, host=args.host, port=args.port, access_log=args.verbose)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`zhplm export onnx`: export a model directory, validated against PyTorch, and print
    the validation table (a failed validation prints it in the error and exits 2)."""
    from zhplm.export.onnx import export_onnx
    from zhplm.export.validation import format_table

    report = export_onnx(args.model, args.out, task=args.task, opset=args.opset,
                         optimize=args.optimize, quantize=args.quantize, atol=args.atol,
                         calibration_text=args.calibration_text)
    validation = report["validation"]
    print(f"exported {args.model} as {report['task']} (opset {report['opset']}, optimize "
          f"{report['optimize']}) to {args.out}")
    if "max_abs_diff_before_optimize" in validation:
        print("validation before --optimize: max |onnx - torch| (batch x length):")
        print(format_table(validation["max_abs_diff_before_optimize"], validation["atol"]))
    print(f"validation: max |onnx - torch| (batch x length), atol {validation['atol']:g}, "
          f"{validation['provider']}, {validation['texts']} text:")
    print(format_table(validation["max_abs_diff"], validation["atol"]))
    for name, size in report["sizes"].items():
        print(f"{name}: {size / 1e6:.1f} MB")
    if "int8_quality" in report:
        from zhplm.export.quality import format_quality

        print(format_quality(report["int8_quality"]))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """`zhplm convert`: released checkpoints (TF 1.x, UER-py) to HF directories and back,
    without TensorFlow."""
    import json

    if args.conversion == "tf-list":
        from zhplm.convert.tf_checkpoint import list_variables

        for name, dtype, shape in list_variables(args.prefix):
            print(f"{name}\t{dtype}\t{list(shape)}")
        return 0
    if args.conversion == "tf":
        from zhplm.convert.tf_models import convert_tf

        report = convert_tf(args.checkpoint, args.config, args.out, model=args.model,
                            vocab=args.vocab, lowercase=not args.cased)
    elif args.conversion == "uer2hf":
        from zhplm.convert.uer import uer_to_hf

        report = uer_to_hf(args.input, args.vocab, args.out, layers=args.layers,
                           kind=args.type, heads=args.heads, layer_norm_type=args.layer_norm)
    else:
        from zhplm.convert.uer import hf_to_uer

        report = hf_to_uer(args.model, args.out, kind=args.type)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`zhplm reproduce`: the seeds' tables in miniature on this machine."""
    from zhplm.reproduce import reproduce
    from zhplm.tasks.grid import parse_grid

    reproduce(args.out, budget_minutes=args.budget_minutes, seeds=args.seeds,
              tables=[t.strip() for t in args.tables.split(",") if t.strip()],
              tasks=args.tasks, corpus=args.corpus, resume=args.resume,
              pretrain_tokens=args.pretrain_tokens, full_examples=args.full_examples,
              low_examples=args.low_examples,
              grid=parse_grid(args.grid) if args.grid else None, dry_run=args.dry_run,
              seq_length=args.seq_length, batch_size=args.batch_size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(
        prog="zhplm", description="BERT-family language models, Chinese first."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def inference_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", required=True, help="model directory (HF layout)")
        sub.add_argument("--json", action="store_true", help="print the Python API's output")
        sub.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                         help="auto (default): bf16 where the CPU runs it natively (AMX or "
                              "AVX512-BF16), else fp32; see `zhplm env`. int8: the "
                              "model_int8.onnx of an ONNX export")
        sub.add_argument("--backend", choices=["torch", "onnxruntime"],
                         help="where the model runs (default: onnxruntime for a directory "
                              "from `zhplm export onnx`, else torch)")
        sub.add_argument("--no-truncate", action="store_true",
                         help="refuse text longer than the model's positions instead of "
                              "truncating it with a warning")
        sub.add_argument("text", nargs="+", help="input text(s)")

    sub = verb("init", cmd_init, "create a randomly initialised model directory")
    sub.add_argument("--preset", default="tiny", help="size: tiny, mini, small, medium, base, "
                     "L4-H256 (any of the UER grid), bert-large, lert-small; or an ELECTRA "
                     "pair: electra-tiny, electra-small, electra-small-ex, electra-base, "
                     "electra-large (writes OUT/discriminator/ and OUT/generator/)")
    sub.add_argument("--vocab", required=True, help="vocab.txt, or a directory holding one")
    sub.add_argument("--out", required=True, help="output model directory")
    sub.add_argument("--head", choices=["mlm", "pretraining", "encoder"],
                     help="BERT presets: BertForMaskedLM (mlm, default), BertForPreTraining "
                          "or BertModel")
    sub.add_argument("--generator-hidden-fraction", type=float,
                     help="ELECTRA presets: generator hidden size as a fraction of the "
                          "discriminator's (default 0.25)")
    sub.add_argument("--seed", type=int, default=42)

    sub = verb("fill-mask", cmd_fill_mask, "predict the [MASK] tokens of each text")
    sub.add_argument("--top-k", type=int, default=5, help="predictions per mask")
    sub.add_argument("--targets", nargs="+", help="restrict predictions to these tokens")
    sub.add_argument("--linguistic", action="store_true",
                     help="also predict each mask's POS / NER / DEP label (a LERT model: "
                          "lert_heads.safetensors beside it)")
    inference_options(sub)

    sub = verb("rtd", cmd_rtd, "replaced-token detection with an ELECTRA discriminator")
    sub.add_argument("--threshold", type=float, default=0.5,
                     help="mark tokens whose replaced-probability exceeds this (default 0.5)")
    inference_options(sub)

    sub = verb("embed", cmd_embed, "sentence (or token) vectors for each text")
    sub.add_argument("--pooling", default="mean", choices=["mean", "cls", "none"])
    sub.add_argument("--normalize", action="store_true", help="L2-normalise pooled vectors")
    inference_options(sub)

    sub = verb("build-vocab", cmd_build_vocab, "train a BERT-style WordPiece vocab")
    sub.add_argument("corpus", nargs="*", help="UTF-8 text files (default: built-in corpus)")
    sub.add_argument("--size", type=int, default=21128, help="vocabulary size")
    sub.add_argument("--out", required=True, help="output vocab.txt")
    sub.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    sub.add_argument("--min-frequency", type=int, default=2)

    sub = verb("preprocess", cmd_preprocess, "tokenize corpus files into a dataset directory")
    sub.add_argument("corpus", nargs="*", help="UTF-8 .txt or .jsonl files, directories of "
                     "them (recursive, sorted) or quoted glob patterns like 'data/**/*.txt' "
                     "(default: the built-in corpus)")
    sub.add_argument("--vocab", required=True, help="vocab.txt or a model directory")
    sub.add_argument("--out", required=True, help="output dataset directory; a killed run "
                     "into it resumes from its last finished shard when run again")
    sub.add_argument("--workers", type=int, default=1,
                     help="processes: this one plus WORKERS-1 worker processes")
    sub.add_argument("--segmenter", default="jieba", choices=["jieba", "none"],
                     help="word boundaries for whole-word masking")
    sub.add_argument("--layout", default="auto", choices=["auto", "line", "blank"],
                     help="one document per line, or blank-line separated documents")
    sub.add_argument("--strict", action="store_true",
                     help="stop at the first bad line instead of skipping and counting it")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    sub.add_argument("--shard-tokens", type=int, default=1 << 23, metavar="N",
                     help="start a new shard (at a document boundary) once one holds N "
                          "tokens; a killed run resumes from its last finished shard "
                          "(default 8388608, about 25 MB of Chinese text)")
    sub.add_argument("--annotate", metavar="jieba|conll:PATH",
                     help="LERT's per-token POS/NER/DEP labels: 'jieba' (jieba.posseg; POS "
                          "and NER, no DEP) or 'conll:PATH' (a CoNLL-U/CoNLL-X parse of the "
                          "corpus, one sentence per corpus line or per sentence); word starts "
                          "then follow the annotator's words")

    sub = verb("pretrain", cmd_pretrain, "pre-train a model from a recipe (YAML/JSON)")
    sub.add_argument("--config", help="recipe file, e.g. configs/pretrain/demo.yaml")
    sub.add_argument("--resume", action="store_true",
                     help="continue from the latest checkpoint in output_dir")
    sub.add_argument("--dtype", choices=["auto", "fp32", "bf16"],
                     help="precision (default: the recipe's train.dtype, else auto = bf16 "
                          "where the CPU runs it natively, else fp32)")
    sub.add_argument("overrides", nargs="*", metavar="section.key=value",
                     help="override recipe values, e.g. train.total_steps=100")

    sub = verb("finetune", cmd_finetune, "fine-tune on a task (files or built-in), or a grid")
    sub.add_argument("--task", help="classification, pair, regression, ner, pos, mrc, or a "
                     "built-in task: reviews-sentiment, pd-ner, pd-pos")
    sub.add_argument("--model", help="model directory to start from (HF layout)")
    sub.add_argument("--train", help="training file (.tsv, .jsonl, char-TAG .txt, SQuAD .json)")
    sub.add_argument("--dev", help="dev file: evaluated each epoch, picks the best model")
    sub.add_argument("--test", help="test file: predictions written (scored when labelled)")
    sub.add_argument("--out", help="output directory")
    sub.add_argument("--config", help="YAML/JSON config of FinetuneConfig fields")
    sub.add_argument("--hparams", help="Chinese-ELECTRA style hparams JSON (task_names, "
                     "num_train_epochs, learning_rate, train_batch_size, ...)")
    sub.add_argument("--preset", help="start from a seed's fine-tuning "
                     "defaults: uer = UER-py's run_classifier (lr 2e-5, batch 32, 3 epochs, "
                     "AdamW without bias correction, no clipping)")
    sub.add_argument("--epochs", type=float)
    sub.add_argument("--batch-size", type=int)
    sub.add_argument("--lr", type=float)
    sub.add_argument("--max-seq-length", type=int)
    sub.add_argument("--seed", type=int)
    sub.add_argument("--max-train-examples", type=int, help="use a subset of train")
    sub.add_argument("--dtype", choices=["auto", "fp32", "bf16"],
                     help="precision (default: the config's, else auto = bf16 where the CPU "
                          "runs it natively, else fp32; see `zhplm env`)")
    sub.add_argument("--bf16", action="store_true", help="deprecated: same as --dtype bf16")
    sub.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    sub.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                     help="grid over epochs, batch_size, lr, ... (e.g. lr=3e-5,1e-4)")
    sub.add_argument("--seeds", type=int, default=1, help="seeds per grid cell")
    sub.add_argument("--keep-models", action="store_true",
                     help="keep every grid run's model (default: only scores and predictions)")
    sub.add_argument("--json", action="store_true")
    sub.add_argument("overrides", nargs="*", metavar="key=value",
                     help="any other FinetuneConfig field, e.g. warmup=0.06 early_stopping=2")

    sub = verb("evaluate", cmd_evaluate, "score a prediction file against a gold file")
    sub.add_argument("--task", required=True, choices=["mrc", "ner", "classification"])
    sub.add_argument("--scheme", default="BIO", choices=["BIO", "BIOES"],
                     help="NER tagging scheme of both files")
    sub.add_argument("gold", help="gold file (SQuAD JSON, char-TAG text, TSV/JSON lines)")
    sub.add_argument("predictions", help="predictions ({qid: answer} JSON, char-TAG, TSV)")

    sub = verb("classify", cmd_classify, "label texts with a fine-tuned classifier")
    sub.add_argument("--pair", nargs="+", help="second texts, one per input text")
    sub.add_argument("--top-k", type=int, default=1)
    inference_options(sub)

    sub = verb("ner", cmd_ner, "find entities with a fine-tuned token classifier")
    sub.add_argument("--aggregation", default="simple",
                     choices=["none", "simple", "first", "max", "average"])
    inference_options(sub)

    sub = verb("qa", cmd_qa, "answer questions from a context (extractive QA model)")
    sub.add_argument("--context", help="the context text")
    sub.add_argument("--context-file", help="read the context from a UTF-8 file")
    inference_options(sub)

    sub = verb("serve", cmd_serve, "serve models over HTTP (TEI-style /embed, "
               "/v1/embeddings, /fill-mask, /predict, /ner, /qa, /rtd, /tokenize)")
    sub.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                     help="a model directory (its task from onnx_export.json or config.json "
                          "architectures); repeat to serve several; requests pick one with "
                          "\"model\": NAME (default: the first serving the route's task)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only)")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    sub.add_argument("--backend", choices=["torch", "onnxruntime"])
    sub.add_argument("--max-batch-tokens", type=int, default=16384,
                     help="tokens per model call when batching requests (default 16384)")
    sub.add_argument("--max-batch-requests", type=int, default=32,
                     help="requests per model call (default 32)")
    sub.add_argument("--max-client-batch-size", type=int, default=32,
                     help="inputs per request; more -> 422 (default 32)")
    sub.add_argument("--max-input-length", type=int,
                     help="tokens per input (default: the model's positions); longer inputs "
                          "are truncated (header X-Truncated: true)")
    sub.add_argument("--no-truncate", action="store_true",
                     help="refuse inputs over --max-input-length (422) instead of cutting")
    sub.add_argument("--payload-limit", type=int, default=2_000_000,
                     help="request body bytes; more -> 413 (default 2000000)")
    sub.add_argument("--max-concurrent-requests", type=int, default=512,
                     help="requests in flight; more -> 429 (default 512)")
    sub.add_argument("--api-key", help="require Authorization: Bearer KEY on every route "
                     "but /health and the widget's page (/, /static/*: it asks for the key) "
                     "(default: $ZHPLM_API_KEY, else no key)")

    sub = verb("plot", cmd_plot, "plot loss / accuracy / lr curves of a run to a PNG")
    sub.add_argument("run_dir", help="a run directory with metrics.jsonl")
    sub.add_argument("--out", help="PNG path (default: RUN_DIR/curves.png)")

    sub = verb("env", cmd_env, "show torch, threads, CPU, native bf16 and what dtype auto picks")
    sub.add_argument("--json", action="store_true")

    sub = verb("info", cmd_info, "describe a model directory")
    sub.add_argument("model", help="model directory")
    sub.add_argument("--json", action="store_true")

    sub = verb("export", cmd_export, "export a model directory (ONNX), validated against "
               "PyTorch")
    formats = sub.add_subparsers(dest="format", metavar="FORMAT", required=True)
    sub = formats.add_parser("onnx", help="ONNX graph + config + tokenizer, checked with "
                             "onnxruntime on real text at batch 1/3/8 x length 5/37/128")
    sub.add_argument("--model", required=True, help="model directory (HF layout)")
    sub.add_argument("--out", required=True, help="output directory (written whole)")
    sub.add_argument("--task", choices=["feature-extraction", "fill-mask",
                                        "text-classification", "token-classification",
                                        "question-answering", "replaced-token-detection"],
                     help="graph outputs (default: implied by the directory's architectures; "
                          "a bare encoder -> feature-extraction)")
    sub.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17, >= 14)")
    sub.add_argument("--optimize", default="none", choices=["none", "O1", "O2"],
                     help="onnxruntime transformer fusions (O2 adds more), validated again")
    sub.add_argument("--quantize", choices=["int8"],
                     help="also write model_int8.onnx (dynamic int8 quantization)")
    sub.add_argument("--atol", type=float, default=1e-4,
                     help="largest |onnx - torch| accepted per output (default 1e-4)")
    sub.add_argument("--calibration-text", metavar="FILE",
                     help="with --quantize int8: judge int8 against fp32 on these texts (one "
                          "per line; default: held-out built-in corpus text)")

    sub = verb("reproduce", cmd_reproduce, "miniature versions of the seeds' tables (model "
               "size scaling; objectives at equal compute) on this machine, resumable")
    sub.add_argument("--out", default="runs/reproduce", help="run directory (default "
                     "runs/reproduce)")
    sub.add_argument("--budget-minutes", type=float, default=60.0,
                     help="the whole run's time on this machine (default 60)")
    sub.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per cell")
    sub.add_argument("--tables", default="scaling,objectives",
                     help="scaling, objectives, or both (default)")
    sub.add_argument("--tasks", nargs="+", metavar="DIR",
                     help="builtin (default: reviews-sentiment, pd-ner, pd-pos) or task "
                          "directories in UER-py's layout (train.tsv / dev.tsv / test.tsv, "
                          "or CMRC-style train.json / dev.json)")
    sub.add_argument("--corpus", nargs="+", metavar="FILE",
                     help="pre-training text files (default: the built-in corpus)")
    sub.add_argument("--resume", action="store_true",
                     help="finish the run in --out (its plan.json), reusing what is done")
    sub.add_argument("--pretrain-tokens", type=int,
                     help="the scaling rows' pre-training tokens (default: fitted to the "
                          "budget)")
    sub.add_argument("--full-examples", type=int, default=4000,
                     help="largest training subset of the 'full' columns (cut to fit)")
    sub.add_argument("--low-examples", type=int, default=500,
                     help="training examples of the low-resource columns (default 500)")
    sub.add_argument("--grid", nargs="+", metavar="KEY=V1,V2",
                     help="fine-tuning grid (default lr=1e-3), e.g. lr=3e-4,1e-3 epochs=3,5")
    sub.add_argument("--seq-length", type=int, default=128,
                     help="pre-training sequence length (default 128)")
    sub.add_argument("--batch-size", type=int, default=32,
                     help="pre-training batch size (default 32)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan and stop")

    sub = verb("convert", cmd_convert, "convert released checkpoints (TF 1.x, UER-py) to "
               "Hugging Face directories and back, without TensorFlow")
    kinds = sub.add_subparsers(dest="conversion", metavar="CONVERSION", required=True)
    sub = kinds.add_parser("tf-list", help="list a TF checkpoint's variables (name, dtype, "
                           "shape), like tf.train.list_variables")
    sub.add_argument("prefix", help="checkpoint prefix (PREFIX.index + PREFIX.data-*)")
    sub = kinds.add_parser("tf", help="TF 1.x checkpoint (Google BERT, HFL ELECTRA / LERT) "
                           "-> HF directory")
    sub.add_argument("--checkpoint", required=True, metavar="PREFIX",
                     help="checkpoint prefix, e.g. bert_model.ckpt or electra_small")
    sub.add_argument("--config", required=True, metavar="CONFIG_JSON",
                     help="the released config: bert_config.json, lert_config.json, or "
                          "ELECTRA's discriminator / generator config")
    sub.add_argument("--out", required=True, help="output directory (written whole)")
    sub.add_argument("--model", default="bert",
                     choices=["bert", "electra-discriminator", "electra-generator", "lert"])
    sub.add_argument("--vocab", help="vocab.txt (default: vocab.txt beside the checkpoint)")
    sub.add_argument("--cased", action="store_true",
                     help="a cased vocab (Google's cased English BERT): do not lowercase")
    sub = kinds.add_parser("uer2hf", help="UER-py state dict (model.bin) -> HF directory")
    sub.add_argument("--input", required=True, help="UER-py model.bin")
    sub.add_argument("--vocab", required=True, help="the vocab.txt it was trained with")
    sub.add_argument("--out", required=True, help="output directory (written whole)")
    sub.add_argument("--layers", type=int, required=True, help="transformer layers")
    sub.add_argument("--heads", type=int,
                     help="attention heads (default: hidden size / 64, as UER's miniatures)")
    sub.add_argument("--type", default="mlm", choices=["mlm", "bert"],
                     help="UER target: mlm, or bert (mlm + sentence prediction)")
    sub.add_argument("--layer-norm", default="hf", choices=["hf", "uer"],
                     help="uer: config.json asks zhplm for UER-py's LayerNorm, reproducing "
                          "UER-py exactly (transformers ignores it); default hf")
    sub = kinds.add_parser("hf2uer", help="HF directory -> UER-py state dict (model.bin)")
    sub.add_argument("--model", required=True, help="HF / zhplm model directory")
    sub.add_argument("--out", required=True, help="output model.bin")
    sub.add_argument("--type", default="mlm", choices=["mlm", "bert"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zhplm` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="zhplm: %(levelname)s: %(message)s")
    try:
        return args.handler(args)
    except ZhplmError as exc:
        print(f"zhplm {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zhplm {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
