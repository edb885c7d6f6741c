"""Error types that say what kind of problem a user made, so the CLIs can answer with the right
exit code: 2 for a command that cannot work as given, 1 for a file that failed.

Both are ordinary ``ValueError``/``FileNotFoundError`` subclasses: code that catches those keeps
working. This module imports nothing, so every layer may raise them.
"""

from __future__ import annotations


class UsageError(ValueError):
    """The command line or config cannot work as given (an option's value, a missing setting)."""


class InputNotFoundError(FileNotFoundError, UsageError):
    """A path given on the command line does not exist, or holds no files to work on."""


def checkpoint_load_error(path: object, err: BaseException) -> ValueError:
    """A one-line ``ValueError`` naming the checkpoint ``path`` that could not be loaded.

    Torch's message for a refused ``weights_only`` load is paragraphs of advice around one line
    of reason; only that line is kept.
    """
    text = str(err)
    if "Weights only load failed" not in text:
        first = text.strip().splitlines()[0] if text.strip() else ""
        return ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {first})")
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in text.splitlines()]
    reason = " ".join(
        line.replace("WeightsUnpickler error:", "").strip()
        for line in lines
        if line and not line.startswith(advice)
    ).strip()
    if "global" in reason.lower():  # a class or function to import and call: refused
        return ValueError(
            f"{path}: refused: the checkpoint holds objects other than plain values and "
            f"tensors, which could run code when loaded ({reason})"
        )
    return ValueError(f"{path}: not a PyTorch checkpoint ({reason or 'unreadable'})")


class OutputWriteError(OSError):
    """Writing an output file failed (full disk, I/O error, no permission); the message names
    the file, ``errno`` is the system's."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(errno, message)

    def __str__(self) -> str:
        return str(self.strerror)
