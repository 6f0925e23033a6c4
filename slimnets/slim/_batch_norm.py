"""`batch_norm` for slim graphs, built from core TensorFlow ops.

tf-slim 1.1.0's `batch_norm` cannot run on current TensorFlow: its layer path
imports `tf_keras.legacy_tf_layers` and its fused path checks
`isinstance(x, ops.Tensor)`, an attribute TensorFlow removed.  This module
re-implements the function with the same signature, arg-scope key, variable
names, creation order, collections and numerics, using only `tf.compat.v1`
ops (no Keras of any flavour).

What the reference did, and what this implementation keeps.  tf-slim took
one of three code paths, and the differences between them are visible:

* fused: tf-slim's `_fused_batch_norm`, taken when `fused` (True or None)
  and the input is rank 2 or 4 with no `batch_weights`, `renorm` or
  `adjustment`, and also `zero_debias_moving_mean`, a rank-2 input or custom
  `updates_collections`.  Parameters are float32 (16-bit inputs too);
  `beta` is created before `gamma`; the zero-debias variables are not model
  variables.
* layer: the Keras `BatchNormalization` layer, for the default
  `updates_collections` without `batch_weights` or zero-debias.  `gamma`
  comes before `beta`; 16-bit inputs get float32 parameters and non-fused
  math in float32; the fused kernel only for rank-4 inputs; `renorm`
  (adding `moving_stddev`, `renorm_mean`, `renorm_stddev`) and
  `adjustment` only here.
* legacy: tf-slim's own non-fused code for everything else: parameters in
  the input's dtype, `param_regularizers` ignored, `renorm` refused.

On every path: variables live in `<scope>/BatchNorm/`; every variable
created there is a model variable except on the fused path (the layer and
legacy paths ran under a model-variable getter); the moving statistics are
never trainable and never partitioned, whatever the variable scope's
partitioner.  The fused kernel updates the moving variance with the unbiased
batch variance (n / (n - 1)), the non-fused code with the biased one.
`updates_collections=None` applies the updates before the output is
returned; otherwise `updates_collections` receives what TensorFlow's
`assign_moving_average` returns (or, for an `is_training` tensor, the
outputs of the `tf.cond` that holds the updates).
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

__all__ = [
    'DATA_FORMAT_NHWC', 'DATA_FORMAT_NCHW', 'UPDATE_OPS', 'static_bool',
    'PATH_FUSED', 'PATH_LAYER', 'PATH_LEGACY', 'batch_norm',
]

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


# The three code paths tf-slim 1.1.0's batch_norm took.  They differ in
# variable order, parameter dtype, which variables are model variables and
# whether `param_regularizers` and `renorm` apply.
PATH_FUSED = 'fused'    # tf-slim's own _fused_batch_norm
PATH_LAYER = 'layer'    # the Keras BatchNormalization layer
PATH_LEGACY = 'legacy'  # tf-slim's own non-fused code

_SIXTEEN_BIT = (tf.float16, tf.bfloat16)
_RENORM_CLIPPING_KEYS = ('rmax', 'rmin', 'dmax')


def _choose_path(rank, fused, batch_weights, updates_collections,
                 zero_debias_moving_mean, renorm, adjustment):
    """The code path tf-slim would have taken for these arguments."""
    default_updates = updates_collections == UPDATE_OPS
    can_fuse = (batch_weights is None and not renorm and rank in (2, 4) and
                adjustment is None)
    if fused and can_fuse and (zero_debias_moving_mean or rank == 2 or
                               not default_updates):
        return PATH_FUSED
    if batch_weights is None and default_updates and not zero_debias_moving_mean:
        return PATH_LAYER
    return PATH_LEGACY


def _parameter_dtype(path, input_dtype):
    """tf-slim's fused path and the Keras layer kept 16-bit inputs' parameters
    in float32; its legacy path used the input's dtype."""
    if path == PATH_FUSED:
        return tf.float32
    if path == PATH_LAYER and input_dtype in _SIXTEEN_BIT:
        return tf.float32
    return input_dtype


def _model_variable_getter(getter, name, shape=None, dtype=None,
                           initializer=None, regularizer=None, trainable=True,
                           collections=None, caching_device=None,
                           partitioner=None, use_resource=None,
                           synchronization=tf.VariableSynchronization.AUTO,
                           aggregation=tf.VariableAggregation.NONE, **_):
    """Makes every variable created in its scope a model variable.

    tf-slim's layer and legacy paths ran under such a getter, so the
    zero-debias variables (`biased`, `local_step`) and renorm statistics
    were model variables there too.
    """
    return slim_variables.model_variable(
        name, shape=shape, dtype=dtype, initializer=initializer,
        regularizer=regularizer, collections=collections, trainable=trainable,
        caching_device=caching_device, partitioner=partitioner,
        custom_getter=getter, use_resource=use_resource,
        synchronization=synchronization, aggregation=aggregation)


def _make_params(params_shape, dtype, center, scale, gamma_first,
                 param_initializers, param_regularizers, variables_collections,
                 trainable, renorm=False):
    """Creates beta/gamma/moving statistics in the order tf-slim did.

    The moving statistics (and renorm's) are never partitioned, whatever
    partitioner the enclosing variable scope has; beta and gamma may be.

    Returns:
      dict with 'beta' and 'gamma' (None when not created), 'moving_mean',
      'moving_variance' and, with `renorm`, 'moving_stddev', 'renorm_mean',
      'renorm_stddev'; every variable has shape `params_shape` ([channels]).
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

    params = {}

    def make_beta():
        params['beta'] = make('beta', tf.zeros_initializer(), trainable,
                              regularizers.get('beta')) if center else None

    def make_gamma():
        params['gamma'] = make('gamma', tf.ones_initializer(), trainable,
                               regularizers.get('gamma')) if scale else None

    if gamma_first:
        make_gamma()
        make_beta()
    else:
        make_beta()
        make_gamma()
    with tf.variable_scope(tf.get_variable_scope()) as unpartitioned:
        unpartitioned.set_partitioner(None)
        params['moving_mean'] = make('moving_mean', tf.zeros_initializer(),
                                     False)
        params['moving_variance'] = make('moving_variance',
                                         tf.ones_initializer(), False)
        if renorm:
            variance_initializer = initializers.get('moving_variance',
                                                    tf.ones_initializer())
            mean_initializer = initializers.get('moving_mean',
                                                tf.zeros_initializer())

            def stddev_initializer(*args, **kwargs):
                return tf.sqrt(variance_initializer(*args, **kwargs))

            def make_renorm(name, initializer):
                return slim_variables.model_variable(
                    name, shape=params_shape, dtype=dtype,
                    initializer=initializer, trainable=False)

            params['moving_stddev'] = make_renorm('moving_stddev',
                                                  stddev_initializer)
            params['renorm_mean'] = make_renorm('renorm_mean',
                                                mean_initializer)
            params['renorm_stddev'] = make_renorm('renorm_stddev',
                                                  stddev_initializer)
    return params


def _fused_normalize(inputs, offset, scale, epsilon, data_format, training,
                     mean=None, variance=None, param_dtype=tf.float32):
    """Runs the fused kernel on a rank-2 or rank-4 tensor.

    Rank-2 inputs [N, C] are viewed as [N, 1, 1, C].  In training mode the
    returned variance is the unbiased batch variance.  16-bit inputs keep
    float32 parameters and statistics (the kernel's own mixed precision).

    Returns:
      (outputs with the input's shape and dtype, batch or given mean [C],
      variance [C]).
    """
    channels = inputs.shape[1 if data_format == DATA_FORMAT_NCHW else -1]
    if offset is None:
        offset = tf.zeros([channels], dtype=param_dtype)
    if scale is None:
        scale = tf.ones([channels], dtype=param_dtype)
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
    """variable -= (variable - value) * (1 - decay).

    Returns what tf-slim put in `updates_collections`: TensorFlow's
    `assign_moving_average` result (a tensor-like with `.op` and `.name`).
    """
    return moving_averages.assign_moving_average(
        variable, tf.cast(value, variable.dtype.base_dtype), decay,
        zero_debias=zero_debias)


def _check_renorm_clipping(renorm_clipping):
    clipping = renorm_clipping or {}
    unknown = sorted(set(clipping) - set(_RENORM_CLIPPING_KEYS))
    if unknown:
        raise InputError('renorm_clipping %s contains keys not in %s; use '
                         'only those keys.' % (renorm_clipping,
                                               list(_RENORM_CLIPPING_KEYS)))
    return clipping


def _renorm_correction(params, mean, variance, epsilon, clipping,
                       renorm_decay, training_value, is_training):
    """Batch renormalization (Ioffe 2017) as the Keras layer did it.

    Returns:
      (r, d, mean, variance): the [C] corrections (1 and 0 outside training)
      and the batch moments, which now depend on the renorm-statistics
      updates (`renorm_mean`, `renorm_stddev`, moved with `renorm_decay`).
    """
    stddev = tf.sqrt(variance + epsilon)
    renorm_mean = params['renorm_mean']
    renorm_stddev = tf.maximum(params['renorm_stddev'], np.sqrt(epsilon))
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    with tf.control_dependencies([r, d]):
        mean = tf.identity(mean)
        stddev = tf.identity(stddev)
    if clipping.get('rmin') is not None:
        r = tf.maximum(r, clipping['rmin'])
    if clipping.get('rmax') is not None:
        r = tf.minimum(r, clipping['rmax'])
    if clipping.get('dmax') is not None:
        d = tf.minimum(tf.maximum(d, -clipping['dmax']), clipping['dmax'])

    def in_training(training_fn, inference_fn):
        if training_value is None:
            return tf.cond(is_training, training_fn, inference_fn)
        return training_fn() if training_value else inference_fn()

    r = in_training(lambda: r, lambda: tf.ones_like(r))
    d = in_training(lambda: d, lambda: tf.zeros_like(d))

    def update(variable, value):
        value = tf.identity(value)
        return in_training(
            lambda: tf.convert_to_tensor(_keras_moving_average(
                variable, value, renorm_decay)),
            lambda: tf.identity(variable))

    updated = [update(params['renorm_mean'], mean),
               update(params['renorm_stddev'], stddev)]
    with tf.control_dependencies(updated):
        return r, d, tf.identity(mean), tf.identity(variance)


def _keras_moving_average(variable, value, momentum):
    """The Keras layer's update: variable -= (variable - value) * (1 - momentum)."""
    with tf.name_scope('AssignMovingAvg') as scope:
        decay = tf.cast(1.0 - momentum, variable.dtype.base_dtype)
        delta = (variable - tf.cast(value, variable.dtype.base_dtype)) * decay
        return tf.assign_sub(variable, delta, name=scope)


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
        channels last.  float16/bfloat16 inputs get float32 parameters
        where tf-slim gave them (its fused and Keras-layer paths).
      decay: moving-average decay of the statistics.
      center, scale: whether to create and add `beta` / multiply by `gamma`.
      epsilon: added to the variance.
      activation_fn: applied to the normalized output when not None.
      param_initializers, param_regularizers: dicts keyed by variable name
        ('beta', 'gamma', 'moving_mean', 'moving_variance').  As in tf-slim,
        the regularizers are not applied on its legacy path (custom
        `updates_collections` or `batch_weights` or `zero_debias_moving_mean`
        without the fused kernel).
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
      renorm: batch renormalization (only with the default
        `updates_collections`, no `batch_weights`, no zero-debias); creates
        `moving_stddev`, `renorm_mean` and `renorm_stddev` too.
      renorm_clipping: dict with optional 'rmin', 'rmax', 'dmax' bounds of
        the renorm corrections r and d.
      renorm_decay: moving-average decay of `renorm_mean` / `renorm_stddev`.
      adjustment: function of the input's dynamic shape returning (scale,
        bias) tensors broadcastable to [C], applied after normalization in
        training only.

    Returns:
      A tensor with the shape and dtype of `inputs`.

    Raises:
      InputError (a ValueError): bad `data_format`, unknown rank or channel
        count, bad `renorm_clipping` keys, or `renorm` on tf-slim's legacy
        path.
      EagerExecutionError: called while executing eagerly.
    """
    ensure_graph_mode('slimnets.slim.batch_norm')
    if fused is None:
        fused = True
    inputs = tf.convert_to_tensor(inputs)
    rank = inputs.shape.ndims
    path = _choose_path(rank, fused, batch_weights, updates_collections,
                        zero_debias_moving_mean, renorm, adjustment)
    if data_format not in (DATA_FORMAT_NHWC, DATA_FORMAT_NCHW):
        raise InputError('data_format has to be either NCHW or NHWC, got %r.'
                         % (data_format,))
    if rank is None:
        raise InputError('Inputs %s has undefined rank: batch_norm needs an '
                         'input of known rank (set_shape it).' % inputs.name)
    if rank < 2:
        raise InputError('batch_norm needs an input of rank >= 2 ([batch, '
                         'channels, ...]); %s has rank %d.' % (inputs.name, rank))
    if renorm and path == PATH_LEGACY:
        raise InputError(
            'renorm is not supported with batch_weights, updates_collections '
            'or zero_debias_moving_mean: leave those at their defaults to use '
            'renorm.')
    clipping = _check_renorm_clipping(renorm_clipping) if renorm else {}
    channel_axis = 1 if (data_format == DATA_FORMAT_NCHW and rank > 2) else -1
    channels = inputs.shape[channel_axis]
    if channels is None:
        raise InputError('Inputs %s has undefined channel dimension (shape '
                         '%s): batch_norm needs a known channel count.'
                         % (inputs.name, inputs.shape))

    input_dtype = inputs.dtype.base_dtype
    param_dtype = _parameter_dtype(path, input_dtype)
    # The Keras layer ran the fused kernel only on rank-4 inputs, and not
    # for renorm or an adjustment.
    use_fused_kernel = fused and batch_weights is None and (
        (path == PATH_FUSED) or
        (path == PATH_LAYER and rank == 4 and not renorm and adjustment is None))
    training_value = static_bool(is_training)
    getter = None if path == PATH_FUSED else _model_variable_getter
    if path == PATH_LEGACY:
        param_regularizers = None

    with tf.variable_scope(scope, 'BatchNorm', [inputs], reuse=reuse,
                           custom_getter=getter) as sc:
        params = _make_params(
            [channels], param_dtype, center, scale, path == PATH_LAYER,
            param_initializers, param_regularizers, variables_collections,
            trainable, renorm=renorm)
        beta, gamma = params['beta'], params['gamma']
        moving_mean = params['moving_mean']
        moving_variance = params['moving_variance']
        # Non-fused math on 16-bit inputs runs in the parameters' float32.
        compute_inputs = inputs
        if not use_fused_kernel and input_dtype != param_dtype:
            compute_inputs = tf.cast(inputs, param_dtype)

        def normalize(mean, variance, offset, scale_):
            return _reference_normalize(compute_inputs, offset, scale_,
                                        epsilon, mean, variance, data_format)

        def with_adjustment(offset, scale_):
            """Composes the training-only adjustment into (offset, scale)."""
            if adjustment is None:
                return offset, scale_
            adjust_scale, adjust_bias = adjustment(tf.shape(inputs))
            if training_value is None:
                adjust_scale = tf.cond(is_training, lambda: adjust_scale,
                                       lambda: tf.ones_like(adjust_scale))
                adjust_bias = tf.cond(is_training, lambda: adjust_bias,
                                      lambda: tf.zeros_like(adjust_bias))
            elif not training_value:
                return offset, scale_
            return _compose(adjust_scale, adjust_bias, scale_, offset)

        def normalize_with_batch_statistics():
            if use_fused_kernel:
                return _fused_normalize(inputs, beta, gamma, epsilon,
                                        data_format, training=True,
                                        param_dtype=param_dtype)
            mean, variance = _batch_moments(compute_inputs, data_format,
                                            batch_weights)
            return None, mean, variance

        def normalize_with_moving_statistics():
            if use_fused_kernel:
                outputs, _, _ = _fused_normalize(
                    inputs, beta, gamma, epsilon, data_format, training=False,
                    mean=moving_mean, variance=moving_variance,
                    param_dtype=param_dtype)
                return outputs, moving_mean, moving_variance
            return None, moving_mean, moving_variance

        if use_fused_kernel:
            if training_value is False:
                outputs, mean, variance = normalize_with_moving_statistics()
            elif training_value:
                outputs, mean, variance = normalize_with_batch_statistics()
            else:
                outputs, mean, variance = tf.cond(
                    is_training, normalize_with_batch_statistics,
                    lambda: tuple(tf.identity(t) for t in
                                  normalize_with_moving_statistics()))
        else:
            if training_value is False:
                mean, variance = moving_mean, moving_variance
            elif training_value:
                _, mean, variance = normalize_with_batch_statistics()
            else:
                batch_mean, batch_variance = _batch_moments(
                    compute_inputs, data_format, batch_weights)
                mean, variance = tf.cond(
                    is_training, lambda: (batch_mean, batch_variance),
                    lambda: (tf.identity(moving_mean),
                             tf.identity(moving_variance)))
            # As in the Keras layer: x_hat -> (x_hat * r + d) -> adjustment
            # -> * gamma + beta, composed into one scale and offset.
            offset, scale_ = with_adjustment(beta, gamma)
            if renorm and training_value is not False:
                r, d, mean, variance = _renorm_correction(
                    params, mean, variance, epsilon, clipping, renorm_decay,
                    training_value, is_training)
                offset, scale_ = _compose(tf.stop_gradient(r, name='renorm_r'),
                                          tf.stop_gradient(d, name='renorm_d'),
                                          scale_, offset)
            outputs = normalize(mean, variance, offset, scale_)
            if outputs.dtype.base_dtype != input_dtype:
                outputs = tf.cast(outputs, input_dtype)

        if training_value is not False:
            if renorm:
                outputs = _apply_or_collect_renorm_updates(
                    outputs, params, mean, variance, decay, epsilon,
                    is_training, training_value, updates_collections)
            else:
                outputs = _apply_or_collect_updates(
                    outputs, moving_mean, moving_variance, mean, variance,
                    decay, zero_debias_moving_mean, is_training,
                    training_value, updates_collections)

        if activation_fn is not None:
            outputs = activation_fn(outputs)
        return slim_utils.collect_named_outputs(outputs_collections, sc.name,
                                                outputs)


def _compose(first_scale, first_offset, scale, offset):
    """x * first_scale + first_offset, then * scale + offset, as one transform.

    `scale` / `offset` (gamma / beta) may be None, meaning 1 / 0.

    Returns:
      (offset, scale) of the composed transform.
    """
    if scale is not None:
        first_scale = first_scale * scale
        first_offset = first_offset * scale
    if offset is not None:
        first_offset = first_offset + offset
    return first_offset, first_scale


def _apply_or_collect_renorm_updates(outputs, params, mean, variance, decay,
                                     epsilon, is_training, training_value,
                                     updates_collections):
    """The renorm layer's moving-statistics updates.

    `moving_mean` moves toward the batch mean; `moving_stddev` toward
    sqrt(batch variance + epsilon), and `moving_variance` is set to
    max(moving_stddev^2 - epsilon, 0).
    """
    def mean_update():
        return _keras_moving_average(params['moving_mean'], mean, decay)

    def variance_update():
        stddev = _keras_moving_average(params['moving_stddev'],
                                       tf.sqrt(variance + epsilon), decay)
        stddev = tf.convert_to_tensor(stddev)
        with tf.name_scope('AssignNewValue') as scope:
            return tf.assign(params['moving_variance'],
                             tf.nn.relu(stddev * stddev - epsilon), name=scope)

    if training_value is None:
        update_mean = tf.cond(is_training,
                              lambda: tf.identity(mean_update()),
                              lambda: tf.identity(params['moving_mean']))
        update_variance = tf.cond(
            is_training, lambda: tf.identity(variance_update()),
            lambda: tf.identity(params['moving_variance']))
    else:
        update_mean, update_variance = mean_update(), variance_update()
    if updates_collections is None:
        with tf.control_dependencies([update_mean, update_variance]):
            return tf.identity(outputs)
    tf.add_to_collections(updates_collections, update_mean)
    tf.add_to_collections(updates_collections, update_variance)
    return outputs


def _apply_or_collect_updates(outputs, moving_mean, moving_variance, mean,
                              variance, decay, zero_debias_moving_mean,
                              is_training, training_value,
                              updates_collections):
    """Creates the moving-average updates; returns the (maybe gated) output.

    As in tf-slim: with `updates_collections=None` the output depends on the
    updates; otherwise they go to the collections.  When `is_training` is
    only known at run time the updates sit in a `tf.cond` (inference runs
    none), and the collections hold the cond's outputs.
    """
    def updates():
        return (_assign_moving_average(moving_mean, mean, decay,
                                       zero_debias_moving_mean),
                _assign_moving_average(moving_variance, variance, decay, False))

    if updates_collections is None:
        def forced():
            with tf.control_dependencies(updates()):
                return tf.identity(outputs)

        if training_value is None:
            return tf.cond(is_training, forced, lambda: outputs)
        return forced()
    if training_value is None:
        update_mean, update_variance = tf.cond(
            is_training, updates, lambda: (moving_mean, moving_variance))
    else:
        update_mean, update_variance = updates()
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
