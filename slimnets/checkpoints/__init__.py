"""Published checkpoints: the catalogue, download, restore and inspection."""

from slimnets.checkpoints.registry import CatalogueEntry
from slimnets.checkpoints.registry import cache_dir
from slimnets.checkpoints.registry import catalogue
from slimnets.checkpoints.registry import entry
from slimnets.checkpoints.errors import CheckpointError
from slimnets.checkpoints.identification import Identity
from slimnets.checkpoints.identification import describe
from slimnets.checkpoints.identification import identify
from slimnets.checkpoints.reader import checkpoint_prefix
from slimnets.checkpoints.reader import open_checkpoint
from slimnets.checkpoints.reader import validate_readable
from slimnets.checkpoints.reader import variable_shapes
from slimnets.checkpoints.download import cached_checkpoint
from slimnets.checkpoints.download import extract_archive
from slimnets.checkpoints.download import fetch
from slimnets.checkpoints.download import resolve
from slimnets.checkpoints.inspection import diff
from slimnets.checkpoints.inspection import format_diff
from slimnets.checkpoints.inspection import format_info
from slimnets.checkpoints.inspection import inspect
from slimnets.checkpoints.restoring import RestorePlan
from slimnets.checkpoints.restoring import checked_plan
from slimnets.checkpoints.restoring import init_fn
from slimnets.checkpoints.restoring import plan
from slimnets.checkpoints.restoring import restore
