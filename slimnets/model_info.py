"""What slimnets records beside every checkpoint it writes.

Every checkpoint slimnets writes (recovered from a TFLite file or a frozen
graph, converted from Keras weights, fetched, trained) gets one small JSON
object beside it, so that later commands need not guess what it is:

  network       the nets_factory name ('mobilenet_v1')
  kwargs        the network's keyword arguments ({'depth_multiplier': 0.25})
  image_size    the input size it was trained at, or, for a
                quantization-aware (QAT) checkpoint, the size its ranges
                were calibrated at; null when unknown
  num_classes   the logits' classes
  label_offset  1 when class 0 is slim's background class (the 1001
                ImageNet classes), 0 when class 0 is a real class; null when
                unknown
  input_stats   [mean, std] of a quantized model's integer input (real =
                (q - mean) / std), recorded when recovered from a quantized
                TFLite file; else null
  source        what it was made from, free text

Where: `<prefix>.slimnets.json` beside the checkpoint's `.index`
(`INFO_SUFFIX`: one per checkpoint, so that several can share a folder),
and `model.json` (`FOLDER_FILE`) in a training folder, whose checkpoints
are all one run.  `read(prefix)` tries the first, then the second, which
is also what earlier versions wrote (its first four fields only).

This module is a low layer: it imports only slimnets.errors and
slimnets.fileio, and no TensorFlow.
"""

import collections
import json
import os

from slimnets import fileio
from slimnets.errors import CheckpointError

__all__ = [
    'INFO_SUFFIX', 'FOLDER_FILE', 'FIELDS', 'ModelInfo',
    'label_offset_for', 'info_path', 'folder_path', 'write',
    'write_folder', 'read', 'where',
]

INFO_SUFFIX = '.slimnets.json'
FOLDER_FILE = 'model.json'
FIELDS = ('network', 'kwargs', 'image_size', 'num_classes', 'label_offset',
          'input_stats', 'source')

ModelInfo = collections.namedtuple('ModelInfo', FIELDS)
ModelInfo.__new__.__defaults__ = (None,) * len(FIELDS)


def label_offset_for(num_classes):
    """The label offset slim's convention gives `num_classes` classes: 1
    for 1001 (background first), else 0."""
    return 1 if num_classes == 1001 else 0


def info_path(prefix):
    """The per-checkpoint file of `prefix`: '<prefix>.slimnets.json'."""
    return os.fspath(prefix) + INFO_SUFFIX


def folder_path(folder):
    """The per-folder file of a training folder: '<folder>/model.json'."""
    return os.path.join(os.fspath(folder), FOLDER_FILE)


def _encoded(info):
    record = info._asdict()
    record['kwargs'] = dict(record['kwargs'] or {})
    if record['input_stats'] is not None:
        record['input_stats'] = [float(v) for v in record['input_stats']]
    for key in ('image_size', 'num_classes', 'label_offset'):
        if record[key] is not None:
            record[key] = int(record[key])
    return (json.dumps(record, indent=1, sort_keys=False) + '\n').encode(
        'utf-8')


def write(prefix, info):
    """Writes `info` (a ModelInfo) beside the checkpoint `prefix`,
    atomically; returns the file's path."""
    path = info_path(prefix)
    fileio.write_bytes(path, _encoded(info))
    return path


def write_folder(folder, info):
    """Writes `info` as the `model.json` of a training folder, atomically;
    returns the file's path."""
    path = folder_path(folder)
    fileio.write_bytes(path, _encoded(info))
    return path


def _parse(path):
    try:
        with open(path, 'rb') as handle:
            record = json.loads(handle.read().decode('utf-8'))
    except (OSError, ValueError) as error:  # JSON and Unicode errors too
        raise CheckpointError('%s, the record of what the checkpoint beside '
                              'it is, is damaged (%s); remove it (the '
                              'network is then inferred from the weights) '
                              'or pass --model and --image-size' % (
                                  path, error)) from None
    if not isinstance(record, dict) or not isinstance(
            record.get('network'), str) or not isinstance(
                record.get('kwargs', {}), dict):
        raise CheckpointError('%s, the record of what the checkpoint beside '
                              'it is, is not a slimnets record (no network '
                              'name); remove it or pass --model' % path)
    for key in ('image_size', 'num_classes', 'label_offset'):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, int) or value < 0):
            raise CheckpointError('%s has a %s of %r, not a whole number; '
                                  'remove it or fix it' % (path, key, value))
    return ModelInfo(**{key: record.get(key) for key in FIELDS})


def read(prefix):
    """The ModelInfo recorded for the checkpoint `prefix`, or None.

    Reads `<prefix>.slimnets.json`, else the `model.json` of its folder
    (training folders, and every folder written by earlier versions).

    Raises:
      CheckpointError: the file is there but damaged.
    """
    if prefix is None:
        return None
    prefix = os.fspath(prefix)
    for path in (info_path(prefix), folder_path(os.path.dirname(prefix))):
        if os.path.isfile(path):
            return _parse(path)
    return None


def where(prefix):
    """The path `read(prefix)` reads, or None."""
    if prefix is None:
        return None
    prefix = os.fspath(prefix)
    for path in (info_path(prefix), folder_path(os.path.dirname(prefix))):
        if os.path.isfile(path):
            return path
    return None
