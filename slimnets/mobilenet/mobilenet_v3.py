"""MobileNet v3 (Howard et al., 2019) and MobileNet EdgeTPU as conv defs.

Large/small use inverted residuals with optional squeeze-excite (`_se4`) and
hard-swish; the minimalistic variants drop both and use 3x3 kernels only;
EdgeTPU starts with "fused" blocks whose expansion is a full k x k conv.
Large and small specs end with a 1x1 conv, `reduce_to_1x1` (average pool
to 1x1) and a 1x1 conv with biases and no normalizer (`Conv_2`).

Differences from the reference: `use_explicit_padding=True` works (the
reference crashed in `reduce_to_1x1` and padded blocks twice), and
`np.int` is gone, so NumPy 2 works.
"""

import copy
import functools

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import slim
from slimnets.errors import InputError
from slimnets.mobilenet import conv_blocks as ops
from slimnets.mobilenet import mobilenet as lib

__all__ = [
    'op', 'expand_input', 'squeeze_excite', 'hard_swish', 'reduce_to_1x1',
    'mbv3_op', 'mbv3_fused', 'mbv3_op_se', 'DEFAULTS',
    'DEFAULTS_GROUP_NORM', 'V3_LARGE', 'V3_SMALL', 'V3_LARGE_MINIMALISTIC',
    'V3_SMALL_MINIMALISTIC', 'V3_EDGETPU', 'V3_LARGE_DETECTION',
    'V3_SMALL_DETECTION', 'mobilenet', 'training_scope', 'mobilenet_base',
    'wrapped_partial', 'large', 'small', 'edge_tpu', 'edge_tpu_075',
    'large_minimalistic', 'small_minimalistic',
]

op = lib.op
expand_input = ops.expand_input_by_factor

# Squeeze-excite with hard-sigmoid gates and ReLU inside, a quarter as wide.
squeeze_excite = functools.partial(
    ops.squeeze_excite, squeeze_factor=4, inner_activation_fn=tf.nn.relu,
    gating_fn=lambda x: tf.nn.relu6(x + 3) * 0.16667)


def _se4(expansion_tensor, input_tensor):
    """squeeze_excite as an `expansion_transform` of `expanded_conv`."""
    del input_tensor
    return squeeze_excite(expansion_tensor)


def hard_swish(x):
    """x * relu6(x + 3) / 6, in name scope 'hard_swish'."""
    with tf.name_scope('hard_swish'):
        return x * tf.nn.relu6(x + np.float32(3)) * np.float32(1. / 6.)


def reduce_to_1x1(input_tensor, default_size=7, use_explicit_padding=False,
                  **kwargs):
    """Average-pools a square [N, h, h, C] map to [N, 1, 1, C].

    When the map is not square or its size is unknown, the pool is
    `default_size` x `default_size`.  `use_explicit_padding` is accepted and
    ignored: pooling needs no padding (the reference crashed on it).
    """
    del use_explicit_padding
    height, width = input_tensor.shape.as_list()[1:3]
    if height is not None and width == height:
        kernel_size = [height, height]
    else:
        kernel_size = [default_size, default_size]
    return slim.avg_pool2d(input_tensor, kernel_size=kernel_size, **kwargs)


def mbv3_op(ef, n, k, s=1, act=tf.nn.relu, se=None, **kwargs):
    """An `expanded_conv` op: expansion factor, outputs, kernel, stride."""
    return op(ops.expanded_conv, expansion_size=expand_input(ef),
              kernel_size=(k, k), stride=s, num_outputs=n,
              inner_activation_fn=act, expansion_transform=se, **kwargs)


def mbv3_fused(ef, n, k, s=1, **kwargs):
    """A fused block: k x k stride-s expansion conv, no depthwise, projection."""
    expansion_fn = functools.partial(slim.conv2d, kernel_size=k, stride=s)
    return mbv3_op(ef, n, k=1, s=s, depthwise_location=None,
                   expansion_fn=expansion_fn, **kwargs)


mbv3_op_se = functools.partial(mbv3_op, se=_se4)

DEFAULTS = {
    (ops.expanded_conv,): dict(normalizer_fn=slim.batch_norm, residual=True),
    (slim.conv2d, slim.fully_connected, slim.separable_conv2d): {
        'normalizer_fn': slim.batch_norm,
        'activation_fn': tf.nn.relu,
    },
    (slim.batch_norm,): {'center': True, 'scale': True},
}

DEFAULTS_GROUP_NORM = {
    (ops.expanded_conv,): dict(normalizer_fn=slim.group_norm, residual=True),
    (slim.conv2d, slim.fully_connected, slim.separable_conv2d): {
        'normalizer_fn': slim.group_norm,
        'activation_fn': tf.nn.relu,
    },
    (slim.group_norm,): {'groups': 8},
}


# The networks as tables, in the reference's names and layout: downstream
# code (DeepLab, the Object Detection API) reads and edits these rows.  The
# large and small variants end with a 1x1 conv, `reduce_to_1x1` and a 1x1
# conv with biases and no normalizer; EdgeTPU ends with the 1x1 conv alone.
V3_LARGE = dict(
    defaults=dict(DEFAULTS),
    spec=[
        op(slim.conv2d, stride=2, num_outputs=16, kernel_size=(3, 3),
           activation_fn=hard_swish),
        mbv3_op(ef=1, n=16, k=3),
        mbv3_op(ef=4, n=24, k=3, s=2),
        mbv3_op(ef=3, n=24, k=3, s=1),
        mbv3_op_se(ef=3, n=40, k=5, s=2),
        mbv3_op_se(ef=3, n=40, k=5, s=1),
        mbv3_op_se(ef=3, n=40, k=5, s=1),
        mbv3_op(ef=6, n=80, k=3, s=2, act=hard_swish),
        mbv3_op(ef=2.5, n=80, k=3, s=1, act=hard_swish),
        mbv3_op(ef=184 / 80., n=80, k=3, s=1, act=hard_swish),
        mbv3_op(ef=184 / 80., n=80, k=3, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=112, k=3, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=112, k=3, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=160, k=5, s=2, act=hard_swish),
        mbv3_op_se(ef=6, n=160, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=160, k=5, s=1, act=hard_swish),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=960,
           activation_fn=hard_swish),
        op(reduce_to_1x1, default_size=7, stride=1, padding='VALID'),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=1280,
           normalizer_fn=None, activation_fn=hard_swish),
    ])

V3_SMALL = dict(
    defaults=dict(DEFAULTS),
    spec=[
        op(slim.conv2d, stride=2, num_outputs=16, kernel_size=(3, 3),
           activation_fn=hard_swish),
        mbv3_op_se(ef=1, n=16, k=3, s=2),
        mbv3_op(ef=72. / 16, n=24, k=3, s=2),
        mbv3_op(ef=(88. / 24), n=24, k=3, s=1),
        mbv3_op_se(ef=4, n=40, k=5, s=2, act=hard_swish),
        mbv3_op_se(ef=6, n=40, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=40, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=3, n=48, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=3, n=48, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=96, k=5, s=2, act=hard_swish),
        mbv3_op_se(ef=6, n=96, k=5, s=1, act=hard_swish),
        mbv3_op_se(ef=6, n=96, k=5, s=1, act=hard_swish),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=576,
           activation_fn=hard_swish),
        op(reduce_to_1x1, default_size=7, stride=1, padding='VALID'),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=1024,
           normalizer_fn=None, activation_fn=hard_swish),
    ])

V3_LARGE_MINIMALISTIC = dict(
    defaults=dict(DEFAULTS),
    spec=[
        op(slim.conv2d, stride=2, num_outputs=16, kernel_size=(3, 3)),
        mbv3_op(ef=1, n=16, k=3),
        mbv3_op(ef=4, n=24, k=3, s=2),
        mbv3_op(ef=3, n=24, k=3, s=1),
        mbv3_op(ef=3, n=40, k=3, s=2),
        mbv3_op(ef=3, n=40, k=3, s=1),
        mbv3_op(ef=3, n=40, k=3, s=1),
        mbv3_op(ef=6, n=80, k=3, s=2),
        mbv3_op(ef=2.5, n=80, k=3, s=1),
        mbv3_op(ef=184 / 80., n=80, k=3, s=1),
        mbv3_op(ef=184 / 80., n=80, k=3, s=1),
        mbv3_op(ef=6, n=112, k=3, s=1),
        mbv3_op(ef=6, n=112, k=3, s=1),
        mbv3_op(ef=6, n=160, k=3, s=2),
        mbv3_op(ef=6, n=160, k=3, s=1),
        mbv3_op(ef=6, n=160, k=3, s=1),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=960),
        op(reduce_to_1x1, default_size=7, stride=1, padding='VALID'),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=1280,
           normalizer_fn=None),
    ])

V3_SMALL_MINIMALISTIC = dict(
    defaults=dict(DEFAULTS),
    spec=[
        op(slim.conv2d, stride=2, num_outputs=16, kernel_size=(3, 3)),
        mbv3_op(ef=1, n=16, k=3, s=2),
        mbv3_op(ef=72. / 16, n=24, k=3, s=2),
        mbv3_op(ef=(88. / 24), n=24, k=3, s=1),
        mbv3_op(ef=4, n=40, k=3, s=2),
        mbv3_op(ef=6, n=40, k=3, s=1),
        mbv3_op(ef=6, n=40, k=3, s=1),
        mbv3_op(ef=3, n=48, k=3, s=1),
        mbv3_op(ef=3, n=48, k=3, s=1),
        mbv3_op(ef=6, n=96, k=3, s=2),
        mbv3_op(ef=6, n=96, k=3, s=1),
        mbv3_op(ef=6, n=96, k=3, s=1),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=576),
        op(reduce_to_1x1, default_size=7, stride=1, padding='VALID'),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=1024,
           normalizer_fn=None),
    ])

V3_EDGETPU = dict(
    defaults=dict(DEFAULTS),
    spec=[
        op(slim.conv2d, stride=2, num_outputs=32, kernel_size=(3, 3)),
        mbv3_fused(k=3, s=1, ef=1, n=16),
        mbv3_fused(k=3, s=2, ef=8, n=32),
        mbv3_fused(k=3, s=1, ef=4, n=32),
        mbv3_fused(k=3, s=1, ef=4, n=32),
        mbv3_fused(k=3, s=1, ef=4, n=32),
        mbv3_fused(k=3, s=2, ef=8, n=48),
        mbv3_fused(k=3, s=1, ef=4, n=48),
        mbv3_fused(k=3, s=1, ef=4, n=48),
        mbv3_fused(k=3, s=1, ef=4, n=48),
        mbv3_op(k=3, s=2, ef=8, n=96),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=3, s=1, ef=8, n=96, residual=False),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=3, s=1, ef=4, n=96),
        mbv3_op(k=5, s=2, ef=8, n=160),
        mbv3_op(k=5, s=1, ef=4, n=160),
        mbv3_op(k=5, s=1, ef=4, n=160),
        mbv3_op(k=5, s=1, ef=4, n=160),
        mbv3_op(k=3, s=1, ef=8, n=192),
        op(slim.conv2d, stride=1, num_outputs=1280, kernel_size=(1, 1)),
    ])


def _reduce_consecutive_layers(conv_defs, start_id, end_id, multiplier=0.5):
    """A copy of `conv_defs` with ops start_id..end_id (inclusive) narrowed.

    Each op's `num_outputs` is multiplied by `multiplier` and rounded.
    """
    defs = lib.copy_conv_defs(conv_defs)
    for opdef in defs['spec'][start_id:end_id + 1]:
        opdef.params['num_outputs'] = int(
            np.round(opdef.params['num_outputs'] * multiplier))
    return defs


V3_LARGE_DETECTION = _reduce_consecutive_layers(V3_LARGE, 13, 16)
V3_SMALL_DETECTION = _reduce_consecutive_layers(V3_SMALL, 9, 12)


@slim.add_arg_scope
def mobilenet(input_tensor,
              num_classes=1001,
              depth_multiplier=1.0,
              scope='MobilenetV3',
              conv_defs=None,
              finegrain_classification_mode=False,
              use_groupnorm=False,
              **kwargs):
    """MobileNet v3 classifier (default V3_LARGE).

    Inference mode is created by default; build inside
    `mobilenet.training_scope()` (or pass `is_training=True`) to train.

    Args:
      input_tensor: [N, H, W, 3] images in [-1, 1].
      num_classes: classes of the logits; 0/None returns 'global_pool'.
      depth_multiplier: scales every layer's channels.
      scope: variable scope.
      conv_defs: one of the V3_* conv defs (default V3_LARGE).
      finegrain_classification_mode: keep the last layer unscaled.
      use_groupnorm: group norm (`groups` kwarg, default 8) instead of
        batch norm.
      **kwargs: passed to `mobilenet.mobilenet`.

    Returns:
      (logits [N, num_classes], end_points).

    Raises:
      ValueError: a `multiplier` keyword is given.
    """
    if conv_defs is None:
        conv_defs = V3_LARGE
    if 'multiplier' in kwargs:
        raise InputError("mobilenetv2 doesn't support generic multiplier "
                         'parameter use "depth_multiplier" instead.')
    if use_groupnorm:
        conv_defs = lib.copy_conv_defs(conv_defs)
        conv_defs['defaults'] = copy.copy(DEFAULTS_GROUP_NORM)
        conv_defs['defaults'][(slim.group_norm,)] = {
            'groups': kwargs.pop('groups', 8)}
    if finegrain_classification_mode:
        conv_defs = lib.copy_conv_defs(conv_defs)
        conv_defs['spec'][-1] = conv_defs['spec'][-1]._replace(
            multiplier_func=lambda params, multiplier: params)
    return lib.mobilenet(input_tensor, num_classes=num_classes,
                         conv_defs=conv_defs, scope=scope,
                         multiplier=depth_multiplier, **kwargs)


mobilenet.default_image_size = 224
training_scope = lib.training_scope


@slim.add_arg_scope
def mobilenet_base(input_tensor, depth_multiplier=1.0, **kwargs):
    """The v3 feature extractor: `mobilenet(..., base_only=True)`."""
    return mobilenet(input_tensor, depth_multiplier=depth_multiplier,
                     base_only=True, **kwargs)


def wrapped_partial(func, new_defaults=None, **kwargs):
    """A partial of `func` with fixed kwargs and overridable `new_defaults`.

    `kwargs` are bound like `functools.partial`; `new_defaults` are only
    defaults, which the caller's keyword arguments replace.
    """
    new_defaults = dict(new_defaults or {})

    def func_wrapper(*f_args, **f_kwargs):
        merged = dict(new_defaults)
        merged.update(f_kwargs)
        return func(*f_args, **merged)

    functools.update_wrapper(func_wrapper, func)
    partial_func = functools.partial(func_wrapper, **kwargs)
    functools.update_wrapper(partial_func, func)
    return partial_func


large = wrapped_partial(mobilenet, conv_defs=V3_LARGE)
small = wrapped_partial(mobilenet, conv_defs=V3_SMALL)
edge_tpu = wrapped_partial(mobilenet,
                           new_defaults={'scope': 'MobilenetEdgeTPU'},
                           conv_defs=V3_EDGETPU)
edge_tpu_075 = wrapped_partial(mobilenet,
                               new_defaults={'scope': 'MobilenetEdgeTPU'},
                               conv_defs=V3_EDGETPU, depth_multiplier=0.75,
                               finegrain_classification_mode=True)
large_minimalistic = wrapped_partial(mobilenet, conv_defs=V3_LARGE_MINIMALISTIC)
small_minimalistic = wrapped_partial(mobilenet, conv_defs=V3_SMALL_MINIMALISTIC)
