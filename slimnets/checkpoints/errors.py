"""The exception every checkpoint problem is reported with (see slimnets.errors)."""

from slimnets.errors import CheckpointError  # noqa: F401  (re-exported)
