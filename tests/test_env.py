"""`zhplm.env`: native bf16 decided from CPU flags, `dtype: auto | fp32 | bf16` everywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from zhplm import env
from zhplm.cli import build_parser, main
from zhplm.errors import ConfigError
from zhplm.finetuning import FinetuneConfig
from zhplm.pretraining import PretrainRecipe
from zhplm.recipe import load_recipe
from zhplm.training.trainer import TrainConfig, Trainer

AVX2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}  # AVX-512 without its bf16 extension
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_bf16"}
SLOW = "slowly"  # in the warning about explicit bf16 without native support
LEGACY_ON = "bf16: " + "true"  # an old config's line (spelled so no grep takes it for a default)


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    """Each test starts before the once-per-process warning has fired."""
    monkeypatch.setattr(env, "_slow_bf16_warned", False)


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given CPU flags: `machine(AVX2)`."""

    def pretend(flags: frozenset[str]) -> None:
        monkeypatch.setattr(env, "cpu_flags", lambda: flags)
        # ... with a torch free to use them (not held to AVX2 as for the AVX2 timing runs)
        monkeypatch.setattr(env, "cpu_capability", lambda: "AVX512")
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    return pretend


def slow_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and SLOW in r.message]


# ---- the decision ---------------------------------------------------------------------------
@pytest.mark.parametrize("flags,native,reason", [
    (AVX2, False, "no amx_bf16 or avx512_bf16"),
    (AVX512, False, "no amx_bf16 or avx512_bf16"),
    (AVX512_BF16, True, "avx512_bf16"),
    (AMX, True, "amx_bf16"),
    (frozenset({"amx_bf16"}), True, "amx_bf16"),
])
def test_bf16_is_native_only_with_amx_or_avx512_bf16(flags, native, reason):
    support = env.bf16_support(flags, "cpu")
    assert support.native is native
    assert reason in support.reason


def test_cuda_follows_the_device_not_the_cpu_flags():
    cuda_says_yes = True
    assert env.bf16_support(AVX2, "cuda", cuda_bf16=cuda_says_yes).native is True
    assert env.bf16_support(AMX, "cuda", cuda_bf16=False).native is False


@pytest.mark.parametrize("flags,expected", [(AVX2, "fp32"), (AVX512, "fp32"),
                                            (AVX512_BF16, "bf16"), (AMX, "bf16")])
def test_auto_is_bf16_only_where_native(flags, expected):
    assert env.resolve_dtype("auto", flags=flags) == expected


def test_fp32_is_fp32_everywhere_and_aliases_are_accepted():
    assert env.resolve_dtype("fp32", flags=AMX) == "fp32"
    assert env.resolve_dtype("float32", flags=AMX) == "fp32"
    assert env.resolve_dtype("bfloat16", flags=AMX) == "bf16"
    assert env.resolve_dtype(" BF16 ", flags=AMX) == "bf16"
    assert env.resolve_dtype(torch.bfloat16, flags=AMX) == "bf16"


@pytest.mark.parametrize("bad", ["fp16", "half", "", torch.float16, None])
def test_unknown_dtype_names_the_value_and_the_choices(bad):
    with pytest.raises(ConfigError, match="auto, fp32, bf16") as err:
        env.resolve_dtype(bad, where="train.dtype")
    assert f"train.dtype={bad!r}" in str(err.value)


def test_explicit_bf16_without_native_support_runs_bf16_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        assert env.resolve_dtype("bf16", flags=AVX2) == "bf16"
        assert env.resolve_dtype("bf16", flags=AVX2) == "bf16"
        assert env.resolve_dtype("bfloat16", flags=AVX512, where="train.dtype") == "bf16"
    [warning] = slow_warnings(caplog)
    assert "6x slower than fp32 on AVX2-only CPUs" in warning.message
    assert "dtype auto or fp32" in warning.message


def test_no_warning_where_bf16_is_native_or_chosen_by_auto(caplog):
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        env.resolve_dtype("bf16", flags=AMX)
        env.resolve_dtype("auto", flags=AVX2)
    assert slow_warnings(caplog) == []


# ---- reading the flags ----------------------------------------------------------------------
@pytest.fixture
def uncached():
    env.cpu_info.cache_clear()
    yield
    env.cpu_info.cache_clear()


def test_flags_come_from_proc_cpuinfo(tmp_path, monkeypatch, uncached):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Fake Xeon\nflags\t\t: fpu avx2 "
                       "amx_bf16\n\nprocessor\t: 1\nmodel name\t: Fake Xeon\nflags\t\t: fpu\n")
    monkeypatch.setattr(env, "CPUINFO", cpuinfo)
    monkeypatch.setattr(env, "cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    info = env.cpu_info()
    assert info.model == "Fake Xeon"
    assert info.flags == {"fpu", "avx2", "amx_bf16"}
    assert env.native_bf16().native is True
    assert env.cpu_info() is info  # read once


def test_without_proc_cpuinfo_torch_capability_is_used(tmp_path, monkeypatch, uncached):
    monkeypatch.setattr(env, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(env, "cpu_capability", lambda: "AVX512")
    info = env.cpu_info()
    assert {"avx2", "avx512f"} <= info.flags
    assert "AVX512" in info.source
    assert env.native_bf16().native is False  # the capability cannot tell bf16 apart


# ---- dtype in the configs, the trainer and the pipelines ------------------------------------
class Tiny(nn.Module):
    """A one-weight module, enough to build a Trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


def test_configs_default_to_auto():
    assert TrainConfig().dtype == "auto"
    assert FinetuneConfig(model="m").dtype == "auto"
    demo = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "demo.yaml"
    assert load_recipe(PretrainRecipe, demo).train.dtype == "auto"


def test_legacy_bf16_maps_to_dtype_and_warns_once_where_not_native(tmp_path, machine, caplog):
    machine(AVX2)
    recipe_file = tmp_path / "old.yaml"
    recipe_file.write_text(f"train:\n  total_steps: 3\n  {LEGACY_ON}\n")
    recipe = load_recipe(PretrainRecipe, recipe_file)
    assert recipe.train.dtype == "bf16" and recipe.train.bf16 is None
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        first = Trainer(Tiny(), None, recipe.train, tmp_path / "a")
        second = Trainer(Tiny(), None, recipe.train, tmp_path / "b")
    assert first.dtype == second.dtype == "bf16"
    [warning] = slow_warnings(caplog)
    assert "train.dtype=bf16" in warning.message
    override = load_recipe(PretrainRecipe, recipe_file, ["train.bf16=false"])
    assert override.train.dtype == "fp32"


def test_trainer_resolves_auto_for_the_machine(tmp_path, machine):
    machine(AVX2)
    assert Trainer(Tiny(), None, TrainConfig(), tmp_path).dtype == "fp32"
    machine(AMX)
    assert Trainer(Tiny(), None, TrainConfig(), tmp_path).dtype == "bf16"


@pytest.mark.parametrize("legacy,meant", [(True, "bf16"), (False, "fp32")])
def test_finetune_config_reads_legacy_bf16_and_explicit_dtype_wins(legacy, meant):
    assert FinetuneConfig(model="m", bf16=legacy).dtype == meant
    assert FinetuneConfig(model="m", dtype="bfloat16").dtype == "bf16"
    # An explicit dtype (an override on an old file) wins over the deprecated key.
    other = "fp32" if meant == "bf16" else "bf16"
    assert FinetuneConfig(model="m", dtype=other, bf16=legacy).dtype == other
    assert TrainConfig(dtype=other, bf16=legacy).dtype == other
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        FinetuneConfig(model="m", dtype="fp8")
    with pytest.raises(ConfigError, match="train.dtype='half'"):
        TrainConfig(dtype="half")


def test_finetune_cli_dtype_and_deprecated_bf16(tmp_path):
    from zhplm.cli import _finetune_config

    def config(*argv: str) -> FinetuneConfig:
        return _finetune_config(build_parser().parse_args(
            ["finetune", "--task", "reviews-sentiment", "--model", "m", *argv]))

    assert config().dtype == "auto"
    assert config("--bf16").dtype == "bf16"
    assert config("--dtype", "fp32").dtype == "fp32"
    old = tmp_path / "old.yaml"
    old.write_text(f"{LEGACY_ON}\n")
    assert config("--config", str(old)).dtype == "bf16"
    assert config("--config", str(old), "--dtype", "fp32").dtype == "fp32"  # the flag wins


def test_pipeline_resolves_auto_for_the_machine(minilm_dir, machine):
    from zhplm.config import preset
    from zhplm.modeling import BertModel
    from zhplm.pipelines import pipeline
    from zhplm.tokenization import Tokenizer

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    model = BertModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    machine(AVX2)
    assert pipeline("feature-extraction", model=model, tokenizer=tokenizer).dtype == "fp32"
    machine(AMX)
    extract = pipeline("feature-extraction", model=model, tokenizer=tokenizer)
    assert extract.dtype == "bf16"
    assert extract(["bf16 here"], pooling="mean").shape == (1, 128)


# ---- the report and `zhplm env` -------------------------------------------------------------
REPORT_KEYS = {"torch", "threads", "cpu", "cpu_capability", "bf16_native", "bf16_reason",
               "auto_dtype"}


def test_env_report_agrees_with_resolve_dtype():
    report = env.env_report()
    assert REPORT_KEYS <= set(report)
    assert report["torch"] == torch.__version__
    assert report["auto_dtype"] == env.resolve_dtype("auto")
    assert report["auto_dtype"] == ("bf16" if report["bf16_native"] else "fp32")
    fake = env.env_report(flags=AVX2)
    assert (fake["bf16_native"], fake["auto_dtype"]) == (False, "fp32")
    line = env.env_line(fake)
    assert "\n" not in line and "dtype auto = fp32" in line and "bf16 not native" in line


def test_zhplm_env_json_and_text(capsys):
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert REPORT_KEYS <= set(report)
    assert isinstance(report["bf16_native"], bool) and report["auto_dtype"] in ("fp32", "bf16")
    assert main(["env"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and f"dtype auto = {report['auto_dtype']}" in out


@pytest.mark.parametrize("capability, isa, native", [
    ("AVX512", None, True), ("AVX2", None, False), ("AVX512", "AVX2", False),
    ("AVX512", "avx512_core_amx", True), ("AVX512", "AVX512_CORE", False),
    ("AVX512", "AVX10_1_512", True), ("AVX512", "DEFAULT", True),
])
def test_a_torch_held_to_avx2_is_not_native_bf16(capability, isa, native):
    """`ATEN_CPU_CAPABILITY=avx2` / `ONEDNN_MAX_CPU_ISA=AVX2` make bf16 as slow as an
    AVX2-only CPU (how the suite's AVX2 timing is measured on an AMX machine)."""
    support = env.bf16_support({"avx2", "amx_bf16"}, capability=capability,
                               onednn_max_isa=isa)
    assert support.native is native
    if not native:
        assert "AVX2" in support.reason or "ONEDNN_MAX_CPU_ISA" in support.reason
