"""Writing files so that no reader ever sees half of one: the content goes to a temporary file in
the destination's folder, which is renamed over the destination only when complete."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def replace_atomic(write: Callable[[Path], object], path: str | os.PathLike) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The temporary name ends with ``path``'s name, so writers that pick the format from the suffix
    (``.tif``, ``.nii.gz``, ...) write the right one. On any error the temporary file is removed
    and the destination is left as it was. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return replace_atomic(lambda tmp: tmp.write_text(text), path)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically; ``FileNotFoundError`` if ``src`` is missing."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file to copy")
    return replace_atomic(lambda tmp: shutil.copyfile(src, tmp), dst)


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN and Inf written as ``null``) to ``path`` atomically."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return write_text_atomic(path, json.dumps(clean(dict(data)), indent=2, sort_keys=True) + "\n")
