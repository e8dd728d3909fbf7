"""How fast a tiny model learns sentence relations on the built-in corpus: BERT's NSP against
StructBERT's 3-way sentence order (next / previous / random), MLM beside each, same steps.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sentence_relations.py [--steps 800]

Prints the held-out accuracy and loss of each at four points of the run.
"""

from __future__ import annotations

import argparse
import json
import shutil

from bench_data import CACHE, corpus_and_vocab

VARIANTS = {
    "nsp": {"objectives.nsp": 1.0, "data.kind": "nsp"},
    "sentence_order": {"objectives.sentence_order": 1.0, "data.kind": "sentence_order"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    from zhplm.data.corpus import preprocess
    from zhplm.env import env_line
    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import load_recipe

    print(env_line())
    corpus, vocab = corpus_and_vocab(21128)
    dataset = CACHE / "dataset21128"
    if not (dataset / "meta.json").is_file():
        preprocess([corpus], vocab, dataset, workers=2, overwrite=True)
    print(f"tiny, {args.steps} steps, batch 32 x seq 128, lr 1e-3, fp32, MLM + the objective")
    print("| objective | step | held-out acc | held-out loss | MLM acc |\n|---|---|---|---|---|")
    for name, extra in VARIANTS.items():
        out = CACHE / f"sentence-relations-{name}"
        shutil.rmtree(out, ignore_errors=True)
        settings = {"output_dir": out, "model.preset": "tiny", "data.dataset": dataset,
                    "data.vocab": vocab, "data.seq_length": 128, "data.dev_fraction": 0.02,
                    "data.eval_instances": 512, "masking.strategy": "wwm",
                    "train.batch_size": 32, "train.total_steps": args.steps,
                    "train.report_steps": 50, "train.eval_steps": args.steps // 4,
                    "train.save_checkpoint_steps": 0, "train.progress": "false",
                    "train.dtype": "fp32", "train.optim.lr": 1e-3, "train.optim.warmup": 0.05,
                    "objectives.mlm": 1.0, **extra}
        run_pretraining(load_recipe(PretrainRecipe, None,
                                    [f"{k}={v}" for k, v in settings.items()]))
        for line in (out / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if f"eval_{name}_acc" in record:
                print(f"| {name} | {record['step']} | {record[f'eval_{name}_acc']:.3f} | "
                      f"{record[f'eval_{name}_loss']:.3f} | {record['eval_mlm_acc']:.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()
