"""The trainer's evaluation hook: best-model bookkeeping and early stopping."""

from __future__ import annotations

import torch
from torch import nn

from zhplm.training.trainer import TrainConfig, Trainer


class Regression(nn.Module):
    """A one-weight model trained towards 3.0 (loss and summed statistics, as the trainer
    expects)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def normalizers(self, batches):
        return {"n": torch.tensor(float(len(batches)))}

    def forward(self, batch, normalizers):
        loss = ((self.w - batch) ** 2).sum() / normalizers["n"]
        return loss, {"task_loss_sum": loss.detach(), "task_count": torch.tensor(1.0)}


class Source:
    def __init__(self):
        self.position = 0

    def next_step(self, micro_batches):
        self.position += 1
        return [torch.tensor([3.0])] * micro_batches

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def run(tmp_path, scores, patience):
    seen = []
    scores = iter(scores)

    def evaluate():
        return {"score": next(scores)}

    def on_evaluate(step, metrics):
        seen.append((step, metrics["eval_score"]))
        best = max(v for _, v in seen)
        since_best = len(seen) - 1 - [v for _, v in seen].index(best)
        return since_best >= patience

    config = TrainConfig(total_steps=10, batch_size=1, eval_steps=2, save_checkpoint_steps=100,
                         progress=False)
    trainer = Trainer(Regression(), Source(), config, tmp_path, evaluate=evaluate,
                      on_evaluate=on_evaluate)
    trainer.fit()
    return trainer, seen


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    trainer, seen = run(tmp_path, [0.5, 0.7, 0.6, 0.65, 0.9, 0.1], patience=2)
    # best 0.7 at step 4; 0.6 (step 6) and 0.65 (step 8) do not beat it -> stop at step 8
    assert [s for s, _ in seen] == [2, 4, 6, 8]
    assert trainer.step == 8


def test_no_early_stop_when_scores_keep_improving(tmp_path):
    trainer, seen = run(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], patience=2)
    assert trainer.step == 10
    assert [s for s, _ in seen] == [2, 4, 6, 8, 10]
