"""Feature maps for detectors and segmenters, in one call.

The object-detection API and DeepLab each wrap the MobileNet bases in the
same few patterns (an arg scope, a re-entered variable scope, a depth
multiplier with a minimum depth, explicit padding, padding the input to a
multiple, an output stride).  `features(images, 'mobilenet_v2')` applies the
pattern of the named backbone and returns its feature maps, in order:

    backbone                 layers (default endpoints)
    mobilenet_v1             Conv2d_11_pointwise, Conv2d_13_pointwise  (SSD)
    mobilenet_v1_fpn         Conv2d_{3,5,11,13}_pointwise, last two
                             blocks narrowed to 512 / 256               (FPN)
    mobilenet_v2             layer_15/expansion_output, layer_19       (SSD)
    mobilenet_v2_deeplab     layer_18 (output stride 8 or 16)           (DeepLab)
    mobilenet_v3_large       layer_14/expansion_output, layer_17 (V3_LARGE_DETECTION)
    mobilenet_v3_small       layer_10/expansion_output, layer_13 (V3_SMALL_DETECTION)
    mobilenet_edgetpu        layer_18/expansion_output, layer_23

The variables live under `scope` (default the network's own root, so a
classification checkpoint restores into them unchanged; pass e.g.
'FeatureExtractor/MobilenetV1' and `slimnets.checkpoints.restore` maps it).
"""

import collections
import copy

import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import registry
from slimnets import slim
from slimnets.errors import InputError
from slimnets.mobilenet import mobilenet as mobilenet_lib
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

__all__ = ['Backbone', 'BACKBONES', 'pad_to_multiple', 'features']

Backbone = collections.namedtuple('Backbone', [
    'family', 'root', 'endpoints', 'conv_defs', 'min_depth', 'bn_decay'])


def _backbone(network, endpoints, conv_defs, min_depth, bn_decay):
    """A Backbone of registry network `network` (family and root from the
    registry)."""
    family = registry.family(network)
    return Backbone(family.name, family.root, endpoints, conv_defs, min_depth,
                    bn_decay)


def _v1_fpn_conv_defs():
    conv_defs = copy.deepcopy(mobilenet_v1.MOBILENETV1_CONV_DEFS)
    conv_defs[-2] = mobilenet_v1.DepthSepConv(kernel=[3, 3], stride=2,
                                              depth=512)
    conv_defs[-1] = mobilenet_v1.DepthSepConv(kernel=[3, 3], stride=1,
                                              depth=256)
    return conv_defs


BACKBONES = {
    'mobilenet_v1': _backbone('mobilenet_v1', (
        'Conv2d_11_pointwise', 'Conv2d_13_pointwise'), None, 16, None),
    'mobilenet_v1_fpn': _backbone('mobilenet_v1', (
        'Conv2d_3_pointwise', 'Conv2d_5_pointwise', 'Conv2d_11_pointwise',
        'Conv2d_13_pointwise'), _v1_fpn_conv_defs(), 16, None),
    'mobilenet_v2': _backbone('mobilenet_v2', (
        'layer_15/expansion_output', 'layer_19'), None, 16, 0.9997),
    'mobilenet_v2_deeplab': _backbone('mobilenet_v2', ('layer_18',),
                                      mobilenet_v2.V2_DEF, None, None),
    'mobilenet_v3_large': _backbone('mobilenet_v3_large', (
        'layer_14/expansion_output', 'layer_17'),
        mobilenet_v3.V3_LARGE_DETECTION, 16, 0.9997),
    'mobilenet_v3_small': _backbone('mobilenet_v3_small', (
        'layer_10/expansion_output', 'layer_13'),
        mobilenet_v3.V3_SMALL_DETECTION, 16, 0.9997),
    'mobilenet_edgetpu': _backbone('mobilenet_edgetpu', (
        'layer_18/expansion_output', 'layer_23'), mobilenet_v3.V3_EDGETPU,
        16, 0.9997),
}


def pad_to_multiple(images, multiple):
    """Zero-pads [N, H, W, C] at the bottom and right to multiples of
    `multiple` (H and W may be unknown)."""
    if multiple == 1:
        return images
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    new_height = tf.cast(tf.math.ceil(height / multiple), tf.int32) * multiple
    new_width = tf.cast(tf.math.ceil(width / multiple), tf.int32) * multiple
    static = images.shape.as_list()
    padded = tf.pad(images, [[0, 0], [0, new_height - height],
                             [0, new_width - width], [0, 0]])
    padded.set_shape([static[0]] + [
        None if d is None else -(-d // multiple) * multiple
        for d in static[1:3]] + [static[3]])
    return padded


def _deepest(names, endpoints):
    """The endpoint built last of `endpoints` (the base's final_endpoint)."""
    order = {name: index for index, name in enumerate(names)}
    return max(endpoints, key=lambda e: order[e.split('/')[0]])


def _v1_order():
    names = ['Conv2d_0']
    for index in range(1, 14):
        names += ['Conv2d_%d_depthwise' % index, 'Conv2d_%d_pointwise' % index]
    return names


def features(images,
             backbone,
             endpoints=None,
             depth_multiplier=1.0,
             min_depth=None,
             use_explicit_padding=False,
             pad_to_multiple_of=1,
             output_stride=None,
             scope=None,
             reuse=None,
             is_training=None,
             weight_decay=0.00004,
             divisible_by=None):
    """The ordered feature maps of a backbone (see the module docstring).

    Args:
      images: [N, H, W, 3] preprocessed images (in [-1, 1]).
      backbone: a key of BACKBONES.
      endpoints: the endpoints to return (default the backbone's).
      depth_multiplier: scales every layer.
      min_depth: smallest layer depth (default the backbone's; DeepLab uses
        8 at multiplier 1 and 1 otherwise, with the same `divisible_by`).
      use_explicit_padding: fixed padding with 'VALID' convolutions.
      pad_to_multiple_of: zero-pad the input's H and W to this multiple.
      output_stride: None or 8/16/32: atrous convolution past that stride.
      scope: variable scope (a name or VariableScope); default the network's
        root ('MobilenetV1', 'MobilenetV2', ...).
      reuse: reuse the variables of an earlier call.
      is_training: batch norm mode; None leaves it to an outer arg scope
        (the detection API's convention).
      weight_decay: L2 regularization of the convolutions.
      divisible_by: v2/v3 channel rounding (default 8; DeepLab's rule for
        'mobilenet_v2_deeplab': 8 at multiplier 1, else 1).

    Returns:
      An OrderedDict {endpoint: [N, h, w, c]} in the order of `endpoints`.

    Raises:
      ValueError: unknown backbone or endpoint.
    """
    if backbone not in BACKBONES:
        raise InputError('unknown backbone %r; choose from %s'
                         % (backbone, ', '.join(sorted(BACKBONES))))
    spec = BACKBONES[backbone]
    endpoints = tuple(endpoints or spec.endpoints)
    images = pad_to_multiple(images, pad_to_multiple_of)
    with tf.variable_scope(scope, spec.root, [images],
                           reuse=reuse) as variable_scope:
        if spec.family == 'v1':
            final = _deepest(_v1_order(), endpoints)
            with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                    is_training=is_training, weight_decay=weight_decay,
                    regularize_depthwise=True)):
                _, end_points = mobilenet_v1.mobilenet_v1_base(
                    images, final_endpoint=final,
                    min_depth=spec.min_depth if min_depth is None else min_depth,
                    depth_multiplier=depth_multiplier,
                    conv_defs=spec.conv_defs, output_stride=output_stride,
                    use_explicit_padding=use_explicit_padding,
                    scope=variable_scope)
        else:
            conv_defs = spec.conv_defs or mobilenet_v2.V2_DEF
            final = 'layer_%d' % max(int(e.split('/')[0].split('_')[1])
                                     for e in endpoints)
            if backbone == 'mobilenet_v2_deeplab':
                default = 8 if depth_multiplier == 1.0 else 1
                depth_args = {'min_depth': default, 'divisible_by': default}
            else:
                depth_args = {'min_depth': spec.min_depth}
            if min_depth is not None:
                depth_args['min_depth'] = min_depth
            if divisible_by is not None:
                depth_args['divisible_by'] = divisible_by
            base = (mobilenet_v2.mobilenet_base if spec.family == 'v2' else
                    mobilenet_v3.mobilenet_base)
            training_scope = mobilenet_lib.training_scope(
                is_training=is_training, weight_decay=weight_decay,
                bn_decay=spec.bn_decay or 0.997)
            with slim.arg_scope(training_scope), slim.arg_scope(
                    [mobilenet_lib.depth_multiplier], **depth_args):
                _, end_points = base(
                    images, conv_defs=conv_defs, final_endpoint=final,
                    depth_multiplier=depth_multiplier,
                    use_explicit_padding=use_explicit_padding,
                    output_stride=output_stride, scope=variable_scope)
    missing = [e for e in endpoints if e not in end_points]
    if missing:
        raise InputError('backbone %s has no endpoint %s; it has %s' % (
            backbone, ', '.join(missing), ', '.join(sorted(end_points))))
    return collections.OrderedDict((e, end_points[e]) for e in endpoints)
