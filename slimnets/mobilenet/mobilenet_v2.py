"""MobileNet v2 (Sandler et al., 2018) as a conv def for the generic builder.

Layers: a 3x3 stride-2 conv (`Conv`), seventeen inverted-residual blocks
(`expanded_conv`, `expanded_conv_1` ... `expanded_conv_16`) and a 1x1 conv
to 1280 channels (`Conv_1`); the head is `Logits/Conv2d_1c_1x1`.  Endpoints
are `layer_1` ... `layer_19` plus the blocks' `layer_<i>/expansion_output`,
`layer_<i>/depthwise_output` and `layer_<i>/output`.
"""

import tensorflow.compat.v1 as tf

from slimnets import primitives
from slimnets import slim
from slimnets.errors import InputError
from slimnets.mobilenet import conv_blocks as ops
from slimnets.mobilenet import mobilenet as lib

op = lib.op
expand_input = ops.expand_input_by_factor
wrapped_partial = primitives.wrapped_partial

# The network as a table, in the reference's names and layout: downstream
# code (DeepLab, the Object Detection API) reads and edits these rows.
V2_DEF = dict(
    defaults={
        # Part of the architecture (they decide which variables exist),
        # hence here and not in training_scope.
        (slim.batch_norm,): {'center': True, 'scale': True},
        (slim.conv2d, slim.fully_connected, slim.separable_conv2d): {
            'normalizer_fn': slim.batch_norm, 'activation_fn': tf.nn.relu6
        },
        (ops.expanded_conv,): {
            'expansion_size': expand_input(6),
            'split_expansion': 1,
            'normalizer_fn': slim.batch_norm,
            'residual': True
        },
        (slim.conv2d, slim.separable_conv2d): {'padding': 'SAME'}
    },
    spec=[
        op(slim.conv2d, stride=2, num_outputs=32, kernel_size=[3, 3]),
        op(ops.expanded_conv,
           expansion_size=expand_input(1, divisible_by=1),
           num_outputs=16),
        op(ops.expanded_conv, stride=2, num_outputs=24),
        op(ops.expanded_conv, stride=1, num_outputs=24),
        op(ops.expanded_conv, stride=2, num_outputs=32),
        op(ops.expanded_conv, stride=1, num_outputs=32),
        op(ops.expanded_conv, stride=1, num_outputs=32),
        op(ops.expanded_conv, stride=2, num_outputs=64),
        op(ops.expanded_conv, stride=1, num_outputs=64),
        op(ops.expanded_conv, stride=1, num_outputs=64),
        op(ops.expanded_conv, stride=1, num_outputs=64),
        op(ops.expanded_conv, stride=1, num_outputs=96),
        op(ops.expanded_conv, stride=1, num_outputs=96),
        op(ops.expanded_conv, stride=1, num_outputs=96),
        op(ops.expanded_conv, stride=2, num_outputs=160),
        op(ops.expanded_conv, stride=1, num_outputs=160),
        op(ops.expanded_conv, stride=1, num_outputs=160),
        op(ops.expanded_conv, stride=1, num_outputs=320),
        op(slim.conv2d, stride=1, kernel_size=[1, 1], num_outputs=1280)
    ],
)


def _with_normalizer(conv_defs, normalizer_fn):
    """A copy of `conv_defs` normalizing with `normalizer_fn`, not batch norm.

    Every `normalizer_fn` default becomes `normalizer_fn`, and the batch-norm
    defaults (`center`, `scale`) are dropped; the spec is the same.
    """
    defs = lib.copy_conv_defs(conv_defs)
    defs['defaults'] = {
        funcs: (dict(kwargs, normalizer_fn=normalizer_fn)
                if 'normalizer_fn' in kwargs else kwargs)
        for funcs, kwargs in defs['defaults'].items()
        if funcs != (slim.batch_norm,)}
    return defs


# V2_DEF with group normalization (groups: a `(slim.group_norm,)` default,
# which `mobilenet_base_group_norm` adds).
V2_DEF_GROUP_NORM = _with_normalizer(V2_DEF, slim.group_norm)


@slim.add_arg_scope
def mobilenet(input_tensor,
              num_classes=1001,
              depth_multiplier=1.0,
              scope='MobilenetV2',
              conv_defs=None,
              finegrain_classification_mode=False,
              min_depth=None,
              divisible_by=None,
              activation_fn=None,
              **kwargs):
    """MobileNet v2 classifier.

    Args:
      input_tensor: [N, H, W, 3] images in [-1, 1].
      num_classes: classes of the logits; 0/None returns 'global_pool'.
      depth_multiplier: scales every layer's channels.
      scope: variable scope.
      conv_defs: default V2_DEF.
      finegrain_classification_mode: with depth_multiplier < 1, keep the
        last layer at 1280 channels (the head does not shrink).
      min_depth, divisible_by: passed to `mobilenet.depth_multiplier` when
        not None.
      activation_fn: replaces ReLU6 in every convolution.
      **kwargs: passed to `mobilenet.mobilenet` (base_only, final_endpoint,
        output_stride, use_explicit_padding, ...).

    Returns:
      (logits [N, num_classes], end_points).

    Raises:
      ValueError: a `multiplier` keyword is given.
    """
    if conv_defs is None:
        conv_defs = V2_DEF
    if 'multiplier' in kwargs:
        raise InputError("mobilenetv2 doesn't support generic multiplier "
                         'parameter use "depth_multiplier" instead.')
    if finegrain_classification_mode and depth_multiplier < 1:
        conv_defs = lib.copy_conv_defs(conv_defs)
        conv_defs['spec'][-1].params['num_outputs'] /= depth_multiplier
    if activation_fn:
        conv_defs = lib.copy_conv_defs(conv_defs)
        conv_defaults = conv_defs['defaults'][
            (slim.conv2d, slim.fully_connected, slim.separable_conv2d)]
        conv_defaults['activation_fn'] = activation_fn

    depth_args = {}
    if min_depth is not None:
        depth_args['min_depth'] = min_depth
    if divisible_by is not None:
        depth_args['divisible_by'] = divisible_by
    with slim.arg_scope((lib.depth_multiplier,), **depth_args):
        return lib.mobilenet(input_tensor, num_classes=num_classes,
                             conv_defs=conv_defs, scope=scope,
                             multiplier=depth_multiplier, **kwargs)


mobilenet.default_image_size = 224

mobilenet_v2_100 = wrapped_partial(mobilenet, depth_multiplier=1.00)
mobilenet_v2_140 = wrapped_partial(mobilenet, depth_multiplier=1.40)
mobilenet_v2_050 = wrapped_partial(mobilenet, depth_multiplier=0.50,
                                   finegrain_classification_mode=True)
mobilenet_v2_035 = wrapped_partial(mobilenet, depth_multiplier=0.35,
                                   finegrain_classification_mode=True)


@slim.add_arg_scope
def mobilenet_base(input_tensor, depth_multiplier=1.0, **kwargs):
    """The v2 feature extractor: `mobilenet(..., base_only=True)`."""
    return mobilenet(input_tensor, depth_multiplier=depth_multiplier,
                     base_only=True, **kwargs)


@slim.add_arg_scope
def mobilenet_base_group_norm(input_tensor, depth_multiplier=1.0, **kwargs):
    """The v2 feature extractor with group norm (`groups` kwarg, default 8).

    Unlike the reference, this leaves the shared V2_DEF_GROUP_NORM untouched.
    """
    conv_defs = lib.copy_conv_defs(V2_DEF_GROUP_NORM)
    conv_defs['defaults'][(slim.group_norm,)] = {
        'groups': kwargs.pop('groups', 8)}
    kwargs['conv_defs'] = conv_defs
    return mobilenet(input_tensor, depth_multiplier=depth_multiplier,
                     base_only=True, **kwargs)


def training_scope(**kwargs):
    """`mobilenet.training_scope` (is_training, weight_decay, stddev, ...)."""
    return lib.training_scope(**kwargs)


__all__ = ['training_scope', 'mobilenet_base', 'mobilenet', 'V2_DEF']
