"""ModelConfig <-> config.json and the size presets."""

import json

import pytest

from zhplm.config import PRESETS, UER_HIDDEN, UER_LAYERS, ModelConfig, preset
from zhplm.errors import CheckpointError, ConfigError


def test_uer_grid_has_24_sizes_with_heads_h_over_64_and_ffn_4h():
    grid = [f"L{layers}-H{hidden}" for layers in UER_LAYERS for hidden in UER_HIDDEN]
    assert len(grid) == 24
    for name in grid:
        config = preset(name)
        assert config.num_attention_heads == config.hidden_size // 64
        assert config.intermediate_size == 4 * config.hidden_size
        assert f"L{config.num_hidden_layers}-H{config.hidden_size}" == name


@pytest.mark.parametrize(
    "alias,layers,hidden",
    [("tiny", 2, 128), ("mini", 4, 256), ("small", 4, 512), ("medium", 8, 512),
     ("base", 12, 768), ("bert-large", 24, 1024), ("lert-small", 12, 256)],
)
def test_named_presets(alias, layers, hidden):
    config = preset(alias)
    assert (config.num_hidden_layers, config.hidden_size) == (layers, hidden)
    assert config.hidden_size % config.num_attention_heads == 0
    assert alias in PRESETS


def test_bert_large_and_lert_heads():
    assert preset("bert-large").num_attention_heads == 16
    assert preset("lert-small").num_attention_heads == 4


def test_invalid_head_count_is_a_clear_error():
    with pytest.raises(ConfigError, match="not divisible by num_attention_heads"):
        ModelConfig(hidden_size=100, num_attention_heads=12)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="choose one of.*tiny"):
        preset("huge")


def test_bad_activation_and_sizes():
    with pytest.raises(ConfigError, match="hidden_act"):
        ModelConfig(hidden_act="swish2")
    with pytest.raises(ConfigError, match="vocab_size"):
        ModelConfig(vocab_size=0)


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    config = preset("mini", vocab_size=1234)
    config.extra["id2label"] = {"0": "neg", "1": "pos"}
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "bert" and data["hidden_size"] == 256
    assert data["id2label"] == {"0": "neg", "1": "pos"}
    again = ModelConfig.from_pretrained(tmp_path)
    assert again == config


def test_missing_and_malformed_config_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        ModelConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        ModelConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 100,
                                                      "num_attention_heads": 3}))
    with pytest.raises(ConfigError, match=str(tmp_path / "config.json")):
        ModelConfig.from_pretrained(tmp_path)
