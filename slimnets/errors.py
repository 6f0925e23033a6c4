"""The one exception family of slimnets.

Every error slimnets raises on purpose derives from `SlimnetsError`, so a
caller (and the CLI) can catch the whole family with one `except`.  Where
callers traditionally expect a standard type, the class derives from that
type too (`InputError` is also a `ValueError`).  Each message names the
problem and what to do about it.

This module is the lowest layer: it imports nothing from slimnets.
"""

__all__ = [
    'SlimnetsError', 'InputError', 'CheckpointError', 'ExportError',
    'ArgumentTypeError', 'UnknownNameError', 'OutputError', 'UsageError',
    'MissingExtraError', 'QuantizationError', 'StoppedError',
    'ClosedError',
]


class SlimnetsError(Exception):
    """Base class of every error slimnets raises on purpose."""


class InputError(SlimnetsError, ValueError):
    """A bad image, data folder, model name or argument; the message says which."""


class CheckpointError(SlimnetsError, ValueError):
    """A checkpoint cannot be found, read, downloaded or restored.

    The message names the file or variable, what is wrong and what to do.
    """


class ExportError(SlimnetsError, RuntimeError):
    """An export failed or its self-check did not pass."""


class ArgumentTypeError(SlimnetsError, TypeError):
    """An argument of the wrong kind (an unknown option, a bad var_list)."""


class UnknownNameError(SlimnetsError, KeyError):
    """A name that is not in a table (catalogue, labels); lists close ones."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


class OutputError(SlimnetsError, OSError):
    """A file or folder could not be written (full disk, read-only place);
    whatever was at the path before is still there."""


class UsageError(SlimnetsError, ValueError):
    """A command-line value out of its range; the CLI exits with status 2."""


class MissingExtraError(SlimnetsError, ImportError):
    """An optional runtime or exporter is not installed; the message names
    the extra that brings it (`pip install 'slimnets[onnx]'`)."""


class QuantizationError(SlimnetsError, ValueError):
    """A graph cannot be rewritten for quantization, or a quantized model
    cannot be read or written; the message says what and how to fix it."""


class StoppedError(SlimnetsError):
    """Work stopped by a signal (SIGTERM from a scheduler) after saving
    what it had; the message says what was saved and how to resume.
    `exit_status` is the shell's status for that signal (128 + its number,
    143 for SIGTERM), which the CLI exits with."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_status = 128 + signal_number


class ClosedError(SlimnetsError, RuntimeError):
    """An object used after `close()`, or in a forked child process that
    its TensorFlow session does not survive; the message says to create a
    new one."""
