"""ELECTRA-small pre-training throughput: zhplm vs a transformers loop, fp32, seq 128, batch 32.

Real (non-padding) tokens per second and peak RSS of each side, each in its own process (so
the peak is its own), in one run; the ratio zhplm / transformers is printed at the end,
with a Markdown row for docs/benchmarks.md.

Data: the built-in corpus (`zhplm.datasets.write_corpus`), a WordPiece vocab built from it
(~8.3k tokens) padded with unused `[padN]` tokens to 21128 (the size of the Chinese vocab
HFL's ELECTRA uses, so the generator's vocabulary projection costs what it costs there; the
same cache as benchmarks/pretrain_throughput.py), preprocessed by `zhplm.data.corpus.
preprocess`. Instances are built and masked as zhplm's recipe does (`build_epoch`,
full sentences packed to 128 tokens, no short sequences; `PretrainCollator` with ELECTRA's
masking: 15 % of the tokens, at most int((0.15 + 0.005) x 128) = 19, 85 % [MASK], 15 %
kept). The parent process collates all `--warmup + --steps` batches once and both sides
read the *same* batches (collation is timed on neither side; its cost is printed).

zhplm: `ElectraPretrainingPair` (electra-small: discriminator 12 layers / H 256 / 4 heads /
FFN 1024, generator 12 / 64 / 1 / 256, shared 128-wide embeddings) in `PretrainingModule`
with the `electra` objective, stepped by zhplm's own `Trainer._train_step` (forward,
backward, clip_grad_norm_ 1.0, AdamW without bias correction, eps 1e-6, weight decay 0.01
not on bias/LayerNorm, lr 5e-4, ELECTRA's schedule, zero_grad(set_to_none=True)).

transformers: `ElectraForMaskedLM` (generator) + `ElectraForPreTraining` (discriminator),
attn_implementation="sdpa", the generator's `electra.embeddings` replaced by the
discriminator's (tied, as HF's ELECTRA pre-training examples do; the LM head re-tied to the
shared word embeddings). Per step: generator logits at every position -> MLM loss
(`labels` = -100 except at the masked positions, mean); Gumbel-max sample at the masked
positions (temperature 1, no grad); discriminator input = input with the masked positions
replaced by the samples, labels = sample != original; discriminator loss = the model's own
BCE-with-logits mean over non-padding tokens; loss = 1.0 x gen + 50.0 x disc; backward,
clip_grad_norm_ 1.0, `torch.optim.AdamW` (lr 5e-4, eps 1e-6, weight decay 0.01 not on
bias/LayerNorm, torch's CPU default implementation), `get_linear_schedule_with_warmup`,
zero_grad(set_to_none=True).

Both fp32 (no autocast), dropout 0.1, the same initial weights (the zhplm pair's state,
saved by the parent and loaded by each side; HF names = zhplm names), the same torch seed.
Before timing, the script checks that both have the same number of parameters and prints
both sides' first-step losses (not identical: dropout and sampling differ; the generator's
should be ~ln(21128) = 9.96 on both). Tokens/s = real tokens of the timed steps (those
after `--warmup`) / their wall time.

    .venv/bin/python benchmarks/electra_throughput.py [--steps 20] [--warmup 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_data import CACHE, corpus_and_vocab

PRESET = "electra-small"
LR, EPS, WEIGHT_DECAY, MAX_GRAD_NORM, WARMUP = 5e-4, 1e-6, 0.01, 1.0, 0.1
GEN_WEIGHT, DISC_WEIGHT = 1.0, 50.0
DROPOUT = 0.1


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """This process's user + system CPU time (s): less sensitive to other jobs than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ---- data (parent) --------------------------------------------------------------------------
def prepare(vocab_size: int) -> tuple[Path, Path]:
    """Built-in corpus -> vocab (padded to `vocab_size`) -> dataset; cached vocab/corpus."""
    from zhplm.data.corpus import preprocess

    corpus, vocab = corpus_and_vocab(vocab_size)
    dataset = CACHE / f"electra-dataset{vocab_size}"
    if not (dataset / "meta.json").is_file():
        preprocess([corpus], vocab, dataset, workers=2, overwrite=True)
    return vocab, dataset


def make_batches(vocab: Path, dataset: Path, count: int, batch_size: int, seq_length: int,
                 seed: int) -> tuple[list[dict], float, int]:
    """`count` ELECTRA-masked batches, as zhplm's recipe builds them; also the mean collate
    time (s) and the vocab size."""
    from zhplm.data.collate import PretrainCollator
    from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
    from zhplm.data.instances import InstanceConfig, SpecialIds
    from zhplm.data.shards import TokenDataset
    from zhplm.data.stream import InstanceStream
    from zhplm.objectives.electra import ElectraSection
    from zhplm.tokenization import Tokenizer

    tokenizer = Tokenizer.from_pretrained(vocab)
    data = TokenDataset(dataset)
    data.check_vocab(str(vocab), source=str(dataset))
    special = SpecialIds.from_tokenizer(tokenizer)
    config = InstanceConfig("full_sentences", seq_length, 0.0)
    corpus = Corpus(data.shards, DocumentSet(data.num_documents))
    collate = PretrainCollator(ElectraSection().masking(seq_length), special, seed)
    stream = InstanceStream(lambda epoch: build_epoch(corpus, config, special, seed, epoch),
                            collate, batch_size, 0, 1)
    stream.next_step(1)  # builds the epoch's instances (not part of the collate time)
    stream.load_state_dict({"epoch": 0, "position": 0})
    batches, start = [], time.perf_counter()
    for _ in range(count):
        (batch,) = stream.next_step(1)
        batches.append({k: getattr(batch, k) for k in (
            "input_ids", "token_type_ids", "attention_mask", "mlm_positions", "mlm_labels",
            "mlm_uniforms", "num_tokens")})
    return batches, (time.perf_counter() - start) / count, tokenizer.vocab_size


def electra_configs(vocab_size: int, pad_id: int):  # noqa: ANN201
    from zhplm.config import electra_preset

    return electra_preset(PRESET, vocab_size=vocab_size, pad_token_id=pad_id,
                          max_position_embeddings=512, hidden_dropout_prob=DROPOUT,
                          attention_probs_dropout_prob=DROPOUT)


# ---- the two sides (children) ---------------------------------------------------------------
def run_zhplm(work: Path, args: argparse.Namespace) -> dict:
    import torch

    from zhplm.data.collate import PretrainBatch
    from zhplm.modeling.electra import ElectraPretrainingPair
    from zhplm.objectives.electra import ElectraSection
    from zhplm.objectives.pretraining import PretrainingModule, build_objectives
    from zhplm.training.optim import OptimConfig
    from zhplm.training.trainer import TrainConfig, Trainer

    meta = json.loads((work / "meta.json").read_text())
    raw = torch.load(work / "batches.pt", weights_only=True)
    batches = [PretrainBatch(**b, sentence_labels=None) for b in raw]
    pair = ElectraPretrainingPair(*electra_configs(meta["vocab_size"], meta["pad_id"]))
    state = torch.load(work / "init.pt", weights_only=True)
    pair.discriminator.load_state_dict(state["discriminator"])
    pair.generator.load_state_dict(state["generator"])
    del state
    section = ElectraSection(gen_weight=GEN_WEIGHT, disc_weight=DISC_WEIGHT)
    module = PretrainingModule(pair.train(), build_objectives({"electra": 1.0}, section))
    total = len(batches)
    config = TrainConfig(
        total_steps=total, batch_size=len(raw[0]["input_ids"]), dtype="fp32",
        optim=OptimConfig(lr=LR, eps=EPS, weight_decay=WEIGHT_DECAY, bias_correction=False,
                          warmup=WARMUP, schedule="electra", max_grad_norm=MAX_GRAD_NORM),
        seed=args.seed, save_checkpoint_steps=0, report_steps=10**9, progress=False)

    class Source:  # the trainer's BatchSource over the pre-collated batches
        position = 0

        def next_step(self, micro_batches: int) -> list[PretrainBatch]:
            out = batches[self.position:self.position + micro_batches]
            self.position += micro_batches
            return out

        def state_dict(self) -> dict[str, int]:
            return {"position": self.position}

        def load_state_dict(self, value: dict[str, int]) -> None:
            self.position = value["position"]

    trainer = Trainer(module, Source(), config, work / "zhplm-run")
    torch.manual_seed(args.seed)
    rss_before = peak_mb()
    times, cpu, first = [], [], {}
    for step in range(total):
        start, start_cpu = time.perf_counter(), cpu_s()
        stats = trainer._train_step()  # exactly the trainer's step
        trainer.step += 1
        trainer._accumulate(stats)  # as Trainer.fit does (float() of each statistic)
        times.append(time.perf_counter() - start)
        cpu.append(cpu_s() - start_cpu)
        if step == 0:
            first = {"gen_loss": float(stats["gen_loss_sum"] / stats["gen_count"]),
                     "disc_loss": float(stats["disc_loss_sum"] / stats["disc_count"]),
                     "loss": float(stats["loss_sum"])}
    return {"times": times, "cpu": cpu, "first": first, "params": pair.num_parameters(),
            "rss_before_mb": rss_before}


def hf_models(meta: dict):  # noqa: ANN201
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    disc_cfg, gen_cfg = electra_configs(meta["vocab_size"], meta["pad_id"])

    def hf_config(c) -> ElectraConfig:  # noqa: ANN001
        return ElectraConfig(
            vocab_size=c.vocab_size, embedding_size=c.embedding_size, hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
            hidden_dropout_prob=c.hidden_dropout_prob,
            attention_probs_dropout_prob=c.attention_probs_dropout_prob,
            max_position_embeddings=c.max_position_embeddings,
            type_vocab_size=c.type_vocab_size, layer_norm_eps=c.layer_norm_eps,
            pad_token_id=c.pad_token_id, initializer_range=c.initializer_range)

    disc = ElectraForPreTraining._from_config(hf_config(disc_cfg), attn_implementation="sdpa")
    gen = ElectraForMaskedLM._from_config(hf_config(gen_cfg), attn_implementation="sdpa")
    # Tie the generator's embeddings to the discriminator's (one module), and its LM head
    # to the shared word embeddings.
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    return disc, gen


def run_transformers(work: Path, args: argparse.Namespace) -> dict:
    import torch
    import transformers
    from torch import nn

    transformers.logging.set_verbosity_error()
    meta = json.loads((work / "meta.json").read_text())
    batches = torch.load(work / "batches.pt", weights_only=True)
    disc, gen = hf_models(meta)
    state = torch.load(work / "init.pt", weights_only=True)
    loaded = {}
    for name, model in (("discriminator", disc), ("generator", gen)):
        result = model.load_state_dict(state[name], strict=False)
        loaded[name] = {"missing": list(result.missing_keys),
                        "unexpected": list(result.unexpected_keys)}
    del state
    assert gen.generator_lm_head.weight is disc.electra.embeddings.word_embeddings.weight
    models = nn.ModuleDict({"discriminator": disc, "generator": gen}).train()
    named = list(models.named_parameters())  # shared tensors once
    params = [p for _, p in named]
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)],
         "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, eps=EPS, weight_decay=WEIGHT_DECAY)
    total = len(batches)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(WARMUP * total), total)
    torch.manual_seed(args.seed)
    rss_before = peak_mb()
    times, cpu, first = [], [], {}
    for step, batch in enumerate(batches):
        start, start_cpu = time.perf_counter(), cpu_s()
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        positions, originals = batch["mlm_positions"], batch["mlm_labels"]
        labels = torch.full_like(input_ids, -100)
        labels.view(-1)[positions] = originals
        gen_out = gen(input_ids=input_ids, attention_mask=attention,
                      token_type_ids=batch["token_type_ids"], labels=labels)
        with torch.no_grad():  # Gumbel-max sample at the masked positions, temperature 1
            logits = gen_out.logits.detach().flatten(0, 1)[positions].float()
            uniform = torch.rand_like(logits).clamp_(1e-9, 1.0 - 1e-9)
            sampled = (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)
            corrupted = input_ids.clone()
            corrupted.view(-1)[positions] = sampled
            replaced = torch.zeros_like(input_ids)
            replaced.view(-1)[positions] = (sampled != originals).long()
        disc_out = disc(input_ids=corrupted, attention_mask=attention,
                        token_type_ids=batch["token_type_ids"], labels=replaced)
        loss = GEN_WEIGHT * gen_out.loss + DISC_WEIGHT * disc_out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu.append(cpu_s() - start_cpu)
        if step == 0:
            first = {"gen_loss": float(gen_out.loss), "disc_loss": float(disc_out.loss),
                     "loss": float(loss)}
    return {"times": times, "cpu": cpu, "first": first, "params": sum(p.numel() for p in params),
            "loaded": loaded, "rss_before_mb": rss_before}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    runner = run_zhplm if args.child == "zhplm" else run_transformers
    result = runner(work, args)
    result["peak_mb"] = peak_mb()
    print(json.dumps(result))


# ---- main -----------------------------------------------------------------------------------
def summarise(result: dict, tokens: list[int], warmup: int) -> dict:
    timed = result["times"][warmup:]
    result["step_s"] = sum(timed) / len(timed)
    result["cpu_step_s"] = sum(result["cpu"][warmup:]) / len(timed)
    result["tokens_per_s"] = sum(tokens[warmup:]) / sum(timed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=21128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", choices=("zhplm", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from zhplm.env import env_line
    from zhplm.modeling.electra import ElectraPretrainingPair

    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    vocab, dataset = prepare(args.vocab_size)
    total = args.warmup + args.steps
    batches, collate_s, n_vocab = make_batches(vocab, dataset, total, args.batch_size,
                                               args.seq_length, args.seed)
    tokens = [int(b["num_tokens"]) for b in batches]
    predicted = sum(len(b["mlm_positions"]) for b in batches) / sum(tokens)
    work = Path(tempfile.mkdtemp(prefix="zhplm-electra-bench-"))
    torch.save(batches, work / "batches.pt")
    from zhplm.tokenization import Tokenizer

    pad_id = Tokenizer.from_pretrained(vocab).pad_token_id
    (work / "meta.json").write_text(json.dumps({"vocab_size": n_vocab, "pad_id": pad_id}))
    torch.manual_seed(args.seed)
    pair = ElectraPretrainingPair(*electra_configs(n_vocab, pad_id))
    torch.save({"discriminator": pair.discriminator.state_dict(),
                "generator": pair.generator.state_dict()}, work / "init.pt")
    del pair

    print(env_line())
    print(f"CPU: {cpu_model()}; load average (1/5 min) {os.getloadavg()[0]:.2f}/"
          f"{os.getloadavg()[1]:.2f}")
    print(f"torch {torch.__version__}; {args.threads} threads; {PRESET}, fp32, batch "
          f"{args.batch_size} x seq {args.seq_length}, vocab {n_vocab}; {args.warmup} warm-up "
          f"+ {args.steps} timed steps; {sum(tokens[args.warmup:]) / args.steps:.0f} real "
          f"tokens/step, {100 * predicted:.1f} % of them masked; collate (not timed): "
          f"{1000 * collate_s:.1f} ms/batch")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results = {}
    for system in ("transformers", "zhplm"):
        cmd = [sys.executable, __file__, "--child", system, "--work", str(work),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        before = os.getloadavg()[0]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if system == "zhplm":
            shutil.rmtree(work, ignore_errors=True)
        if done.returncode:
            shutil.rmtree(work, ignore_errors=True)
            sys.exit(f"{system} failed:\n{done.stderr[-4000:]}")
        results[system] = summarise(json.loads(done.stdout.strip().splitlines()[-1]), tokens,
                                    args.warmup)
        results[system]["load"] = f"{before:.2f} -> {os.getloadavg()[0]:.2f}"

    ours, theirs = results["zhplm"], results["transformers"]
    print(f"\nparameters: zhplm {ours['params']:,}, transformers {theirs['params']:,} "
          f"({'equal' if ours['params'] == theirs['params'] else 'DIFFERENT'})")
    for name, report in theirs["loaded"].items():
        print(f"  transformers {name} load_state_dict(zhplm's, strict=False): missing "
              f"{report['missing'] or 'none'}; unexpected {report['unexpected'] or 'none'}")
    print(f"first-step losses (ln(vocab) = {math.log(n_vocab):.3f}):")
    for system, result in results.items():
        f = result["first"]
        print(f"  {system:12s} gen {f['gen_loss']:.4f}  disc {f['disc_loss']:.4f}  total "
              f"{f['loss']:.4f}")
    print()
    for system, result in results.items():
        print(f"{system:12s} step {1000 * result['step_s']:7.1f} ms (CPU time "
              f"{1000 * result['cpu_step_s']:.0f} ms)  "
              f"{result['tokens_per_s']:7.0f} tokens/s  peak RSS {result['peak_mb']:6.0f} MB "
              f"(before the first step {result['rss_before_mb']:.0f} MB); load {result['load']}")
    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
    print(f"ratio zhplm / transformers: {ratio:.2f}x tokens/s, "
          f"{theirs['cpu_step_s'] / ours['cpu_step_s']:.2f}x by CPU time per step, "
          f"{ours['peak_mb'] / theirs['peak_mb']:.2f}x peak RSS")
    print("\n| model | dtype | batch x seq | threads | transformers tok/s | zhplm tok/s | ratio "
          "| transformers peak MB | zhplm peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {PRESET} | fp32 | {args.batch_size} x {args.seq_length} | {args.threads} | "
          f"{theirs['tokens_per_s']:.0f} | {ours['tokens_per_s']:.0f} | {ratio:.2f}x | "
          f"{theirs['peak_mb']:.0f} | {ours['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
