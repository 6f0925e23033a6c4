"""Labelled images: where they come from, the slim TFRecord format, the
tf.data pipelines that stream them, and `slimnets data build`.

    slimnets.datasets.sources   class folders, TFRecords, research/slim's
                                dataset_dir with a split (`Source`)
    slimnets.datasets.records   the slim TFRecord format: headers, damaged
                                records, streaming, writing an Example
    slimnets.datasets.pipeline  evaluation and training batches (tf.data)
    slimnets.datasets.builder     class folders to TFRecord shards

The names below are the public ones, re-exported from those modules.
"""

from slimnets.datasets.builder import BuildReport
from slimnets.datasets.builder import build
from slimnets.datasets.pipeline import SHUFFLE_BUFFER
from slimnets.datasets.pipeline import evaluation_dataset
from slimnets.datasets.pipeline import evaluation_examples
from slimnets.datasets.pipeline import explain_failure
from slimnets.datasets.pipeline import iterate
from slimnets.datasets.pipeline import shard_size
from slimnets.datasets.pipeline import training_dataset
from slimnets.datasets.records import count_records
from slimnets.datasets.records import damaged_record
from slimnets.datasets.records import read_error
from slimnets.datasets.records import record_files
from slimnets.datasets.records import tf_message
from slimnets.datasets.sources import BUILD_PLAN_FILE
from slimnets.datasets.sources import Source
from slimnets.datasets.sources import class_tree
from slimnets.datasets.sources import evaluation_source
from slimnets.datasets.sources import training_source

__all__ = [
    'BUILD_PLAN_FILE', 'BuildReport', 'SHUFFLE_BUFFER', 'Source', 'build',
    'class_tree', 'count_records', 'damaged_record', 'evaluation_dataset',
    'evaluation_examples', 'evaluation_source', 'explain_failure', 'iterate',
    'read_error', 'record_files', 'shard_size', 'tf_message',
    'training_dataset', 'training_source',
]
