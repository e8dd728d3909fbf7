"""Where a conversion may write: its output directory is replaced as a whole, so it must not
hold the conversion's own inputs or anything that is not a model directory."""

from __future__ import annotations

import os
from pathlib import Path

from zhplm.errors import ConfigError


def check_output_dir(out: str | os.PathLike[str],
                     inputs: list[str | os.PathLike[str]]) -> Path:
    """`out` as a Path; a `ConfigError` when it holds one of `inputs` (a checkpoint, config
    or vocab the conversion reads) or is a non-empty directory that is not a model
    directory (no config.json)."""
    out = Path(out)
    resolved = out.resolve()
    for item in inputs:
        path = Path(item).resolve()
        if path == resolved or path.is_relative_to(resolved):
            raise ConfigError(f"--out {out} holds the input {item}; the output directory is "
                              f"replaced as a whole: pick a new directory")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and
                                               not (out / "config.json").is_file())):
        raise ConfigError(f"--out {out} exists and is not a model directory; pick a new "
                          f"directory (it is replaced as a whole)")
    return out
