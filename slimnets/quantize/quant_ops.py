"""Fake-quantization ops with learned ranges, as tf.contrib.quantize made them.

Each op lives in its own variable scope `<name_prefix>` holding two scalar
(or per-channel) variables `min` and `max`.  Weights use the last batch's
range (`LastValueQuantize`); activations an exponential moving average of
the batch ranges (`MovingAvgQuantize`, decay 0.999, zero-debiased as
`assign_moving_average` does by default, which adds `min/biased`,
`min/local_step`, `max/biased` and `max/local_step`).  Ranges always
contain 0.  In eval graphs the variables are only read.
"""

import tensorflow.compat.v1 as tf

__all__ = ['LastValueQuantize', 'MovingAvgQuantize']

_MIN_WIDTH = 1e-6


def _range_variable(name, shape, init, collection):
    collections = [tf.GraphKeys.GLOBAL_VARIABLES]
    if collection and collection not in collections:
        collections.append(collection)
    return tf.get_variable(name, shape=shape, dtype=tf.float32,
                           initializer=tf.constant_initializer(init),
                           collections=collections, trainable=False)


def _batch_range(inputs, per_channel, symmetric, num_bits, narrow_range):
    """The batch's [min, max] widened to contain 0 (or made symmetric)."""
    if per_channel:
        axes = list(range(inputs.shape.ndims - 1))
        batch_min = tf.reduce_min(inputs, axis=axes, name='BatchMin')
        batch_max = tf.reduce_max(inputs, axis=axes, name='BatchMax')
    else:
        batch_min = tf.reduce_min(inputs, name='BatchMin')
        batch_max = tf.reduce_max(inputs, name='BatchMax')
    if symmetric:
        # min = -max * levels_below_zero / levels_above_zero
        ratio = -1.0 if narrow_range else \
            -((1 << num_bits) - 2) / float(1 << num_bits)
        range_min = tf.minimum(batch_min, batch_max / ratio)
        range_max = tf.maximum(batch_max, batch_min * ratio)
    else:
        range_min = tf.minimum(batch_min, 0.0)
        range_max = tf.maximum(batch_max, 0.0)
    # An all-zero batch (a dead layer) must not collapse the range to
    # [0, 0]: the fake-quant kernel would divide by its zero width.
    return range_min, tf.maximum(range_max, range_min + _MIN_WIDTH)


def _assign_zero_debiased_average(variable, value, decay, name):
    """`assign_moving_average(variable, value, decay)` as TF1 made it
    (zero-debiased, its shadow variables named as TF1 named them), without
    its per-variable scan of the graph's variables.

    biased <- biased - (biased - value) * (1 - decay);  step <- step + 1
    variable <- biased / (1 - decay ** step)

    Returns:
      the updated value of `variable`.
    """
    with tf.variable_scope(variable.op.name):
        shadows = [tf.get_variable(
            shadow, shape=shape, dtype=variable.dtype.base_dtype,
            initializer=tf.zeros_initializer(), trainable=False,
            collections=[tf.GraphKeys.GLOBAL_VARIABLES])
            for shadow, shape in (('biased', variable.shape),
                                  ('local_step', []))]
    biased, local_step = shadows
    with tf.name_scope(name):
        rate = tf.constant(1.0 - decay, variable.dtype.base_dtype,
                           name='decay')
        updated = tf.assign_sub(biased, (biased - value) * rate)
        step = tf.assign_add(local_step, 1.0)
        factor = 1.0 - tf.pow(1.0 - rate, step)
        return tf.assign(variable, updated / factor)


def _fake_quant(inputs, min_value, max_value, per_channel, num_bits,
                narrow_range):
    if per_channel:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            inputs, min_value, max_value, num_bits=num_bits,
            narrow_range=narrow_range)
    return tf.quantization.fake_quant_with_min_max_vars(
        inputs, min_value, max_value, num_bits=num_bits,
        narrow_range=narrow_range)


def _variables(inputs, per_channel, init_min, init_max, vars_collection):
    shape = [inputs.shape[-1]] if per_channel else []
    return (_range_variable('min', shape, init_min, vars_collection),
            _range_variable('max', shape, init_max, vars_collection))


def LastValueQuantize(inputs,  # pylint: disable=invalid-name
                      per_channel=False,
                      init_min=-6.0,
                      init_max=6.0,
                      vars_collection=None,
                      name_prefix='LastValueQuant',
                      reuse=None,
                      is_training=True,
                      num_bits=8,
                      narrow_range=False,
                      symmetric=False):
    """Fake-quantizes `inputs` with the range of the last batch.

    Args:
      inputs: a float tensor of any shape ([kh, kw, in, out] for weights).
      per_channel: one range per last-axis channel.
      init_min, init_max: the range before the first training step.
      vars_collection: an extra collection for `min` and `max`.
      name_prefix: the variable scope (`<layer>/weights_quant`).
      is_training: update the range from `inputs` (else only read it).
      num_bits, narrow_range, symmetric: the integer grid.

    Returns:
      a tensor like `inputs`.
    """
    return _quantize(
        inputs, per_channel, init_min, init_max, vars_collection, name_prefix,
        reuse, is_training, num_bits, narrow_range, symmetric,
        lambda variable, value, name: tf.assign(variable, value,
                                                name='Assign%sLast' % name))


def MovingAvgQuantize(inputs,  # pylint: disable=invalid-name
                      per_channel=False,
                      init_min=-6.0,
                      init_max=6.0,
                      ema_decay=0.999,
                      vars_collection=tf.GraphKeys.MOVING_AVERAGE_VARIABLES,
                      name_prefix='MovingAvgQuantize',
                      reuse=None,
                      is_training=True,
                      num_bits=8,
                      narrow_range=False,
                      symmetric=False):
    """Fake-quantizes `inputs` with a moving average of the batch ranges.

    Same arguments as `LastValueQuantize`, plus `ema_decay`: each training
    step moves the range by (1 - ema_decay) towards the batch's.

    Returns:
      a tensor like `inputs`.
    """
    return _quantize(
        inputs, per_channel, init_min, init_max, vars_collection, name_prefix,
        reuse, is_training, num_bits, narrow_range, symmetric,
        lambda variable, value, name: _assign_zero_debiased_average(
            variable, value, ema_decay, name='Assign%sEma' % name))


def _quantize(inputs, per_channel, init_min, init_max, vars_collection,
              name_prefix, reuse, is_training, num_bits, narrow_range,
              symmetric, update):
    """The two quantizers' shared body: `min`/`max` variables under
    `name_prefix`; in training `update(variable, batch value, 'Min' or
    'Max')` moves each towards the batch's range before quantizing."""
    with tf.variable_scope(None, default_name=name_prefix, values=[inputs],
                           reuse=reuse):
        min_var, max_var = _variables(inputs, per_channel, init_min,
                                      init_max, vars_collection)
        if not is_training:
            return _fake_quant(inputs, min_var, max_var, per_channel,
                               num_bits, narrow_range)
        range_min, range_max = _batch_range(inputs, per_channel, symmetric,
                                            num_bits, narrow_range)
        return _fake_quant(inputs, update(min_var, range_min, 'Min'),
                           update(max_var, range_max, 'Max'), per_channel,
                           num_bits, narrow_range)
