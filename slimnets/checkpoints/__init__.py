"""Published checkpoints: the catalogue, download, restore and inspection."""

from slimnets.checkpoints.cache import cached_checkpoint
from slimnets.checkpoints.download import available_sources
from slimnets.checkpoints.download import extract_archive
from slimnets.checkpoints.download import fetch
from slimnets.checkpoints.download import resolve
from slimnets.checkpoints.download import source_summary
from slimnets.checkpoints.identification import Identity
from slimnets.checkpoints.identification import describe
from slimnets.checkpoints.identification import identify
from slimnets.checkpoints.inspection import diff
from slimnets.checkpoints.inspection import format_diff
from slimnets.checkpoints.inspection import format_info
from slimnets.checkpoints.inspection import inspect
from slimnets.checkpoints.published import CatalogueEntry
from slimnets.checkpoints.published import cache_dir
from slimnets.checkpoints.published import catalogue
from slimnets.checkpoints.published import entry
from slimnets.checkpoints.reader import checkpoint_prefix
from slimnets.checkpoints.reader import open_checkpoint
from slimnets.checkpoints.reader import validate_readable
from slimnets.checkpoints.reader import variable_shapes
from slimnets.checkpoints.restoring import RestorePlan
from slimnets.checkpoints.restoring import checked_plan
from slimnets.checkpoints.restoring import init_fn
from slimnets.checkpoints.restoring import plan
from slimnets.checkpoints.restoring import restore
from slimnets.errors import CheckpointError

__all__ = [
    'CatalogueEntry', 'cache_dir', 'catalogue', 'entry', 'CheckpointError',
    'Identity', 'describe', 'identify', 'checkpoint_prefix',
    'open_checkpoint', 'validate_readable', 'variable_shapes',
    'available_sources', 'cached_checkpoint', 'extract_archive', 'fetch',
    'resolve', 'source_summary', 'diff', 'format_diff', 'format_info',
    'inspect', 'RestorePlan', 'checked_plan', 'init_fn', 'plan', 'restore',
]
