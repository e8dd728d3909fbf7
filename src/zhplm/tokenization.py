"""BERT WordPiece tokenization: a thin wrapper over the Rust ``tokenizers`` library.

:class:`Tokenizer` builds the same pipeline as ``transformers.BertTokenizer`` (the
tokenizers-backed "fast" BERT tokenizer), so ids, token types, attention masks, offsets and
decoded text agree with it. :func:`build_vocab` trains a WordPiece ``vocab.txt`` laid out like
Google's Chinese BERT vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers.trainers import WordPieceTrainer

from zhplm.errors import CheckpointError, ConfigError, DataError, InputError

__all__ = ["BatchEncoding", "Tokenizer", "build_vocab", "vocab_hash", "SPECIAL_TOKENS"]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
#: Vocabulary head of Google's Chinese BERT: [PAD]=0, [unused1..99]=1..99, [UNK]=100 ... [MASK]=103.
SPECIAL_TOKENS: list[str] = [PAD, *(f"[unused{i}]" for i in range(1, 100)), UNK, CLS, SEP, MASK]
_TRUNCATION = {
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
}
_MAX_INT = 2**31 - 1  # transformers stores "unbounded" as int(1e30); Rust wants a usize

TextInput = str | Sequence[str]


class BatchEncoding(dict):
    """The dict returned by :meth:`Tokenizer.__call__`; ``encodings`` holds the Rust encodings."""

    def __init__(self, data: dict[str, Any], encodings: list[Any]) -> None:
        super().__init__(data)
        self.encodings = encodings


def _bert_pipeline(
    vocab: dict[str, int], lowercase: bool, strip_accents: bool | None, tokenize_chinese_chars: bool
) -> _RustTokenizer:
    tok = _RustTokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenize_chinese_chars,
        strip_accents=strip_accents,
        lowercase=lowercase,
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


class Tokenizer:
    """BERT WordPiece tokenizer equivalent to ``transformers.BertTokenizer``.

    Build it with :meth:`from_pretrained` or :meth:`from_vocab`. ``tokens`` is the vocabulary
    in id order (the lines of ``vocab.txt``); it must contain [PAD] [UNK] [CLS] [SEP] [MASK].
    """

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
        source: str = "the vocabulary",
    ) -> None:
        self._tokens = list(tokens)
        vocab = {t: i for i, t in enumerate(self._tokens)}  # a repeated line: last id wins (HF)
        missing = [t for t in (PAD, UNK, CLS, SEP, MASK) if t not in vocab]
        if missing:
            raise CheckpointError(
                f"{source} lacks the special tokens {missing}; use a BERT "
                "vocab.txt or build one with zhplm.tokenization.build_vocab"
            )
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = min(int(model_max_length), _MAX_INT)
        tok = _bert_pipeline(vocab, lowercase, strip_accents, tokenize_chinese_chars)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
        )
        tok.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in (PAD, UNK, CLS, SEP, MASK)]
        )
        self._tok = tok
        self._lock = threading.Lock()  # guards the truncation/padding state of self._tok

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_vocab(
        cls,
        vocab_path: str | os.PathLike[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
    ) -> Tokenizer:
        """Build a tokenizer from a ``vocab.txt`` file (one token per line, line number = id)."""
        path = Path(vocab_path)
        if not path.is_file():
            raise CheckpointError(
                f"vocab file {path} does not exist; pass the vocab.txt of a "
                "BERT model or build one with zhplm.tokenization.build_vocab"
            )
        try:
            with open(path, encoding="utf-8") as f:
                tokens = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as e:
            raise CheckpointError(
                f"{path} is not UTF-8 (byte {e.start}); re-encode it as UTF-8"
            ) from e
        return cls(
            tokens,
            lowercase=lowercase,
            strip_accents=strip_accents,
            tokenize_chinese_chars=tokenize_chinese_chars,
            model_max_length=model_max_length,
            source=str(path),
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load from a model directory or a ``vocab.txt`` file.

        A directory is read from ``vocab.txt`` + ``tokenizer_config.json`` when both exist,
        else from ``tokenizer.json`` (a BERT WordPiece one), else from ``vocab.txt`` with
        default settings. A bare vocab file uses the :meth:`from_vocab` defaults.
        """
        path = Path(path)
        if path.is_file():
            return cls.from_vocab(path)
        vocab = path / "vocab.txt"
        cfg_file, tok_file = path / "tokenizer_config.json", path / "tokenizer.json"
        if not (vocab.is_file() or tok_file.is_file()):
            what = "has no vocab.txt or tokenizer.json" if path.is_dir() else "does not exist"
            raise CheckpointError(
                f"tokenizer directory {path} {what}; pass a BERT model directory, one written "
                "by Tokenizer.save_pretrained, or a vocab.txt built with build_vocab"
            )
        cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
        max_len = cfg.get("model_max_length") or 512
        if vocab.is_file() and (cfg_file.is_file() or not tok_file.is_file()):
            return cls.from_vocab(
                vocab,
                lowercase=cfg.get("do_lower_case", True),
                strip_accents=cfg.get("strip_accents"),
                tokenize_chinese_chars=cfg.get("tokenize_chinese_chars", True),
                model_max_length=max_len,
            )
        spec = _read_json(tok_file)
        model, norm = spec.get("model") or {}, spec.get("normalizer") or {}
        if model.get("type") != "WordPiece" or norm.get("type") != "BertNormalizer":
            raise CheckpointError(
                f"{tok_file} is not a BERT WordPiece tokenizer (model "
                f"{model.get('type')}, normalizer {norm.get('type')}); "
                "provide a vocab.txt instead"
            )
        ids = model["vocab"]
        tokens = sorted(ids, key=ids.__getitem__)
        if [ids[t] for t in tokens] != list(range(len(tokens))):
            raise CheckpointError(
                f"{tok_file}: vocabulary ids are not 0..{len(tokens) - 1}; "
                "provide a vocab.txt instead"
            )
        return cls(
            tokens,
            lowercase=norm.get("lowercase", True),
            strip_accents=norm.get("strip_accents"),
            tokenize_chinese_chars=norm.get("handle_chinese_chars", True),
            model_max_length=max_len,
            source=str(tok_file),
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        The directory loads with :meth:`from_pretrained` and ``transformers.BertTokenizer``.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        specials = {
            "unk_token": UNK,
            "sep_token": SEP,
            "pad_token": PAD,
            "cls_token": CLS,
            "mask_token": MASK,
        }
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "strip_accents": self.strip_accents,
            "model_max_length": self.model_max_length,
            **specials,
        }
        (out / "vocab.txt").write_text("".join(t + "\n" for t in self._tokens), encoding="utf-8")
        for name, data in [
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", specials),
        ]:
            (out / name).write_text(
                json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        return out

    # ----------------------------------------------------------------- vocabulary
    @property
    def backend(self) -> _RustTokenizer:
        """The underlying ``tokenizers.Tokenizer`` (do not change its truncation/padding)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens in the vocabulary."""
        return self._tok.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id mapping."""
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def mask_token(self) -> str:
        return MASK

    @property
    def pad_token_id(self) -> int:
        return self._tok.token_to_id(PAD)

    @property
    def unk_token_id(self) -> int:
        return self._tok.token_to_id(UNK)

    @property
    def cls_token_id(self) -> int:
        return self._tok.token_to_id(CLS)

    @property
    def sep_token_id(self) -> int:
        return self._tok.token_to_id(SEP)

    @property
    def mask_token_id(self) -> int:
        return self._tok.token_to_id(MASK)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Ids of ``tokens`` (a token or a list); unknown tokens map to the [UNK] id."""
        if isinstance(tokens, str):
            tid = self._tok.token_to_id(tokens)
            return self.unk_token_id if tid is None else tid
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Tokens of ``ids`` (an id or a list); raises InputError for an id outside the vocab."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # type: ignore[union-attr]
        if isinstance(ids, int):
            token = self._tok.id_to_token(ids) if ids >= 0 else None
            if token is None:
                raise InputError(f"token id {ids} is outside the vocabulary (0..{len(self) - 1})")
            return token
        return [self.convert_ids_to_tokens(i) for i in ids]  # type: ignore[misc]

    # ----------------------------------------------------------------- encode / decode
    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(
        self,
        ids: int | Iterable[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        """Text of ``ids`` (list, tensor or array), as ``transformers.BertTokenizer.decode``.

        The WordPiece decoder already joins ``##`` pieces and removes the space before
        ``. , ! ?`` and contractions; ``clean_up_tokenization_spaces=True`` additionally applies
        transformers' ``clean_up_tokenization``.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # type: ignore[union-attr]
        ids = [ids] if isinstance(ids, int) else list(ids)
        text = self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces:
            for a, b in (
                (" .", "."),
                (" ?", "?"),
                (" !", "!"),
                (" ,", ","),
                (" ' ", "'"),
                (" n't", "n't"),
                (" 'm", "'m"),
                (" 's", "'s"),
                (" 've", "'ve"),
                (" 're", "'re"),
            ):
                text = text.replace(a, b)
        return text

    def __call__(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | Literal["longest_first", "only_first", "only_second"] = False,
        max_length: int | None = None,
        padding: bool | Literal["longest", "max_length"] = False,
        return_offsets_mapping: bool = False,
        return_tensors: Literal["pt", "np"] | None = None,
        return_special_tokens_mask: bool = False,
    ) -> BatchEncoding:
        """Encode a text (or pair) or a batch of them, like ``transformers.BertTokenizer``.

        ``text``/``text_pair`` are both strings or both lists of equal length (a batch). Values
        are one list per key for a single text, a list of lists for a batch, or
        ``(batch, length)`` tensors/arrays when ``return_tensors`` is "pt"/"np".
        ``truncation=True`` means "longest_first"; ``max_length`` defaults to
        ``model_max_length`` when truncating or padding to "max_length".
        """
        batched = not isinstance(text, str)
        if batched:
            if not isinstance(text, Sequence) or not all(isinstance(t, str) for t in text):
                raise InputError(f"text must be a str or a list of str, got {type(text).__name__}")
            if text_pair is not None and (
                isinstance(text_pair, str) or len(text_pair) != len(text)
            ):
                raise InputError(
                    "text_pair must be a list of str as long as text "
                    f"({len(text)}) when text is a list"
                )
        elif text_pair is not None and not isinstance(text_pair, str):
            raise InputError("text_pair must be a str when text is a str; pass lists for a batch")
        if truncation not in (False, "do_not_truncate") and truncation not in _TRUNCATION:
            raise InputError(
                f"truncation={truncation!r} is not one of False, True, "
                "'longest_first', 'only_first', 'only_second'"
            )
        if padding not in (False, True, "do_not_pad", "longest", "max_length"):
            raise InputError(
                f"padding={padding!r} is not one of False, True, 'longest', 'max_length'"
            )
        if return_tensors not in (None, "pt", "np"):
            raise InputError(f"return_tensors={return_tensors!r} must be None, 'pt' or 'np'")
        limit = self.model_max_length if max_length is None else max_length

        with self._lock:
            try:
                if truncation in _TRUNCATION:
                    self._tok.enable_truncation(limit, strategy=_TRUNCATION[truncation])
                if padding in (True, "longest", "max_length"):
                    self._tok.enable_padding(
                        pad_id=self.pad_token_id,
                        pad_token=PAD,
                        length=limit if padding == "max_length" else None,
                    )
                if batched:
                    inputs = (
                        list(text) if text_pair is None else list(zip(text, text_pair, strict=True))
                    )
                    encs = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
                else:
                    encs = [
                        self._tok.encode(text, text_pair, add_special_tokens=add_special_tokens)
                    ]
            except Exception as e:  # Rust truncation errors arrive as plain Exception
                if isinstance(e, InputError | TypeError):
                    raise
                raise InputError(
                    f"cannot encode with truncation={truncation!r}, "
                    f"max_length={max_length!r}: {e}; raise max_length or use "
                    "truncation='longest_first'"
                ) from e
            finally:
                self._tok.no_truncation()
                self._tok.no_padding()

        fields = {
            "input_ids": [e.ids for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
            "attention_mask": [e.attention_mask for e in encs],
        }
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = [e.special_tokens_mask for e in encs]
        if return_offsets_mapping:
            fields["offset_mapping"] = [e.offsets for e in encs]
        if return_tensors is not None:
            if len({len(e.ids) for e in encs}) > 1:
                raise InputError(
                    f"return_tensors={return_tensors!r} needs sequences of equal "
                    "length; pass padding=True (or padding='max_length')"
                )
            fields = {k: _to_tensor(v, return_tensors) for k, v in fields.items()}
        elif not batched:
            fields = {k: v[0] for k, v in fields.items()}
        return BatchEncoding(fields, encs)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
            f"model_max_length={self.model_max_length})"
        )


def _to_tensor(rows: list[Any], kind: str) -> Any:
    import numpy as np

    arr = np.asarray(rows, dtype=np.int64)
    if kind == "np":
        return arr
    import torch

    return torch.from_numpy(arr)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}; fix or delete the file") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object; fix or delete the file")
    return data


# --------------------------------------------------------------------- vocabulary training
def _file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file; invalid bytes raise DataError with the byte offset."""
    if not path.is_file():
        raise DataError(
            f"corpus file {path} does not exist; pass existing UTF-8 text files "
            "(to train on strings, pass an iterator such as iter(lines))"
        )
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: invalid UTF-8 at byte offset {offset + e.start} "
                    f"(line {lineno}); re-encode the file as UTF-8, e.g. "
                    "`iconv -f GB18030 -t UTF-8`"
                ) from e
            offset += len(raw)


def build_vocab(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Iterable[str],
    vocab_size: int,
    out: str | os.PathLike[str],
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int | None = None,
    *,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> Path:
    """Train a WordPiece vocabulary and write it to ``out`` (a file, or a directory -> vocab.txt).

    ``files`` is a path or a list/tuple of paths to UTF-8 text files, or any other iterable
    (e.g. a generator) of text strings. Normalization and pre-tokenization are those of
    :class:`Tokenizer`, so every CJK character is its own word. The vocab starts with
    :data:`SPECIAL_TOKENS` (ids 0..103 as in Google's Chinese BERT), then single characters,
    ``##`` characters and merged pieces. ``limit_alphabet=None`` keeps every character seen,
    so all CJK characters are in the vocab; if they do not fit in ``vocab_size`` a
    ConfigError says how large it must be. The file is written atomically.

    Training runs in parallel in Rust and breaks ties between equally frequent merges
    arbitrarily, so the last merged pieces may differ between runs on the same corpus (the
    characters do not); pin a vocab by its file and :func:`vocab_hash`, not by its corpus.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(
            f"vocab_size={vocab_size} leaves no room after the "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least "
            f"{len(SPECIAL_TOKENS) + 1} (21128 for a Google-sized Chinese vocab)"
        )
    if isinstance(files, str | os.PathLike):
        files = [files]
    if isinstance(files, list | tuple):
        paths = [Path(p) for p in files]
        texts: Iterable[str] = (line for p in paths for line in _file_lines(p))
        source = ", ".join(map(str, paths)) or "an empty file list"
    else:
        texts, source = files, "the given texts"

    tok = _bert_pipeline({}, lowercase, strip_accents, tokenize_chinese_chars)
    kwargs: dict[str, Any] = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
        **kwargs,
    )
    tok.train_from_iterator(texts, trainer)
    learned = tok.get_vocab(with_added_tokens=False)
    learned = sorted((t for t in learned if t not in SPECIAL_TOKENS), key=learned.__getitem__)
    if not learned:
        raise DataError(f"no text to train on in {source}; pass non-empty UTF-8 text")
    # Trainer order is chars, ##chars (in hash order), merges; sort the ##chars for stability.
    chars = sorted(t for t in learned if len(t) == 1)
    subchars = sorted(t for t in learned if len(t) == 3 and t.startswith("##"))
    merged = [t for t in learned if len(t) > 1 and not (len(t) == 3 and t.startswith("##"))]
    tokens = SPECIAL_TOKENS + chars + subchars + merged
    excess = len(tokens) - vocab_size
    if excess > 0:  # the trainer never drops characters to respect vocab_size
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for {source}: it has {len(chars)} distinct "
            f"characters ({len(subchars)} more as ## pieces), {len(tokens)} tokens in all; "
            f"use vocab_size >= {len(tokens)}, or limit_alphabet <= "
            f"{max(1, len(chars) - excess)} to keep only the most frequent characters"
        )

    out = Path(out)
    if out.is_dir():
        out = out / "vocab.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".vocab-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(t + "\n" for t in tokens))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def vocab_hash(path: str | os.PathLike[str]) -> str:
    """First 16 hex chars of the sha256 of a vocab file (or of ``<dir>/vocab.txt``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "vocab.txt"
    if not p.is_file():
        raise CheckpointError(f"vocab file {p} does not exist; pass a vocab.txt or its directory")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
