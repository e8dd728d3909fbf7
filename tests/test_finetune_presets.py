"""The `uer` fine-tuning preset: UER-py's run_classifier defaults and AdamW conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zhplm.cli import main
from zhplm.config import preset
from zhplm.errors import ConfigError
from zhplm.finetuning import FINETUNE_PRESETS, build_trainer, load_config, run_finetune
from zhplm.modeling import BertForMaskedLM
from zhplm.tokenization import Tokenizer
from zhplm.training.checkpoint import latest_checkpoint, load_training_state


def test_uer_preset_holds_uer_py_defaults_and_yields_to_files_and_overrides(tmp_path):
    cfg = load_config(None, ["task=reviews-sentiment"], preset="uer")
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.max_seq_length, cfg.warmup, cfg.seed) == \
        (2e-5, 32, 3.0, 128, 0.1, 7)
    assert (cfg.bias_correction, cfg.max_grad_norm, cfg.weight_decay) == (False, 0.0, 0.01)
    plain = load_config(None, ["task=reviews-sentiment"])
    assert (plain.bias_correction, plain.max_grad_norm) == (True, 1.0)
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("task: reviews-sentiment\nlr: 1.0e-4\n")
    cfg = load_config(config_file, ["batch_size=64"], preset="uer")
    assert (cfg.lr, cfg.batch_size, cfg.bias_correction) == (1e-4, 64, False)
    cfg = build_trainer(task="reviews-sentiment", preset="uer", lr=3e-4).config
    assert (cfg.lr, cfg.max_grad_norm) == (3e-4, 0.0)
    with pytest.raises(ConfigError, match="preset='hf'.*uer"):
        load_config(None, ["task=reviews-sentiment"], preset="hf")
    assert set(FINETUNE_PRESETS) == {"uer"}


def test_uer_preset_trains_with_adamw_without_bias_correction(zh_vocab_dir, tmp_path,
                                                               capsys):
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        model_dir, tokenizer=tokenizer)
    out = tmp_path / "run"
    code = main(["finetune", "--preset", "uer", "--task", "reviews-sentiment", "--model",
                 str(model_dir), "--out", str(out), "--epochs", "1", "--max-train-examples",
                 "96", "--max-seq-length", "48", "max_eval_examples=64", "progress=false",
                 "dtype=fp32"])
    assert code == 0
    state = load_training_state(latest_checkpoint(Path(out)))
    optimizer_state = state["optimizer"]["state"]
    # BertAdamW (no bias correction) runs torch's fused kernel with its step count pinned at
    # 2^40, where both corrections are exactly 1; a bias-corrected AdamW counts steps from 1.
    assert optimizer_state and all(
        set(s) == {"exp_avg", "exp_avg_sq", "step"} and float(s["step"]) == 2.0**40
        for s in optimizer_state.values())
    assert {group["initial_lr"] for group in state["optimizer"]["param_groups"]} == {2e-5}
    # Resuming that run under the other convention is refused, naming the setting.
    code = main(["finetune", "--task", "reviews-sentiment", "--model", str(model_dir), "--out",
                 str(out), "--epochs", "2", "--resume", "--max-train-examples", "96",
                 "--max-seq-length", "48", "max_eval_examples=64", "progress=false",
                 "dtype=fp32"])
    assert code == 2
    assert "bias_correction=False (now True)" in capsys.readouterr().err
    results = run_finetune(load_config(None, [f"model={model_dir}", "task=reviews-sentiment",
                                              f"output_dir={tmp_path / 'plain'}",
                                              "epochs=1", "max_train_examples=96",
                                              "max_eval_examples=64", "max_seq_length=48",
                                              "progress=false", "dtype=fp32"]))
    assert "dev" in results
    plain = load_training_state(latest_checkpoint(tmp_path / "plain"))["optimizer"]["state"]
    assert all("step" in s for s in plain.values())


def test_preset_under_a_config_file_and_refused_for_a_config_object(tmp_path):
    from zhplm.finetuning import FinetuneConfig

    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("task: reviews-sentiment\nlr: 1.0e-4\n")
    cfg = build_trainer(str(config_file), preset="uer").config
    assert (cfg.lr, cfg.bias_correction, cfg.max_grad_norm, cfg.seed) == (1e-4, False, 0.0, 7)
    with pytest.raises(ConfigError, match="FinetuneConfig object sets them all"):
        build_trainer(FinetuneConfig(task="reviews-sentiment"), preset="uer")
