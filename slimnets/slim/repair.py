"""In-place repairs of the installed `tf_slim` package.

Two levels:

* `repair_tf_slim_modules()` runs when `slimnets.slim` is imported, because
  `slimnets.slim` re-exports these tf_slim modules and they must work: the
  arg-scope stack becomes per thread (`arg_scope_stack`), the TensorFlow
  names tf_slim reads from their old homes are supplied (`tf_compat`:
  `tfexample_decoder`, metrics, `learning`'s gradient helpers, ...), and
  `tf_slim.learning` gets a Supervisor whose service threads run in graph
  mode (`supervisor`).  None of this changes a call that worked before.
* `repair_tf_slim()` is opt-in, for pipelines that cannot change
  `import tf_slim as slim` (third-party code, old scripts): it applies the
  above and also makes `tf_slim.batch_norm` (and the same function under
  `tf_slim.layers`) and `tf_slim.assign_from_checkpoint` the working
  implementations, and fixes
  `tf_slim.layers.utils.constant_value`, which still tests
  `isinstance(x, ops.Tensor)`.

Nothing happens on a plain `import slimnets`.
"""

import logging

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim
from tf_slim import layers as slim_layers
from tf_slim import learning as slim_learning
from tf_slim.layers import layers as slim_layers_impl
from tf_slim.layers import utils as slim_utils
from tf_slim.ops import arg_scope as slim_arg_scope
from tf_slim.ops import variables as slim_variables

from slimnets.errors import InputError
from slimnets.slim import arg_scope_stack
from slimnets.slim import supervisor
from slimnets.slim import tf_compat
from slimnets.slim._batch_norm import batch_norm
from slimnets.slim.variables import assign_from_checkpoint

__all__ = [
    'TF_SLIM_BATCH_NORM', 'constant_value', 'repair_tf_slim_modules',
    'tf_slim_is_broken', 'is_repaired', 'repair_tf_slim',
]

_log = logging.getLogger(__name__)

# tf_slim's own batch_norm, kept before any repair swaps it: its fused and
# legacy code paths work once the module repairs are in, and tests use
# them as the reference.
TF_SLIM_BATCH_NORM = slim_layers_impl.batch_norm


def constant_value(value_or_tensor_or_var, dtype=None):
    """tf_slim's `constant_value`, without the removed `ops.Tensor`.

    Returns the value of a Python value, a constant tensor or None when it
    is only known at run time (a variable or a placeholder).
    """
    if value_or_tensor_or_var is None:
        raise InputError('value_or_tensor_or_var cannot be None')
    value = value_or_tensor_or_var
    if isinstance(value, tf.Variable):
        return None
    if tf.is_tensor(value):
        if dtype and not dtype.is_compatible_with(value.dtype):
            raise InputError('The type of value_or_tensor_or_var must be %s, '
                             'got %s' % (dtype, value.dtype))
        value = tf.get_static_value(value)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
    return value


def repair_tf_slim_modules():
    """Makes the imported tf_slim modules work on this TensorFlow; idempotent.

    Returns:
      True if anything was changed, False if everything was already repaired.
    """
    changed = arg_scope_stack.install(slim_arg_scope)
    changed = bool(tf_compat.repair_loaded_tf_slim_modules()) or changed
    changed = supervisor.repair_learning(slim_learning) or changed
    return changed


def tf_slim_is_broken():
    """Whether the installed tf_slim's `batch_norm` fails to build.

    Returns:
      (broken, reason): reason is the error tf_slim raised, or ''.
    """
    with tf.Graph().as_default():
        try:
            tf_slim.batch_norm(tf.zeros([2, 3, 3, 4]))
            tf_slim.batch_norm(tf.zeros([2, 4]), updates_collections=None)
        except Exception as error:  # pylint: disable=broad-except
            return True, '%s: %s' % (type(error).__name__, error)
    return False, ''


def is_repaired():
    """Whether `repair_tf_slim()` has been applied in this process."""
    return tf_slim.batch_norm is batch_norm


def repair_tf_slim():
    """Repairs the imported `tf_slim` in place; safe to call more than once.

    Applies `repair_tf_slim_modules()` (already done when `slimnets.slim`
    was imported; see the module docstring), then: `tf_slim.batch_norm`,
    `tf_slim.layers.batch_norm` and
    `tf_slim.layers.layers.batch_norm` are `slimnets.slim.batch_norm`, which
    shares tf_slim's arg-scope key, so existing arg scopes keep applying.

    Returns:
      True if something was changed, False if it was already repaired.
    """
    modules_changed = repair_tf_slim_modules()
    if is_repaired():
        return modules_changed
    for module in (tf_slim, slim_layers, slim_layers_impl):
        module.batch_norm = batch_norm
    slim_utils.constant_value = constant_value
    for module in (tf_slim, slim_variables):
        module.assign_from_checkpoint = assign_from_checkpoint
    _log.info('tf_slim repaired in place: batch_norm, assign_from_checkpoint '
              'and constant_value now come from slimnets.slim.')
    return True
