"""LERT's linguistically-informed pre-training (LIP) schedule."""

import pytest

from zhplm.errors import ConfigError
from zhplm.objectives.lert import LertSection, lip_weight


@pytest.mark.parametrize(("task", "fraction"), [("pos", 1 / 6), ("ner", 1 / 3), ("dep", 1 / 2)])
def test_each_task_ramps_linearly_then_stays_at_one(task, fraction):
    total = 2_000_000  # LERT's run: POS reaches 1 at 333k steps, NER 666k, DEP 1M
    section = LertSection()
    ramp = fraction * total
    at = {step: section.weights(step, total)[f"lambda_{task}"]
          for step in (0, int(ramp // 2), int(round(ramp)), int(ramp) + 1000, total)}
    assert at[0] == 0.0
    assert at[int(ramp // 2)] == pytest.approx(0.5, abs=1e-5)
    assert at[int(round(ramp))] == pytest.approx(1.0, abs=1e-5)
    assert at[int(ramp) + 1000] == 1.0 and at[total] == 1.0


def test_ramp_ends_in_steps_or_fractions_and_errors():
    assert lip_weight(50, 1000, 100) == 0.5  # a step number
    assert lip_weight(50, 1000, 0.1) == 0.5  # a fraction of the run
    section = LertSection(tasks=["pos"], ramp_ends={"pos": 200})
    assert section.weights(100, 10_000) == {"lambda_pos": 0.5}
    with pytest.raises(ConfigError, match="unknown srl"):
        LertSection(tasks=["pos", "srl"])
    # a task left out of ramp_ends keeps LERT's fraction of the run
    assert LertSection(tasks=["dep"], ramp_ends={}).weights(250, 1000) == {"lambda_dep": 0.5}
    with pytest.raises(ConfigError, match="ramp_ends: unknown srl"):
        LertSection(ramp_ends={"srl": 0.5})
    with pytest.raises(ConfigError, match="whole number"):
        LertSection(ramp_ends={"pos": 2.5, "ner": 0.3, "dep": 0.5})
