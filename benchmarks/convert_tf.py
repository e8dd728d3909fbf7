"""Converting a BERT-base-sized TF 1.x checkpoint to an HF directory: `zhplm convert tf` (numpy
reader, no TensorFlow) vs transformers' `load_tf_weights_in_bert` with TensorFlow, side by
side in one run. Wall time and peak resident memory of each, as a separate process.

The checkpoint is written once by the fixture script (random weights, Google BERT-base's
variable names and shapes: 12 layers, hidden 768, vocab 21128; 412 MB):

    /tmp/tfvenv/bin/python tests/fixtures/make_tf_checkpoints.py --no-fixtures \\
        --bench /tmp/tf-bench/bert-base [--bench-vocab path/to/chinese/vocab.txt]

The peer runs in that throwaway venv, which has tensorflow-cpu, torch==2.13.0 and
transformers 4.x (5.x dropped the TF loaders: `/tmp/tfvenv/bin/pip install torch==2.13.0
"transformers<5"`):

    .venv/bin/python benchmarks/convert_tf.py [--checkpoint /tmp/tf-bench/bert-base]
        [--tf-python /tmp/tfvenv/bin/python] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = r"""
import sys, time
import torch
from transformers import BertConfig, BertForPreTraining
from transformers.models.bert.modeling_bert import load_tf_weights_in_bert
prefix, config_file, out = sys.argv[1:4]
config = BertConfig.from_json_file(config_file)
model = BertForPreTraining(config)
load_tf_weights_in_bert(model, config, prefix)
model.save_pretrained(out)
"""


WRAPPER = (
    "import resource, subprocess, sys\n"
    "result = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stdout.write(result.stdout)\n"
    "sys.stderr.write(result.stderr)\n"
    "sys.stderr.write('\\nMAXRSS_KB=%d\\n' % "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(result.returncode)\n")


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of `command`, run under a fresh wrapper process so
    the peak is this command's alone."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True,
                            text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{result.stderr[-3000:]}")
    peak_kb = int(result.stderr.rsplit("MAXRSS_KB=", 1)[1].split()[0])
    return seconds, peak_kb / 1024, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/tf-bench/bert-base"))
    parser.add_argument("--tf-python", default="/tmp/tfvenv/bin/python")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prefix = args.checkpoint / "bert_model.ckpt"
    config = args.checkpoint / "bert_config.json"
    if not Path(f"{prefix}.index").is_file():
        raise SystemExit(f"{prefix}.index missing: write it with the command in this "
                         f"script's docstring")
    from zhplm.env import env_line

    print(env_line())
    env = dict(os.environ, OMP_NUM_THREADS="2", TF_CPP_MIN_LOG_LEVEL="3")
    rows: dict[str, list[tuple[float, float]]] = {"zhplm convert tf": [],
                                                  "transformers + TensorFlow": []}
    # the peer first and ours second in each round, so neither always gets a warm page cache
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            peer = Path(tmp) / "peer.py"
            peer.write_text(PEER, encoding="utf-8")
            if Path(args.tf_python).exists():
                seconds, peak, _ = run([args.tf_python, str(peer), str(prefix), str(config),
                                        str(Path(tmp) / "hf")], env)
                rows["transformers + TensorFlow"].append((seconds, peak))
            ours = Path(tmp) / "zhplm"
            seconds, peak, out = run([sys.executable, "-m", "zhplm", "convert", "tf",
                                      "--checkpoint", str(prefix), "--config", str(config),
                                      "--out", str(ours)], env)
            report = json.loads(out)
            rows["zhplm convert tf"].append((seconds, peak))
            shutil.rmtree(ours, ignore_errors=True)
    print(f"\nBERT-base-sized checkpoint ({report['parameters'] / 1e6:.1f}M parameters, "
          f"{sum(p.stat().st_size for p in args.checkpoint.glob('*.data-*')) / 1e6:.0f} MB); "
          f"best of {args.repeats} (peak RSS: the largest of the runs)")
    print("| converter | wall s | peak RSS MB |")
    print("|---|---:|---:|")
    for name, runs in rows.items():
        if not runs:
            print(f"| {name} | skipped: {args.tf_python} not found | |")
            continue
        print(f"| {name} | {min(s for s, _ in runs):.1f} | {max(m for _, m in runs):.0f} |")


if __name__ == "__main__":
    main()
