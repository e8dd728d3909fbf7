"""LERT's linguistic heads: POS, NER and DEP label of the word a masked token belongs to.

LERT (Cui et al. 2022, ymcui/LERT `run_pretraining.py`) puts three dense layers with bias
(`cls/predictions/output_{pos,ner,dep}_layer`) on the output of the MLM head's shared
transform (`cls.predictions.transform`: dense + gelu + LayerNorm), beside the vocabulary
projection. `transformers`' BERT has no place for them, so a LERT model directory is a plain
BERT (`BertForMaskedLM` loads it) with the heads beside it:

    lert_heads.safetensors   pos.weight [28, H], pos.bias [28], ner.*, dep.* (a task's
                             entries only when it was trained)
    lert_labels.json         {"pos": [28 names], "ner": [13], "dep": [14]}: index = label id

The label order is saved with the heads, so heads trained elsewhere (converted from HFL's TF
checkpoints) map onto names without guessing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor, nn

from zhplm.config import atomic_write_text
from zhplm.errors import CheckpointError
from zhplm.modeling.pretrained import load_weights_file

logger = logging.getLogger("zhplm")
HEADS_FILE = "lert_heads.safetensors"
LABELS_FILE = "lert_labels.json"


def atomic_save_safetensors(state: dict[str, Tensor], path: Path) -> None:
    """safetensors `save_file` through a temp file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp,
                  metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LinguisticHeads(nn.Module):
    """One `nn.Linear(hidden, len(labels))` per task, applied to transformed hidden states.

    `labels` maps each task ("pos", "ner", "dep", in the order given) to its label names.
    """

    def __init__(self, hidden_size: int, labels: dict[str, list[str]],
                 initializer_range: float = 0.02) -> None:
        super().__init__()
        if not labels:
            raise ValueError("LinguisticHeads needs at least one task")
        self.labels = {task: list(names) for task, names in labels.items()}
        self.tasks = nn.ModuleDict({task: nn.Linear(hidden_size, len(names))
                                    for task, names in self.labels.items()})
        for layer in self.tasks.values():  # as LERT's create_initializer: N(0, 0.02)
            nn.init.normal_(layer.weight, std=initializer_range)
            nn.init.zeros_(layer.bias)

    def forward(self, transformed: Tensor) -> dict[str, Tensor]:
        """Logits per task for `transformed` = `cls.predictions.transform(hidden)` rows."""
        return {task: layer(transformed) for task, layer in self.tasks.items()}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write `lert_heads.safetensors` and `lert_labels.json` into `directory`."""
        directory = Path(directory)
        state = {f"{task}.{name}": value for task, layer in self.tasks.items()
                 for name, value in layer.state_dict().items()}
        atomic_save_safetensors(state, directory / HEADS_FILE)
        atomic_write_text(directory / LABELS_FILE,
                          json.dumps(self.labels, ensure_ascii=False, indent=1) + "\n")

    @staticmethod
    def has_heads(directory: str | os.PathLike[str]) -> bool:
        """Whether `directory` holds LERT heads."""
        return (Path(directory) / HEADS_FILE).is_file()

    @classmethod
    def read_labels(cls, directory: str | os.PathLike[str]) -> dict[str, list[str]]:
        """The label names saved beside the heads, checked."""
        path = Path(directory) / LABELS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; LERT heads are saved with their label "
                                  f"names (zhplm pretrain with objectives.lert writes both)")
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(labels, dict) or not labels or not all(
                isinstance(v, list) and v and all(isinstance(n, str) for n in v)
                for v in labels.values()):
            raise CheckpointError(f"{path}: expected {{task: [label names]}}, e.g. "
                                  f'{{"pos": ["n", "v", ...]}}')
        return labels

    def load_weights(self, directory: str | os.PathLike[str], partial: bool = False) -> None:
        """Load the heads saved in `directory` into this module (same tasks and labels).
        `partial`: load the tasks whose labels match, keep the others as they are (warned)."""
        directory = Path(directory)
        labels = self.read_labels(directory)
        if partial:
            shared = [t for t in self.labels if labels.get(t) == self.labels[t]]
            fresh = [t for t in self.labels if t not in shared]
            if fresh:
                logger.warning("%s: no %s head with these labels; %s start%s untrained",
                               directory / LABELS_FILE, "/".join(fresh), "/".join(fresh),
                               "s" if len(fresh) == 1 else "")
            labels = {t: labels[t] for t in shared}
            if not shared:
                return
        elif labels != self.labels:
            raise CheckpointError(
                f"{directory / LABELS_FILE}: tasks/labels {_describe(labels)} differ from this "
                f"run's {_describe(self.labels)}")
        path = directory / HEADS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the LERT heads of this model are saved "
                                  f"there")
        state = load_weights_file(path)
        expected = {f"{t}.{n}": v.shape for t, layer in self.tasks.items() if t in labels
                    for n, v in layer.state_dict().items()}
        problems = [f"{k} missing" for k in expected if k not in state]
        problems += [f"{k} unexpected" for k in state if k not in expected and not partial]
        problems += [f"{k} has shape {tuple(state[k].shape)}, expected {tuple(shape)}"
                     for k, shape in expected.items() if k in state and state[k].shape != shape]
        if problems:
            raise CheckpointError(f"{path}: does not fit {LABELS_FILE} ({'; '.join(problems)})")
        for task, layer in self.tasks.items():
            if task in labels:
                layer.load_state_dict({n: state[f"{task}.{n}"] for n in ("weight", "bias")})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> LinguisticHeads:
        """The heads saved in `directory` (the width is read from the weights)."""
        directory = Path(directory)
        labels = cls.read_labels(directory)
        path = directory / HEADS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {LABELS_FILE} is there but not the heads")
        weight = load_weights_file(path).get(f"{next(iter(labels))}.weight")
        if weight is None or weight.ndim != 2:
            raise CheckpointError(f"{path}: no 2-D {next(iter(labels))}.weight")
        heads = cls(int(weight.shape[1]), labels)
        heads.load_weights(directory)
        return heads


def _describe(labels: dict[str, list[str]]) -> str:
    return ", ".join(f"{task} ({len(names)})" for task, names in labels.items())
