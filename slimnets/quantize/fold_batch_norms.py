"""Folds batch normalization into the convolution before it.

For a layer `conv(x, w)` followed by a fused batch norm, the rewrite adds,
in the layer's name scope (names as tf.contrib.quantize chose them):

    multiplier = gamma / sqrt(variance + epsilon)
    BatchNorm_Fold/bias = beta - mean * multiplier
    mul_fold = w * multiplier              (the weights that get quantized)
    <Conv2D|depthwise|MatMul>_Fold = conv(x, mul_fold)
    add_fold = <Conv2D_Fold> + bias

and rewires the batch norm's consumers to `add_fold`.  In eval graphs mean
and variance are the moving statistics.  In training graphs they are the
batch statistics (computed by differentiable ops, so that gradients are
batch norm's), and the weights are scaled by the moving ones instead,
with a correction after the convolution so the output still sees batch
statistics (Jacob et al. 2018, section 3.2):

    correction_scale = sigma_batch / sigma_moving
    mul_fold = (correction_scale * w) * multiplier
    add_fold = conv(x, mul_fold) / correction_scale + correction_offset + bias

After `freeze_batch_norm_delay` steps the correction switches to the moving
statistics (`correction_scale` stays, the reciprocal becomes 1, the offset
moves the batch mean to the moving one) and the moving averages stop
updating.

The original convolution and batch norm stay in the graph: in training
they still compute the batch statistics.
"""

import logging

import tensorflow.compat.v1 as tf

from slimnets.errors import QuantizationError
from slimnets.quantize import common
from slimnets.quantize import graph_matcher

__all__ = ['FoldBatchNorms']

_log = logging.getLogger(__name__)

_LAYER_TYPES = 'Conv2D|DepthwiseConv2dNative|MatMul'
_BATCH_NORM_TYPES = 'FusedBatchNorm|FusedBatchNormV3'


class _BatchNormMatch(object):
    """A layer op and the fused batch norm reading its output."""

    def __init__(self, layer_op, bn_op, batch_to_space_op=None):
        self.layer_op = layer_op
        self.bn_op = bn_op
        self.batch_to_space_op = batch_to_space_op
        self.input_tensor = layer_op.inputs[0]
        self.weight_tensor = layer_op.inputs[1]
        self.output_tensor = bn_op.outputs[0]
        self.gamma_tensor = bn_op.inputs[1]
        self.beta_tensor = bn_op.inputs[2]
        self.epsilon = bn_op.get_attr('epsilon')
        self.is_training = bn_op.get_attr('is_training')


def _find_fused_batch_norms(graph):
    layer = graph_matcher.OpTypePattern(_LAYER_TYPES)
    # Atrous depthwise convolutions run between SpaceToBatchND and
    # BatchToSpaceND.
    batch_to_space = graph_matcher.OpTypePattern('BatchToSpaceND',
                                                 inputs=[layer, '*', '*'])
    batch_norm = graph_matcher.OpTypePattern(
        _BATCH_NORM_TYPES, inputs=[
            graph_matcher.OneofPattern([batch_to_space, layer]),
            '*', '*', '*', '*'])
    matches = []
    for result in graph_matcher.GraphMatcher(batch_norm).match_graph(graph):
        matches.append(_BatchNormMatch(result.get_op(layer),
                                       result.get_op(batch_norm),
                                       result.get_op(batch_to_space)))
    return matches


def _moving_statistics_variables(graph, bn_op):
    """The moving mean and variance variables of a training batch norm:
    the variables whose scope is the longest suffix of the op's scope."""
    bn_scope = common.context_of(bn_op.name)
    found = {}
    for variable in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES):
        scope, _, leaf = variable.op.name.rpartition('/')
        if leaf not in ('moving_mean', 'moving_variance'):
            continue
        if bn_scope == scope or bn_scope.endswith('/' + scope):
            if leaf not in found or len(scope) > len(
                    found[leaf].op.name):
                found[leaf] = variable
    if len(found) != 2:
        raise QuantizationError(
            'cannot find the moving_mean and moving_variance variables of '
            'batch norm %s (looked for them under its scope); build the '
            'network with slim.batch_norm' % bn_op.name)
    return found['moving_mean'], found['moving_variance']


def _clone_layer(layer_op, input_tensor, weights):
    """The layer op again, reading `weights`, named '<type name>_Fold'."""
    name = layer_op.name.rpartition('/')[2] + '_Fold'
    attr = layer_op.get_attr
    if layer_op.type == 'Conv2D':
        return tf.raw_ops.Conv2D(
            input=input_tensor, filter=weights, strides=attr('strides'),
            padding=attr('padding'), use_cudnn_on_gpu=attr('use_cudnn_on_gpu'),
            explicit_paddings=attr('explicit_paddings'),
            data_format=attr('data_format'), dilations=attr('dilations'),
            name=name)
    if layer_op.type == 'DepthwiseConv2dNative':
        return tf.raw_ops.DepthwiseConv2dNative(
            input=input_tensor, filter=weights, strides=attr('strides'),
            padding=attr('padding'),
            explicit_paddings=attr('explicit_paddings'),
            data_format=attr('data_format'), dilations=attr('dilations'),
            name=name)
    return tf.raw_ops.MatMul(a=input_tensor, b=weights,
                             transpose_a=attr('transpose_a'),
                             transpose_b=attr('transpose_b'), name=name)


def _corrections(match, mean, variance, moving_mean, moving_variance,
                 freeze_batch_norm_delay):
    """(correction_scale, correction_recip, correction_offset), all [C]."""
    with tf.name_scope('batch_norm_correction'):
        recip_sigma_moving = tf.rsqrt(moving_variance + match.epsilon)
        recip_sigma = tf.rsqrt(variance + match.epsilon)
        scale = tf.identity(tf.divide(recip_sigma_moving, recip_sigma,
                                      name='scale_compute'),
                            name='correction_scale')
        recip = tf.reciprocal(scale, name='reciprocal_compute')
        offset = tf.multiply(match.gamma_tensor,
                             mean * recip_sigma -
                             moving_mean * recip_sigma_moving,
                             name='offset_compute')
        if freeze_batch_norm_delay is None:
            return scale, recip, tf.zeros_like(offset,
                                               name='correction_offset')
        use_moving = tf.greater_equal(common.create_or_get_quantization_step(),
                                      freeze_batch_norm_delay,
                                      name='use_moving_average')
        recip = tf.where_v2(use_moving, tf.ones_like(recip), recip,
                            name='correction_recip')
        offset = tf.where_v2(use_moving, offset, tf.zeros_like(offset),
                             name='correction_offset')
        return scale, recip, offset, use_moving


def _freeze_moving_average_updates(bn_op, use_moving, moving_mean,
                                   moving_variance, consumers):
    """After the delay, the update ops see the moving statistics as the
    batch's: the moving averages stop moving."""
    for output, moving, label in ((bn_op.outputs[1], moving_mean, 'mean'),
                                  (bn_op.outputs[2], moving_variance,
                                   'variance')):
        frozen = tf.where_v2(use_moving, moving, output,
                             name='freeze_moving_' + label)
        common.reroute_tensor(frozen, output, can_modify=consumers[label])


def _fold(graph, match, is_training, freeze_batch_norm_delay):
    if match.bn_op.get_attr('data_format') not in (b'NHWC', 'NHWC'):
        raise QuantizationError(
            'cannot fold batch norm %s: its data format is %s; build the '
            'network channels-last (NHWC) to quantize it' % (
                match.bn_op.name, match.bn_op.get_attr('data_format')))
    scope = common.context_of(match.layer_op.name)
    prefix = scope + '/' if scope else ''
    bn_op = match.bn_op
    update_consumers = {'mean': list(bn_op.outputs[1].consumers()),
                        'variance': list(bn_op.outputs[2].consumers())}
    with graph.name_scope(prefix or None):
        with graph.name_scope(prefix + 'BatchNorm_Fold/'):
            if is_training or match.is_training:
                moving_mean_var, moving_variance_var = \
                    _moving_statistics_variables(graph, bn_op)
                moving_mean = tf.convert_to_tensor(moving_mean_var)
                moving_variance = tf.convert_to_tensor(moving_variance_var)
            if is_training:
                # The batch statistics the batch norm normalizes with
                # (biased variance), as differentiable ops: the fused
                # kernel's gradient ignores its mean and variance outputs,
                # and without their Jacobian the folded layer's gradients
                # are not batch norm's.
                mean, variance = tf.nn.moments(bn_op.inputs[0], [0, 1, 2],
                                               name='batch_moments')
            elif match.is_training:  # an eval fold of a training batch norm
                mean, variance = moving_mean, moving_variance
            else:
                mean, variance = bn_op.inputs[3], bn_op.inputs[4]
            multiplier = match.gamma_tensor * tf.rsqrt(variance +
                                                       match.epsilon)
            bias = tf.subtract(match.beta_tensor, mean * multiplier,
                               name='bias')
            correction_scale = correction_recip = correction_offset = None
            use_moving = None
            if is_training:
                corrections = _corrections(match, mean, variance,
                                           moving_mean, moving_variance,
                                           freeze_batch_norm_delay)
                correction_scale, correction_recip, correction_offset = \
                    corrections[:3]
                if len(corrections) == 4:
                    use_moving = corrections[3]
            if match.layer_op.type == 'DepthwiseConv2dNative':
                new_shape = match.weight_tensor.shape.as_list()[2:4]
                multiplier = tf.reshape(multiplier, new_shape,
                                        name='scale_reshape')
                if correction_scale is not None:
                    correction_scale = tf.reshape(
                        correction_scale, new_shape, name='correction_reshape')
        weights = match.weight_tensor
        if correction_scale is not None:
            weights = tf.multiply(correction_scale, weights,
                                  name='correction_mult')
        folded_weights = tf.multiply(weights, multiplier, name='mul_fold')
        output = _clone_layer(match.layer_op, match.input_tensor,
                              folded_weights)
        if match.batch_to_space_op is not None:
            original = match.batch_to_space_op
            output = tf.raw_ops.BatchToSpaceND(
                input=output, block_shape=original.inputs[1],
                crops=original.inputs[2],
                name=original.name.rpartition('/')[2] + '_Fold')
        if correction_recip is not None:
            output = tf.multiply(correction_recip, output,
                                 name='post_conv_mul')
            output = tf.add(output, correction_offset, name='correction_add')
        output = tf.add(output, bias, name='add_fold')
    if use_moving is not None:
        _freeze_moving_average_updates(bn_op, use_moving, moving_mean,
                                       moving_variance, update_consumers)
    if common.reroute_tensor(output, match.output_tensor) == 0:
        raise QuantizationError('cannot fold batch norm %s: nothing reads '
                                'its output' % bn_op.name)


def FoldBatchNorms(graph, is_training, freeze_batch_norm_delay=None):  # pylint: disable=invalid-name
    """Folds every fused batch norm that follows a conv/depthwise/matmul.

    Args:
      graph: the tf.Graph to rewrite in place.
      is_training: build the training form (batch statistics, corrections).
      freeze_batch_norm_delay: None, or the step from which training uses
        the moving statistics and stops updating them.

    Raises:
      QuantizationError: a batch norm cannot be folded.
    """
    for match in _find_fused_batch_norms(graph):
        if match.is_training != bool(is_training):
            _log.info('folding %s built with is_training=%s into a %s graph',
                      match.bn_op.name, match.is_training,
                      'training' if is_training else 'eval')
        _fold(graph, match, bool(is_training) and match.is_training,
              freeze_batch_norm_delay)
