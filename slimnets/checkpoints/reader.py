"""Opening TF1 checkpoints with errors that say what is wrong.

A TF1 checkpoint is a prefix `P` with an index `P.index` and data shards
`P.data-0000i-of-0000n`.  `tf.train.load_checkpoint` reports missing or
damaged files as low-level C++ errors; this module names the file and the
fix instead.
"""

import glob
import os

import tensorflow as tf

from slimnets.errors import CheckpointError

__all__ = [
    'checkpoint_prefix', 'open_checkpoint', 'variable_shapes',
    'read_tensors', 'validate_readable',
]


def checkpoint_prefix(path):
    """The checkpoint prefix that `path` designates.

    Args:
      path: a prefix ('.../model.ckpt'), its '.index' or a '.data-*' file,
        or a directory holding one checkpoint (a `checkpoint` state file or
        exactly one '.index').

    Raises:
      CheckpointError: nothing checkpoint-like is there.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest and os.path.exists(latest + '.index'):
            return latest
        indexes = sorted(glob.glob(os.path.join(path, '*.index')))
        if len(indexes) == 1:
            return indexes[0][:-len('.index')]
        if not indexes:
            raise CheckpointError(
                'No checkpoint in directory %s: it holds no *.index file. '
                'Pass the checkpoint prefix (for example .../model.ckpt).'
                % path)
        raise CheckpointError(
            'Directory %s holds %d checkpoints (%s); pass one prefix.'
            % (path, len(indexes), ', '.join(os.path.basename(i)[:-6]
                                             for i in indexes)))
    if path.endswith('.index'):
        return path[:-len('.index')]
    if '.data-' in os.path.basename(path):
        return path[:path.rindex('.data-')]
    return path


def _data_files(prefix):
    return sorted(glob.glob(glob.escape(prefix) + '.data-*'))


def open_checkpoint(path):
    """Opens a checkpoint for reading.

    Returns:
      (prefix, tf.train.CheckpointReader).

    Raises:
      CheckpointError: the index or data is missing, or the files are not a
        TensorFlow checkpoint.
    """
    prefix = checkpoint_prefix(path)
    index = prefix + '.index'
    if not os.path.exists(index):
        if _data_files(prefix):
            raise CheckpointError(
                'Checkpoint %s has data but no index: %s is missing. Copy the '
                '.index file next to the .data file (both come from the same '
                'save).' % (prefix, index))
        if os.path.isfile(prefix):
            raise CheckpointError(
                '%s is not a TensorFlow checkpoint: a checkpoint is a prefix '
                'with a .index and .data-* files (pass .../model.ckpt, not a '
                'frozen graph, SavedModel or archive).' % prefix)
        raise CheckpointError(
            'No checkpoint at %s: %s does not exist. Check the path, or give '
            'a catalogue name (`slimnets list`).' % (prefix, index))
    if not _data_files(prefix):
        raise CheckpointError(
            'Checkpoint %s has an index but no data: no %s.data-* file. Copy '
            'the .data-00000-of-00001 file next to the index.'
            % (prefix, prefix))
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(
            'Cannot read checkpoint %s: its index is damaged or is not a '
            'TensorFlow checkpoint index (%s). Download or save it again.'
            % (prefix, _first_line(error))) from None
    return prefix, reader


def _first_line(error):
    message = getattr(error, 'message', None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else repr(error)


def variable_shapes(path):
    """{variable name: shape list} of the checkpoint at `path`."""
    _, reader = open_checkpoint(path)
    return {name: list(shape)
            for name, shape in reader.get_variable_to_shape_map().items()}


def read_tensors(reader, prefix, names):
    """Reads `names` from an open checkpoint into NumPy arrays.

    Raises:
      CheckpointError: a tensor cannot be read (a truncated or corrupt data
        file).
    """
    values = {}
    for name in names:
        try:
            values[name] = reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, RuntimeError,
                IndexError) as error:
            raise CheckpointError(
                'Checkpoint %s is damaged: reading %r failed (%s). Its .data '
                'file is truncated or corrupt; download or save it again.'
                % (prefix, name, _first_line(error))) from None
    return values


def validate_readable(path):
    """Reads every tensor once; returns the prefix if all are readable."""
    prefix, reader = open_checkpoint(path)
    read_tensors(reader, prefix, reader.get_variable_to_shape_map())
    return prefix
