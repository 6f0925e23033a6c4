"""`batch_norm` for slim graphs, built from core TensorFlow ops.

tf-slim 1.1.0's `batch_norm` cannot run on current TensorFlow: its layer path
imports `tf_keras.legacy_tf_layers` and its fused path checks
`isinstance(x, ops.Tensor)`, an attribute TensorFlow removed.  This module
re-implements the function with the same signature, arg-scope key, variable
names, creation order, collections and numerics, using only `tf.compat.v1`
ops (no Keras of any flavour).

What the reference did, and what this implementation keeps:

* Variables live in `<scope>/BatchNorm/` (or the scope given): `beta` when
  `center`, `gamma` when `scale`, `moving_mean`, `moving_variance`.  All are
  model variables; the moving statistics are never trainable.
* Creation order depends on the path tf-slim took.  With the default
  `updates_collections` (UPDATE_OPS), no `batch_weights` and no
  `zero_debias_moving_mean`, tf-slim used a Keras layer, which creates
  `gamma` before `beta`; every other configuration created `beta` first.
  Published checkpoints do not care, but variable lists do.
* The fused kernel (`fused` True or None on rank-2 and rank-4 inputs)
  updates the moving variance with the unbiased batch variance
  (n / (n - 1) Bessel correction); the non-fused path uses the biased one.
* `updates_collections=None` applies the moving-average updates before the
  output is returned; otherwise the update ops go to those collections.
"""

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim

# tensorflow.python.training.moving_averages is the only implementation of
# zero-debiased moving averages (ExponentialMovingAverage uses it too).
from tensorflow.python.training import moving_averages  # pylint: disable=g-direct-tensorflow-import
from tf_slim.layers import utils as slim_utils
from tf_slim.ops import variables as slim_variables

from slimnets.errors import InputError
from slimnets.slim._graph_mode import ensure_graph_mode

DATA_FORMAT_NHWC = 'NHWC'
DATA_FORMAT_NCHW = 'NCHW'
UPDATE_OPS = tf.GraphKeys.UPDATE_OPS


def static_bool(value):
    """The Python bool behind `value`, or None when it is only known at run time.

    Accepts Python/NumPy bools, constant boolean tensors, and anything
    `tf.get_static_value` can fold.  Variables and placeholders give None.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, tf.Variable):
        return None
    if tf.is_tensor(value):
        folded = tf.get_static_value(value)
        return None if folded is None else bool(folded)
    return bool(value)


def _unsupported(option):
    raise NotImplementedError(
        'slimnets.slim.batch_norm does not implement `%s` (tf-slim delegated it '
        'to a Keras layer that no longer exists). Leave `%s` at its default, or '
        'use tf.keras.layers.BatchNormalization in TF2 code.' % (option, option))


def _creates_gamma_first(rank, fused, batch_weights, updates_collections,
                         zero_debias_moving_mean):
    """Whether tf-slim would have built this configuration with its Keras layer.

    That layer created `gamma` before `beta`; tf-slim's own code paths
    created `beta` first.  Matching this keeps `tf.global_variables()`
    identical to the reference, variable for variable.
    """
    uses_default_updates = updates_collections == UPDATE_OPS
    slim_fused_path = fused and rank in (2, 4) and batch_weights is None and (
        zero_debias_moving_mean or rank == 2 or not uses_default_updates)
    return (not slim_fused_path and batch_weights is None and
            uses_default_updates and not zero_debias_moving_mean)


def _make_params(params_shape, dtype, center, scale, gamma_first,
                 param_initializers, param_regularizers, variables_collections,
                 trainable):
    """Creates beta/gamma/moving statistics in the order tf-slim did.

    Returns:
      (beta or None, gamma or None, moving_mean, moving_variance); all
      variables have shape `params_shape` ([channels]).
    """
    initializers = param_initializers or {}
    regularizers = param_regularizers or {}

    def make(name, default_initializer, is_trainable, regularizer=None):
        return slim_variables.model_variable(
            name,
            shape=params_shape,
            dtype=dtype,
            initializer=initializers.get(name, default_initializer),
            regularizer=regularizer,
            collections=slim_utils.get_variable_collections(
                variables_collections, name),
            trainable=is_trainable)

    def make_beta():
        return make('beta', tf.zeros_initializer(), trainable,
                    regularizers.get('beta')) if center else None

    def make_gamma():
        return make('gamma', tf.ones_initializer(), trainable,
                    regularizers.get('gamma')) if scale else None

    if gamma_first:
        gamma = make_gamma()
        beta = make_beta()
    else:
        beta = make_beta()
        gamma = make_gamma()
    moving_mean = make('moving_mean', tf.zeros_initializer(), False)
    moving_variance = make('moving_variance', tf.ones_initializer(), False)
    return beta, gamma, moving_mean, moving_variance


def _fused_normalize(inputs, offset, scale, epsilon, data_format, training,
                     mean=None, variance=None):
    """Runs the fused kernel on a rank-2 or rank-4 tensor.

    Rank-2 inputs [N, C] are viewed as [N, 1, 1, C].  In training mode the
    returned variance is the unbiased batch variance.

    Returns:
      (outputs with the input's shape, batch or given mean, variance).
    """
    channels = inputs.shape[1 if data_format == DATA_FORMAT_NCHW else -1]
    if offset is None:
        offset = tf.zeros([channels], dtype=inputs.dtype.base_dtype)
    if scale is None:
        scale = tf.ones([channels], dtype=inputs.dtype.base_dtype)
    original_shape = None
    if inputs.shape.ndims == 2:
        original_shape = tf.shape(inputs)
        inputs = tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        data_format = DATA_FORMAT_NHWC
    outputs, batch_mean, batch_variance = tf.nn.fused_batch_norm(
        inputs, scale, offset, mean=mean, variance=variance, epsilon=epsilon,
        data_format=data_format, is_training=training)
    if original_shape is not None:
        outputs = tf.reshape(outputs, original_shape)
    return outputs, batch_mean, batch_variance


def _reference_normalize(inputs, offset, scale, epsilon, mean, variance,
                         data_format):
    """`nn.batch_normalization` with [C] statistics broadcast on any rank."""
    rank = inputs.shape.ndims
    if data_format == DATA_FORMAT_NCHW and rank > 2:
        broadcast_shape = [1, -1] + [1] * (rank - 2)

        def expand(value):
            return None if value is None else tf.reshape(value, broadcast_shape)

        mean, variance, offset, scale = map(expand,
                                            (mean, variance, offset, scale))
    return tf.nn.batch_normalization(inputs, mean, variance, offset, scale,
                                     epsilon)


def _batch_moments(inputs, data_format, batch_weights):
    """Biased per-channel mean and variance, each of shape [C]."""
    rank = inputs.shape.ndims
    if data_format == DATA_FORMAT_NCHW and rank > 2:
        axes = [0] + list(range(2, rank))
    else:
        axes = list(range(rank - 1))
    if batch_weights is None:
        return tf.nn.moments(inputs, axes)
    weights = tf.reshape(tf.convert_to_tensor(batch_weights),
                         [-1] + [1] * (rank - 1))
    return tf.nn.weighted_moments(inputs, axes, weights)


def _assign_moving_average(variable, value, decay, zero_debias):
    """variable -= (variable - value) * (1 - decay); returns the update op."""
    if zero_debias:
        return moving_averages.assign_moving_average(
            variable, value, decay, zero_debias=True).op
    with tf.name_scope(None, 'AssignMovingAvg', [variable, value, decay]):
        delta = (variable - tf.cast(value, variable.dtype.base_dtype)) * (
            1.0 - tf.cast(decay, variable.dtype.base_dtype))
        return variable.assign_sub(delta, read_value=False)


def batch_norm(inputs,
                decay=0.999,
                center=True,
                scale=False,
                epsilon=0.001,
                activation_fn=None,
                param_initializers=None,
                param_regularizers=None,
                updates_collections=UPDATE_OPS,
                is_training=True,
                reuse=None,
                variables_collections=None,
                outputs_collections=None,
                trainable=True,
                batch_weights=None,
                fused=None,
                data_format=DATA_FORMAT_NHWC,
                zero_debias_moving_mean=False,
                scope=None,
                renorm=False,
                renorm_clipping=None,
                renorm_decay=0.99,
                adjustment=None):
    """Batch normalization with tf-slim's interface (see module docstring).

    Args:
      inputs: a tensor of rank >= 2 whose channel dimension is known: [N, C],
        [N, H, W, C] (NHWC) or [N, C, H, W] (NCHW), or any rank with the
        channels last.
      decay: moving-average decay of the statistics.
      center, scale: whether to create and add `beta` / multiply by `gamma`.
      epsilon: added to the variance.
      activation_fn: applied to the normalized output when not None.
      param_initializers, param_regularizers: dicts keyed by variable name
        ('beta', 'gamma', 'moving_mean', 'moving_variance').
      updates_collections: where the moving-average update ops go; None runs
        them before the output is returned.
      is_training: Python bool or boolean tensor: batch statistics (True) or
        moving statistics (False).
      reuse, scope: variable-scope reuse and name (default 'BatchNorm').
      variables_collections: extra collections for the variables (a list, or
        a dict keyed by variable name).
      outputs_collections: collections the output is added to.
      trainable: whether beta and gamma are trainable.
      batch_weights: optional [N] weights for the batch moments.
      fused: True/None use the fused kernel where possible; False never does.
      data_format: 'NHWC' or 'NCHW'.
      zero_debias_moving_mean: zero-debias the moving mean.
      renorm, renorm_clipping, renorm_decay, adjustment: not implemented;
        `renorm=True` or an `adjustment` raises NotImplementedError.

    Returns:
      A tensor with the shape of `inputs`.

    Raises:
      ValueError: bad `data_format`, unknown rank or channel count.
      NotImplementedError: `renorm` or `adjustment` requested.
      EagerExecutionError: called while executing eagerly.
    """
    del renorm_clipping, renorm_decay  # Only meaningful with renorm.
    ensure_graph_mode('slimnets.slim.batch_norm')
    if renorm:
        _unsupported('renorm')
    if adjustment is not None:
        _unsupported('adjustment')
    if data_format not in (DATA_FORMAT_NHWC, DATA_FORMAT_NCHW):
        raise InputError('data_format must be "NHWC" or "NCHW", got %r.'
                         % (data_format,))
    if fused is None:
        fused = True

    inputs = tf.convert_to_tensor(inputs)
    rank = inputs.shape.ndims
    if rank is None:
        raise InputError('batch_norm needs an input of known rank; %s has '
                         'unknown rank.' % inputs.name)
    if rank < 2:
        raise InputError('batch_norm needs an input of rank >= 2 ([batch, '
                         'channels, ...]); %s has rank %d.' % (inputs.name, rank))
    channel_axis = 1 if (data_format == DATA_FORMAT_NCHW and rank > 2) else -1
    channels = inputs.shape[channel_axis]
    if channels is None:
        raise InputError('batch_norm needs a known channel dimension; %s has '
                         'shape %s.' % (inputs.name, inputs.shape))

    use_fused_kernel = fused and rank in (2, 4) and batch_weights is None
    gamma_first = _creates_gamma_first(rank, fused, batch_weights,
                                       updates_collections,
                                       zero_debias_moving_mean)
    training_value = static_bool(is_training)

    with tf.variable_scope(scope, 'BatchNorm', [inputs], reuse=reuse) as sc:
        beta, gamma, moving_mean, moving_variance = _make_params(
            [channels], inputs.dtype.base_dtype, center, scale, gamma_first,
            param_initializers, param_regularizers, variables_collections,
            trainable)

        def normalize_with_batch_statistics():
            if use_fused_kernel:
                return _fused_normalize(inputs, beta, gamma, epsilon,
                                        data_format, training=True)
            mean, variance = _batch_moments(inputs, data_format, batch_weights)
            outputs = _reference_normalize(inputs, beta, gamma, epsilon, mean,
                                           variance, data_format)
            return outputs, mean, variance

        def normalize_with_moving_statistics():
            if use_fused_kernel:
                outputs, _, _ = _fused_normalize(
                    inputs, beta, gamma, epsilon, data_format, training=False,
                    mean=moving_mean, variance=moving_variance)
            else:
                outputs = _reference_normalize(inputs, beta, gamma, epsilon,
                                               moving_mean, moving_variance,
                                               data_format)
            return outputs, moving_mean, moving_variance

        if training_value is False:
            outputs, _, _ = normalize_with_moving_statistics()
        else:
            if training_value:
                outputs, mean, variance = normalize_with_batch_statistics()
            else:
                outputs, mean, variance = tf.cond(
                    is_training, normalize_with_batch_statistics,
                    lambda: tuple(
                        tf.identity(t) for t in
                        normalize_with_moving_statistics()))
            outputs = _apply_or_collect_updates(
                outputs, moving_mean, moving_variance, mean, variance, decay,
                zero_debias_moving_mean, is_training, training_value,
                updates_collections)

        if activation_fn is not None:
            outputs = activation_fn(outputs)
        return slim_utils.collect_named_outputs(outputs_collections, sc.name,
                                                outputs)


def _apply_or_collect_updates(outputs, moving_mean, moving_variance, mean,
                              variance, decay, zero_debias_moving_mean,
                              is_training, training_value,
                              updates_collections):
    """Creates the moving-average updates; returns the (maybe gated) output.

    When `is_training` is only known at run time, the updates are still
    created but move the statistics by nothing in inference mode (the
    batch statistics equal the moving ones there), except the zero-debiased
    mean, whose hidden state must not advance: that update sits in a cond.
    """
    def updates():
        return (_assign_moving_average(moving_mean, mean, decay,
                                       zero_debias_moving_mean),
                _assign_moving_average(moving_variance, variance, decay, False))

    if training_value is None and zero_debias_moving_mean:
        def updated_statistics():
            with tf.control_dependencies(updates()):
                return tf.identity(moving_mean), tf.identity(moving_variance)

        update_mean, update_variance = tf.cond(
            is_training, updated_statistics,
            lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
    else:
        update_mean, update_variance = updates()

    if updates_collections is None:
        with tf.control_dependencies([update_mean, update_variance]):
            return tf.identity(outputs)
    tf.add_to_collections(updates_collections, update_mean)
    tf.add_to_collections(updates_collections, update_variance)
    return outputs


def _adopt_arg_scope_key(function, donor):
    """Makes `function` read and answer to `donor`'s arg-scope entries."""
    function._key_op = donor._key_op  # pylint: disable=protected-access
    return function


# The undecorated function takes tf_slim.batch_norm's arg-scope key before
# add_arg_scope sees it, so `arg_scope([tf_slim.batch_norm], ...)` and
# `arg_scope([slimnets.slim.batch_norm], ...)` are one and the same scope.
batch_norm = tf_slim.add_arg_scope(
    _adopt_arg_scope_key(batch_norm, tf_slim.batch_norm))
