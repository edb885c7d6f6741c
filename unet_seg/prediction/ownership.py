"""Which files and stores at output names this project wrote, so that predict replaces only its
own and refuses to delete anything else.

An output folder may hold a file or store the user made under one of predict's output names
(``x_labels.tif``, ``x_probs.ome.zarr``, ...). Without ``overwrite=true`` predict replaces only
outputs it can recognise as its own, and refuses the rest with one line before any work.

Recognition is a register, ``.unet-seg-outputs.jsonl`` in the output folder, that a run appends to:

- a ``claim`` line for each output before it is written, so that an output a killed run had
  already renamed into place is still known as ours;
- a ``settled`` line once the input is done (written, or failed and left as it was), with each
  file's size and modification time: a file put in place later by someone else does not match
  and is not ours.
  Directories (zarr stores) are recognised by their name alone.

Outputs listed in the summary's provenance ledger of an older run
(:class:`~unet_seg.prediction.provenance.OutputLedger`) count as ours too. Lines are appended
with one ``write`` in ``O_APPEND`` mode, so several processes sharing a folder never interleave
them; a torn last line (a kill mid-write) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from unet_seg.io.atomic import write_error

log = logging.getLogger(__name__)
REGISTER_NAME = ".unet-seg-outputs.jsonl"


def _identity(path: Path) -> dict | None:
    """Size and modification time of a file; None for a directory (recognised by name)."""
    stat = path.stat()
    if path.is_dir():
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class OutputRegister:
    """The register of ``out_dir`` (see the module docstring).

    Args:
        out_dir: the output folder; paths inside it are kept relative to it, so a moved folder
            keeps its register.
        ledger: older runs' outputs (absolute paths), recognised as ours.
    """

    def __init__(self, out_dir: str | os.PathLike, ledger: Iterable[str] = ()) -> None:
        self.root = Path(out_dir).resolve()
        self.path = Path(out_dir) / REGISTER_NAME
        self.ledger = {str(Path(p)) for p in ledger}

    def _key(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:  # e.g. a label image inside the input's OME-Zarr store
            return str(path)

    def _latest(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return latest
        except (OSError, UnicodeDecodeError) as err:
            log.warning("%s: unreadable (%s): outputs in it count as not ours", self.path, err)
            return latest
        for line in lines:
            try:
                entry = json.loads(line)
                latest[str(entry["path"])] = entry
            except (ValueError, KeyError, TypeError):  # a torn line of a killed run
                continue
        return latest

    def foreign(self, targets: Iterable[Path]) -> list[Path]:
        """The existing ``targets`` this project cannot recognise as its own."""
        latest = self._latest()
        found = []
        for target in map(Path, targets):
            if not (target.exists() or target.is_symlink()):
                continue
            entry = latest.get(self._key(target))
            if entry is None:
                if str(target.resolve()) not in self.ledger:
                    found.append(target)
                continue
            if entry.get("event") == "claim" or target.is_dir():
                continue
            try:
                same = _identity(target) == entry.get("identity")
            except OSError:
                same = False
            if not same:
                found.append(target)
        return found

    def _append(self, entries: list[dict]) -> None:
        if not entries:
            return
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        except OSError as err:
            raise write_error(self.path, err) from err

    def claim(self, targets: Mapping[str, Path]) -> None:
        """Note that this run is about to write ``targets`` (``{kind: path}``)."""
        self._append([{"event": "claim", "path": self._key(p)} for p in targets.values()])

    def settle(self, targets: Mapping[str, Path]) -> None:
        """Note the identity of each of ``targets`` now that this run is done with them."""
        entries = []
        for path in map(Path, targets.values()):
            if path.exists():
                entries.append({"event": "settled", "path": self._key(path),
                                "identity": _identity(path)})  # fmt: skip
        self._append(entries)
