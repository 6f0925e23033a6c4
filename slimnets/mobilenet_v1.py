"""MobileNet v1 (Howard et al., 2017), checkpoint-compatible with research/slim.

The network is a 3x3 stride-2 convolution followed by thirteen depthwise
separable blocks (3x3 depthwise, then 1x1 pointwise), each convolution
followed by batch norm and ReLU6 through `mobilenet_v1_arg_scope`.

Variables (for the default scope):

    MobilenetV1/Conv2d_0/weights                         [3, 3, 3, d(32)]
    MobilenetV1/Conv2d_<n>_depthwise/depthwise_weights   [3, 3, C, 1]
    MobilenetV1/Conv2d_<n>_pointwise/weights             [1, 1, C, d(depth)]
    .../BatchNorm/{gamma, beta, moving_mean, moving_variance}
    MobilenetV1/Logits/Conv2d_1c_1x1/{weights, biases}

where d(depth) = max(int(depth * depth_multiplier), min_depth).

Differences from the reference (both opt-in, defaults unchanged):
`mobilenet_v1()` accepts `output_stride` and `use_explicit_padding` and
passes them to the base, and `_fixed_padding` (`primitives.fixed_padding`)
pads the width by the kernel's width (the reference's copies in the v2/v3
code used the height twice).
"""

import collections

import tensorflow.compat.v1 as tf

from slimnets import primitives
from slimnets import slim
from slimnets.errors import InputError

__all__ = [
    'Conv', 'DepthSepConv', 'MOBILENETV1_CONV_DEFS', 'wrapped_partial',
    'mobilenet_v1_base', 'mobilenet_v1', 'mobilenet_v1_075',
    'mobilenet_v1_050', 'mobilenet_v1_025', 'mobilenet_v1_arg_scope',
]

Conv = collections.namedtuple('Conv', ['kernel', 'stride', 'depth'])
DepthSepConv = collections.namedtuple('DepthSepConv',
                                      ['kernel', 'stride', 'depth'])

MOBILENETV1_CONV_DEFS = [
    Conv(kernel=[3, 3], stride=2, depth=32),
    DepthSepConv(kernel=[3, 3], stride=1, depth=64),
    DepthSepConv(kernel=[3, 3], stride=2, depth=128),
    DepthSepConv(kernel=[3, 3], stride=1, depth=128),
    DepthSepConv(kernel=[3, 3], stride=2, depth=256),
    DepthSepConv(kernel=[3, 3], stride=1, depth=256),
    DepthSepConv(kernel=[3, 3], stride=2, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=2, depth=1024),
    DepthSepConv(kernel=[3, 3], stride=1, depth=1024),
]

_ALLOWED_OUTPUT_STRIDES = (8, 16, 32)


# The reference module's names for the shared primitives.
_fixed_padding = primitives.fixed_padding
_reduced_kernel_size_for_small_input = (
    primitives.reduced_kernel_size_for_small_input)
wrapped_partial = primitives.wrapped_partial


def _layer_depth(depth, depth_multiplier, min_depth):
    return max(int(depth * depth_multiplier), min_depth)


def mobilenet_v1_base(inputs,
                      final_endpoint='Conv2d_13_pointwise',
                      min_depth=8,
                      depth_multiplier=1.0,
                      conv_defs=None,
                      output_stride=None,
                      use_explicit_padding=False,
                      scope=None):
    """The MobileNet v1 feature extractor, from the input to `final_endpoint`.

    Args:
      inputs: [batch, height, width, 3] images.
      final_endpoint: the last layer to build: 'Conv2d_0', or
        'Conv2d_<n>_depthwise' / 'Conv2d_<n>_pointwise' for n in 1..13
        (with the default conv defs).
      min_depth: the smallest channel count any layer may have.
      depth_multiplier: scales every layer's channel count (> 0).
      conv_defs: a list of `Conv` / `DepthSepConv`; default
        MOBILENETV1_CONV_DEFS.
      output_stride: None, 8, 16 or 32: once the accumulated stride reaches
        it, later layers keep stride 1 and use atrous (dilated) depthwise
        convolutions instead.
      use_explicit_padding: pad with `primitives.fixed_padding` and
        convolve 'VALID' instead of 'SAME'.
      scope: variable scope (a name or a VariableScope); default
        'MobilenetV1'.

    Returns:
      (net, end_points): the final layer's [batch, h, w, channels] tensor,
      and a dict of every layer built so far, keyed by layer name.

    Raises:
      ValueError: depth_multiplier <= 0, an unsupported output_stride, an
        unknown conv def type, or a final_endpoint that was never reached.
    """
    if depth_multiplier <= 0:
        raise InputError('depth_multiplier is not greater than zero (got %r).'
                         % (depth_multiplier,))
    if output_stride is not None and output_stride not in _ALLOWED_OUTPUT_STRIDES:
        raise InputError('Only allowed output_stride values are 8, 16, 32 '
                         '(got %r).' % (output_stride,))
    conv_defs = MOBILENETV1_CONV_DEFS if conv_defs is None else conv_defs
    padding = 'VALID' if use_explicit_padding else 'SAME'
    end_points = {}

    def record(name, tensor):
        end_points[name] = tensor
        return name == final_endpoint

    with tf.variable_scope(scope, 'MobilenetV1', [inputs]):
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                            padding=padding):
            # current_stride: the stride accumulated so far; rate: the atrous
            # rate that replaces strides once output_stride is reached.
            current_stride, rate = 1, 1
            net = inputs
            for index, conv_def in enumerate(conv_defs):
                if not isinstance(conv_def, (Conv, DepthSepConv)):
                    raise InputError('Unknown convolution type %s for layer %d: '
                                     'use Conv or DepthSepConv.'
                                     % (type(conv_def).__name__, index))
                name = 'Conv2d_%d' % index
                if output_stride is not None and current_stride == output_stride:
                    layer_stride, layer_rate = 1, rate
                    rate *= conv_def.stride
                else:
                    layer_stride, layer_rate = conv_def.stride, 1
                    current_stride *= conv_def.stride
                depth = _layer_depth(conv_def.depth, depth_multiplier,
                                     min_depth)

                if isinstance(conv_def, Conv):
                    if use_explicit_padding:
                        net = primitives.fixed_padding(net, conv_def.kernel)
                    net = slim.conv2d(net, depth, conv_def.kernel,
                                      stride=conv_def.stride, scope=name)
                    if record(name, net):
                        return net, end_points
                else:
                    if use_explicit_padding:
                        net = primitives.fixed_padding(net, conv_def.kernel,
                                                       layer_rate)
                    net = slim.separable_conv2d(
                        net, None, conv_def.kernel, depth_multiplier=1,
                        stride=layer_stride, rate=layer_rate,
                        scope=name + '_depthwise')
                    if record(name + '_depthwise', net):
                        return net, end_points
                    net = slim.conv2d(net, depth, [1, 1], stride=1,
                                      scope=name + '_pointwise')
                    if record(name + '_pointwise', net):
                        return net, end_points
    raise InputError('Unknown final endpoint %s; the network built %s.'
                     % (final_endpoint, ', '.join(end_points)))


def mobilenet_v1(inputs,
                 num_classes=1000,
                 dropout_keep_prob=0.999,
                 is_training=True,
                 min_depth=8,
                 depth_multiplier=1.0,
                 conv_defs=None,
                 prediction_fn=slim.softmax,
                 spatial_squeeze=True,
                 reuse=None,
                 scope='MobilenetV1',
                 global_pool=False,
                 output_stride=None,
                 use_explicit_padding=False):
    """MobileNet v1 classifier.

    Args:
      inputs: [batch, height, width, 3] images (scaled to [-1, 1] for the
        published checkpoints).
      num_classes: classes of the logits layer; 0 or None returns the pooled
        features [batch, 1, 1, channels] instead.
      dropout_keep_prob: keep probability of the dropout before the logits.
      is_training: sets `is_training` of batch norm and dropout.
      min_depth, depth_multiplier, conv_defs: see `mobilenet_v1_base`.
      prediction_fn: turns logits into predictions (default softmax).
      spatial_squeeze: squeeze the logits from [batch, 1, 1, classes] to
        [batch, classes].
      reuse: reuse the variables of an existing network in `scope`.
      scope: variable scope, default 'MobilenetV1'.
      global_pool: average over the whole final feature map (any input size)
        instead of a fixed 7x7 pool.
      output_stride, use_explicit_padding: passed to the base (not in the
        reference, which could not forward them).

    Returns:
      (logits, end_points): logits [batch, num_classes] (or
      [batch, 1, 1, num_classes] without squeezing); end_points holds every
      base layer plus 'AvgPool_1a' or 'global_pool', 'Logits' and
      'Predictions'.

    Raises:
      ValueError: the input is not of rank 4.
    """
    input_shape = inputs.get_shape().as_list()
    if len(input_shape) != 4:
        raise InputError('Invalid input tensor rank, expected 4, was: %d '
                         '(images must be [batch, height, width, channels]).'
                         % len(input_shape))

    with tf.variable_scope(scope, 'MobilenetV1', [inputs],
                           reuse=reuse) as scope:
        with slim.arg_scope([slim.batch_norm, slim.dropout],
                            is_training=is_training):
            net, end_points = mobilenet_v1_base(
                inputs, scope=scope, min_depth=min_depth,
                depth_multiplier=depth_multiplier, conv_defs=conv_defs,
                output_stride=output_stride,
                use_explicit_padding=use_explicit_padding)
            with tf.variable_scope('Logits'):
                if global_pool:
                    net = tf.reduce_mean(net, [1, 2], keepdims=True,
                                         name='global_pool')
                    end_points['global_pool'] = net
                else:
                    kernel_size = (
                        primitives.reduced_kernel_size_for_small_input(
                            net, [7, 7]))
                    net = slim.avg_pool2d(net, kernel_size, padding='VALID',
                                          scope='AvgPool_1a')
                    end_points['AvgPool_1a'] = net
                if not num_classes:
                    return net, end_points
                net = slim.dropout(net, keep_prob=dropout_keep_prob,
                                   scope='Dropout_1b')
                logits = slim.conv2d(net, num_classes, [1, 1],
                                     activation_fn=None, normalizer_fn=None,
                                     scope='Conv2d_1c_1x1')
                if spatial_squeeze:
                    logits = tf.squeeze(logits, [1, 2], name='SpatialSqueeze')
            end_points['Logits'] = logits
            if prediction_fn:
                end_points['Predictions'] = prediction_fn(logits,
                                                          scope='Predictions')
    return logits, end_points


mobilenet_v1.default_image_size = 224


mobilenet_v1_075 = wrapped_partial(mobilenet_v1, depth_multiplier=0.75)
mobilenet_v1_050 = wrapped_partial(mobilenet_v1, depth_multiplier=0.50)
mobilenet_v1_025 = wrapped_partial(mobilenet_v1, depth_multiplier=0.25)


def mobilenet_v1_arg_scope(
        is_training=True,
        weight_decay=0.00004,
        stddev=0.09,
        regularize_depthwise=False,
        batch_norm_decay=0.9997,
        batch_norm_epsilon=0.001,
        batch_norm_updates_collections=tf.GraphKeys.UPDATE_OPS,
        normalizer_fn=slim.batch_norm):
    """The arg scope MobileNet v1 was trained with.

    Convolutions get truncated-normal(stddev) weights, ReLU6 and
    `normalizer_fn`; pointwise/full convolutions get an L2 weight penalty,
    depthwise ones only with `regularize_depthwise`.  Batch norm gets
    center, scale, decay, epsilon, updates collections and, unless
    `is_training` is None, `is_training`.

    Returns:
      An arg_scope dict to enter with `slim.arg_scope(...)`.
    """
    batch_norm_params = {
        'center': True,
        'scale': True,
        'decay': batch_norm_decay,
        'epsilon': batch_norm_epsilon,
        'updates_collections': batch_norm_updates_collections,
    }
    if is_training is not None:
        batch_norm_params['is_training'] = is_training

    regularizer = slim.l2_regularizer(weight_decay)
    depthwise_regularizer = regularizer if regularize_depthwise else None
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                        weights_initializer=tf.truncated_normal_initializer(
                            stddev=stddev),
                        activation_fn=tf.nn.relu6,
                        normalizer_fn=normalizer_fn):
        with slim.arg_scope([slim.batch_norm], **batch_norm_params):
            with slim.arg_scope([slim.conv2d], weights_regularizer=regularizer):
                with slim.arg_scope([slim.separable_conv2d],
                                    weights_regularizer=depthwise_regularizer
                                    ) as scope:
                    return scope
