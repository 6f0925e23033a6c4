"""`assign_from_checkpoint` that also restores partitioned variables.

tf-slim 1.1.0's version indexes a NumPy array with a *list* of slices to
cut a partition out of the checkpoint value; NumPy 2 rejects that
(IndexError), so restoring any partitioned variable fails.  This one has the
same signature, grouping, placeholders and feed dict, and cuts partitions
with a tuple of slices.
"""

import logging

import tensorflow.compat.v1 as tf
from tf_slim.ops import variables as slim_variables

from slimnets.errors import CheckpointError

__all__ = ['assign_from_checkpoint']

_log = logging.getLogger(__name__)


def _group_by_checkpoint_name(var_list):
    """{checkpoint name: [variables]}; partitions share their full name."""
    if isinstance(var_list, (tuple, list)):
        groups = {}
        for variable in var_list:
            name = slim_variables.get_variable_full_name(variable)
            groups.setdefault(name, []).append(variable)
        return groups
    return {name: list(value) if isinstance(value, (tuple, list)) else [value]
            for name, value in var_list.items()}


def _partition_region(save_slice_info):
    """The tuple of slices a partition covers in the full variable."""
    return tuple(slice(offset, offset + size) for offset, size in
                 zip(save_slice_info.var_offset, save_slice_info.var_shape))


def assign_from_checkpoint(model_path, var_list, ignore_missing_vars=False):
    """An op and a feed dict that load `var_list` from a checkpoint.

    Args:
      model_path: checkpoint prefix (e.g. `tf.train.latest_checkpoint(dir)`).
      var_list: a list of (possibly partitioned) variables, or a dict from
        checkpoint names to a variable or a list of variables (the partitions
        of one checkpoint variable are listed under its full name).
      ignore_missing_vars: log and skip names the checkpoint lacks instead of
        raising.

    Returns:
      (assign op, feed dict {placeholder: numpy value}); run the op with the
      feed dict.  An empty `var_list` gives a no-op and {}.

    Raises:
      CheckpointError (a ValueError): a name is missing from the checkpoint
        (unless ignored) or an unpartitioned variable's shape differs.
    """
    groups = _group_by_checkpoint_name(var_list)
    reader = tf.train.NewCheckpointReader(model_path)
    assign_ops = []
    feed_dict = {}
    for name, variables in groups.items():
        if not reader.has_tensor(name):
            message = 'Checkpoint is missing variable [%s]' % name
            if ignore_missing_vars:
                _log.warning(message)
                continue
            raise CheckpointError(
                '%s in %s. Restore only the variables it has (see '
                'slim.get_variables_to_restore(exclude=...)) or pass '
                'ignore_missing_vars=True.' % (message, model_path))
        value = reader.get_tensor(name)
        for variable in variables:
            placeholder = tf.placeholder(
                variable.dtype.base_dtype, shape=variable.get_shape(),
                name='placeholder/' + variable.op.name)
            assign_ops.append(variable.assign(placeholder))
            slice_info = variable._save_slice_info  # pylint: disable=protected-access
            if slice_info:
                part = value[_partition_region(slice_info)]
                feed_dict[placeholder] = part.reshape(slice_info.var_shape)
                continue
            if variable.get_shape() != value.shape:
                raise CheckpointError(
                    'Total size of new array must be unchanged for %s '
                    'lh_shape: [%s], rh_shape: [%s]: the checkpoint holds a '
                    'differently shaped variable; build the model as it was '
                    'trained or leave this variable out of var_list.'
                    % (name, value.shape, variable.get_shape()))
            feed_dict[placeholder] = value
    return tf.group(*assign_ops), feed_dict
