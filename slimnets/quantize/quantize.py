"""Inserts fake quantization into a (batch-norm-folded) graph.

The rules are tf.contrib.quantize's, and so are the names, so that
checkpoints trained with contrib restore unchanged:

* the weights of every Conv2D, DepthwiseConv2dNative and MatMul:
  `<layer scope>/weights_quant` (last-value range, narrow range);
* the layer's output after its activation (Relu, Relu6, Identity), or after
  the bias add when there is none: `<layer scope>/act_quant` (moving
  average, initial range [0, 6]);
* a bypass Add between the bias add and the activation: its input as
  `<layer scope>/conv_quant` and, unless an activation follows,
  its output as `<parent scope>/add_quant` (the activation then quantizes
  as `<parent scope>/act_quant`);
* a residual Add after the activation:
  `<add's scope>/post_activation_bypass_quant`, unless a Relu follows;
* finally every Add or Mul fed (through Reshape, Identity, pooling...) by
  a quantized tensor and not followed by a Relu alone, as
  `<op name>/activation_<type>_quant`: hard-swish, the squeeze-excite
  gate.

Pools and reshapes keep their input's range (the TFLite converter gives
them the same scale); as in contrib, a concatenation gets no range of its
own (none of the classification networks has one on its main path).
"""

import logging

import tensorflow.compat.v1 as tf

from slimnets.errors import QuantizationError
from slimnets.quantize import common
from slimnets.quantize import graph_matcher
from slimnets.quantize import quant_ops

__all__ = ['find_layers_to_quantize', 'Quantize']

_log = logging.getLogger(__name__)

_QUANTIZABLE_TYPES = ('Conv2D', 'MatMul', 'DepthwiseConv2dNative')
_ACTIVATION_TYPES = frozenset(['Relu', 'Relu6', 'Identity'])
_RELU_TYPES = frozenset(['Relu', 'Relu6'])
_VALID_SRC_TYPES = frozenset(['Add', 'AddV2', 'Mul'])
_INTERMEDIATE_TYPES = frozenset(['Add', 'AddV2', 'Mul'])
_PASS_THROUGH_TYPES = frozenset(['Reshape', 'Identity', 'BatchToSpaceND',
                                 'SpaceToBatchND', 'MaxPool', 'Max'])


class _LayerMatch(object):
    """The ops of one matched layer (None where the pattern had none)."""

    def __init__(self, layer_op, weight_tensor, activation_op, bypass_op=None,
                 post_activation_bypass_op=None, bias_add_op=None):
        self.layer_op = layer_op
        self.weight_tensor = weight_tensor
        self.activation_op = activation_op
        self.bypass_op = bypass_op
        self.post_activation_bypass_op = post_activation_bypass_op
        self.bias_add_op = bias_add_op


class _Patterns(object):
    """The layer patterns, from the weights to a residual add."""

    def __init__(self):
        pattern = graph_matcher.OpTypePattern
        oneof = graph_matcher.OneofPattern
        self.weight_var = pattern('Variable|VariableV2')
        self.weight_partition_identity = pattern('Identity',
                                                 inputs=[self.weight_var])
        self.weight_partition_concat = pattern(
            'ConcatV2', inputs=[self.weight_partition_identity, '*', '*'])
        self.weight_identity = pattern('Identity', inputs=[oneof([
            self.weight_partition_identity, self.weight_partition_concat,
            self.weight_var])])
        self.weight_resource_read = pattern('ReadVariableOp')
        self.folded_weight = pattern('Mul')
        self.layer = pattern('|'.join(_QUANTIZABLE_TYPES), inputs=[
            '*', oneof([self.weight_identity, self.weight_resource_read,
                        self.folded_weight])], ordered_inputs=False)
        self.batch_to_space = pattern('BatchToSpaceND',
                                      inputs=[self.layer, '*', '*'])
        layer_output = oneof([self.batch_to_space, self.layer])
        self.sep_conv = pattern('|'.join(_QUANTIZABLE_TYPES),
                                inputs=[layer_output, '*'],
                                ordered_inputs=False)
        folded_bias_mul = pattern('Mul', inputs=['*', layer_output],
                                  ordered_inputs=False)
        correction_add = pattern('Add|AddV2', inputs=[folded_bias_mul, '*'],
                                 ordered_inputs=False)
        self.folded_bias_add = pattern('Add|AddV2',
                                       inputs=[correction_add, '*'],
                                       ordered_inputs=False)
        batch_norm_identity = pattern('Identity',
                                      inputs=[self.folded_bias_add])
        self.bias_add = pattern('Add|AddV2|BiasAdd',
                                inputs=[layer_output, '*'],
                                ordered_inputs=False)
        self.bypass = pattern('Add|AddV2', inputs=[oneof([
            self.bias_add, self.folded_bias_add, batch_norm_identity]), '*'],
            ordered_inputs=False)
        self.activation = pattern('|'.join(sorted(_ACTIVATION_TYPES)),
                                  inputs=[oneof([
                                      self.bias_add, self.folded_bias_add,
                                      batch_norm_identity, self.bypass,
                                      self.layer])])
        self.post_activation_bypass = pattern(
            'Add|AddV2', inputs=['*', self.activation], ordered_inputs=False)
        self.final = oneof([self.bias_add, self.folded_bias_add])

    def weight_tensor(self, result):
        for weight in (self.weight_identity, self.weight_resource_read,
                       self.folded_weight):
            tensor = result.get_tensor(weight)
            if tensor is not None:
                return tensor
        return None

    def bias_add_op(self, result):
        return result.get_op(self.bias_add) or result.get_op(
            self.folded_bias_add)


def _skip_layer(activation_op):
    """conv -> Identity -> fused batch norm: the statistics path, left
    float."""
    if activation_op.type != 'Identity':
        return False
    consumers = activation_op.outputs[0].consumers()
    return len(consumers) == 1 and consumers[0].type in (
        'FusedBatchNorm', 'FusedBatchNormV3')


def find_layers_to_quantize(graph):
    """The layers of `graph` to quantize, largest matches first.

    Returns:
      [_LayerMatch], one per layer op.
    """
    patterns = _Patterns()
    matches = []
    matched = set()
    operations = graph.get_operations()

    def add(layer_op, match):
        if layer_op is not None and layer_op not in matched:
            matched.add(layer_op)
            matches.append(match)

    for result in graph_matcher.GraphMatcher(
            patterns.post_activation_bypass).match_ops(operations):
        add(result.get_op(patterns.layer), _LayerMatch(
            result.get_op(patterns.layer), patterns.weight_tensor(result),
            result.get_op(patterns.activation),
            result.get_op(patterns.bypass),
            result.get_op(patterns.post_activation_bypass),
            patterns.bias_add_op(result)))
    for result in graph_matcher.GraphMatcher(
            patterns.activation).match_ops(operations):
        activation_op = result.get_op(patterns.activation)
        if _skip_layer(activation_op):
            continue
        add(result.get_op(patterns.layer), _LayerMatch(
            result.get_op(patterns.layer), patterns.weight_tensor(result),
            activation_op, result.get_op(patterns.bypass), None,
            patterns.bias_add_op(result)))
    for result in graph_matcher.GraphMatcher(
            patterns.final).match_ops(operations):
        add(result.get_op(patterns.layer), _LayerMatch(
            result.get_op(patterns.layer), patterns.weight_tensor(result),
            patterns.bias_add_op(result)))
    for result in graph_matcher.GraphMatcher(
            patterns.sep_conv).match_ops(operations):
        weight = result.get_tensor(patterns.weight_identity) or \
            result.get_tensor(patterns.weight_resource_read)
        add(result.get_op(patterns.layer), _LayerMatch(
            result.get_op(patterns.layer), weight,
            result.get_op(patterns.layer)))
    return matches


def _followed_by_fake_quant(tensor):
    pending = list(tensor.consumers())
    while pending:
        consumer = pending.pop()
        if consumer.type in common.FAKE_QUANT_TYPES:
            return True
        if consumer.type in ('Reshape', 'Identity'):
            for output in consumer.outputs:
                pending.extend(output.consumers())
    return False


class _Inserter(object):
    """Inserts fake-quant ops with one configuration."""

    def __init__(self, is_training, weight_bits, activation_bits, symmetric,
                 ema_decay, quant_delay, vars_collection, scope):
        self.is_training = is_training
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.symmetric = symmetric
        self.ema_decay = ema_decay
        self.quant_delay = quant_delay
        self.vars_collection = vars_collection
        self.scope = scope

    def insert(self, context, name, producer, consumers, moving_avg=True,
               init_min=-6.0, init_max=6.0, bits=None, narrow_range=False,
               producer_scope=None, consumer_scope=None):
        """Quantizes `producer`'s output for `consumers`.

        The variables are `<context>/<name>/{min,max}`.
        """
        if producer_scope and not producer.name.startswith(producer_scope):
            return
        if consumer_scope and any(not c.name.startswith(consumer_scope)
                                  for c in consumers):
            return
        name_prefix = (context + '/' + name) if context else name
        current_scope = tf.get_default_graph().get_name_scope()
        if current_scope:
            name_prefix = common.drop_prefix(name_prefix, current_scope + '/')
        inputs = producer.outputs[0]
        if _followed_by_fake_quant(inputs):
            return
        bits = bits or self.activation_bits
        quantize = quant_ops.MovingAvgQuantize if moving_avg else \
            quant_ops.LastValueQuantize
        kwargs = {'ema_decay': self.ema_decay} if moving_avg else {}
        quant = quantize(inputs, init_min=init_min, init_max=init_max,
                         is_training=self.is_training, num_bits=bits,
                         symmetric=self.symmetric, narrow_range=narrow_range,
                         vars_collection=self.vars_collection,
                         name_prefix=name_prefix, **kwargs)
        if self.quant_delay and self.quant_delay > 0:
            activate = tf.greater_equal(
                common.create_or_get_quantization_step(), self.quant_delay,
                name=name_prefix + '/activate_quant')
            quant = tf.cond(activate, lambda: quant, lambda: inputs,
                            name=name_prefix + '/delayed_quant')
        if consumers:
            rewired = common.reroute_tensor(quant, inputs,
                                            can_modify=consumers)
            if rewired < len(consumers):
                raise QuantizationError(
                    'could not rewire %s to read the quantized %s; rewrite '
                    'the graph before adding ops that read it' % (
                        ', '.join(c.name for c in consumers), inputs.name))


def _parent(context):
    return context.rpartition('/')[0]


def _quantize_layer(inserter, match, quantized_ops):
    scope = inserter.scope
    context = common.context_of(match.layer_op.name)
    if match.weight_tensor is not None:
        inserter.insert(context, 'weights_quant', match.weight_tensor.op,
                        common.consumer_ops(match.weight_tensor.op),
                        moving_avg=False, narrow_range=True,
                        bits=inserter.weight_bits, consumer_scope=scope)
    add_context = _parent(context) if match.bypass_op is not None else \
        context
    if match.activation_op is not None:
        inserter.insert(add_context, 'act_quant', match.activation_op,
                        common.consumer_ops(match.activation_op),
                        init_min=0.0, producer_scope=scope)
        quantized_ops.add(match.activation_op)
    if match.bypass_op is not None:
        inserter.insert(context, 'conv_quant', match.bias_add_op,
                        common.consumer_ops(match.bias_add_op),
                        producer_scope=scope, consumer_scope=scope)
        quantized_ops.add(match.bias_add_op)
        consumers = common.consumer_ops(match.bypass_op)
        if not any(c.type in _ACTIVATION_TYPES for c in consumers):
            inserter.insert(add_context, 'add_quant', match.bypass_op,
                            consumers, producer_scope=scope,
                            consumer_scope=scope)
            quantized_ops.add(match.bypass_op)
    bypass = match.post_activation_bypass_op
    if bypass is not None:
        consumers = common.consumer_ops(bypass)
        if not any(c.type in _RELU_TYPES for c in consumers):
            inserter.insert(common.context_of(bypass.name),
                            'post_activation_bypass_quant', bypass,
                            consumers, producer_scope=scope)
            quantized_ops.add(bypass)


def _is_quantizable_src(op, quantized_ops, depth=0):
    """An Add/Mul fed by a quantized tensor, not followed by a lone Relu."""
    if op in quantized_ops or op.type not in _VALID_SRC_TYPES or depth > 32:
        return False
    if len(op.outputs) == 1:
        consumers = op.outputs[0].consumers()
        if len(consumers) == 1 and consumers[0].type in _RELU_TYPES:
            return False
    for tensor in op.inputs:
        source = tensor.op
        while source.type in _PASS_THROUGH_TYPES and source.inputs:
            source = source.inputs[0].op
        if source.type in common.FAKE_QUANT_TYPES or \
                '/delayed_quant' in source.name:
            return True
        if source.type in _INTERMEDIATE_TYPES and any(
                _is_quantizable_src(t.op, quantized_ops, depth + 1)
                for t in source.inputs):
            return True
    return False


def Quantize(graph,  # pylint: disable=invalid-name
             is_training,
             weight_bits=8,
             activation_bits=8,
             symmetric=False,
             ema_decay=0.999,
             quant_delay=None,
             vars_collection=tf.GraphKeys.GLOBAL_VARIABLES,
             scope=None):
    """Adds fake quantization to `graph` in place.

    Args:
      graph: the tf.Graph (batch norms already folded).
      is_training: training form (ranges learned) or eval form (read).
      weight_bits, activation_bits: integer widths (2 to 8).
      symmetric: symmetric ranges instead of learned min and max.
      ema_decay: decay of the activation ranges' moving averages.
      quant_delay: None, or the step before which outputs stay float
        (ranges are learned all along).
      vars_collection: an extra collection for the range variables.
      scope: only rewrite ops under this name scope.

    Raises:
      QuantizationError: a tensor cannot be rewired.
    """
    if scope and not scope.endswith('/'):
        scope += '/'
    inserter = _Inserter(is_training, weight_bits, activation_bits, symmetric,
                         ema_decay, quant_delay, vars_collection, scope)
    quantized_ops = set()
    with graph.as_default():
        for match in find_layers_to_quantize(graph):
            _quantize_layer(inserter, match, quantized_ops)
        for op in graph.get_operations():
            if scope and not op.name.startswith(scope):
                continue
            if _is_quantizable_src(op, quantized_ops):
                _log.debug('quantizing the output of %s', op.name)
                inserter.insert(op.name, 'activation_%s_quant' % op.type, op,
                                common.consumer_ops(op))
