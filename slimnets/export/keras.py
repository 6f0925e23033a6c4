"""The Keras export: the folded inference graph as a Keras 3 functional model
of Keras layers (Conv2D, DepthwiseConv2D, ReLU, Add, Multiply, Rescaling,
pooling, Softmax), saved as .keras and loadable by
`keras.saving.load_model` without slimnets.  TensorFlow's SAME padding
(more at the bottom and right when the total is odd) is made explicit with
ZeroPadding2D so that every Keras backend pads as slim did.

`KerasBuilder` turns the graph's nodes into layers; `slimnets.keras_models`
extends it into the trainable model (batch norm unfolded).
"""

import math
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets.errors import ExportError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES

__all__ = ['KerasBuilder', 'same_padding', 'keras_model', 'write_keras']

def same_padding(size, kernel, stride, dilation=1):
    """TensorFlow's SAME padding of one spatial dimension: (before, after),
    the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    output = int(math.ceil(size / float(stride)))
    total = max((output - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _layer_name(node_name):
    return re.sub(r'[^A-Za-z0-9_.-]', '_', node_name)


class KerasBuilder(object):
    """Translates a folded inference GraphDef into Keras layers."""

    def __init__(self, graph_def, keras):
        self.keras = keras
        self.nodes = {node.name: node for node in graph_def.node}
        self.consumers = {}
        for node in graph_def.node:
            for name in node.input:
                producer = name.lstrip('^').split(':')[0]
                self.consumers.setdefault(producer, []).append(node.name)
        self.tensors = {}

    def constant(self, name):
        node = self.nodes[name.split(':')[0]]
        while node.op == 'Identity':
            node = self.nodes[node.input[0].split(':')[0]]
        if node.op != 'Const':
            return None
        return tf.make_ndarray(node.attr['value'].tensor)

    def scalar(self, node):
        """(tensor input name, scalar) of a binary op with one scalar Const
        input, else None."""
        for index in (0, 1):
            value = self.constant(node.input[index])
            if value is not None and value.size == 1:
                return node.input[1 - index], float(value.reshape(()))
        return None

    def tensor(self, name):
        name = name.split(':')[0]
        if name not in self.tensors:
            self.tensors[name] = self.build(self.nodes[name])
        return self.tensors[name]

    def _pad(self, node, x, kernel, strides, dilations):
        padding = node.attr['padding'].s.decode()
        if padding == 'VALID':
            return x
        if padding != 'SAME':
            raise ExportError('cannot export %s to Keras: padding %s' % (
                node.name, padding))
        height, width = x.shape[1], x.shape[2]
        pads = (same_padding(height, kernel[0], strides[0], dilations[0]),
                same_padding(width, kernel[1], strides[1], dilations[1]))
        if pads == ((0, 0), (0, 0)):
            return x
        return self.keras.layers.ZeroPadding2D(
            pads, name=_layer_name(node.name) + '_pad')(x)

    def convolution(self, node, bias=None, name=None):
        layers = self.keras.layers
        kernel = self.constant(node.input[1])
        if kernel is None:
            raise ExportError('cannot export %s to Keras: its weights are '
                              'not constant' % node.name)
        if node.attr['data_format'].s not in (b'NHWC', b''):
            raise ExportError('cannot export %s to Keras: data format %s' % (
                node.name, node.attr['data_format'].s.decode()))
        strides = list(node.attr['strides'].list.i)[1:3]
        dilations = list(node.attr['dilations'].list.i)[1:3] or [1, 1]
        x = self._pad(node, self.tensor(node.input[0]), kernel.shape[:2],
                      strides, dilations)
        arguments = dict(kernel_size=kernel.shape[:2], strides=strides,
                         dilation_rate=dilations, padding='valid',
                         use_bias=bias is not None,
                         name=_layer_name(name or node.name))
        if node.op == 'Conv2D':
            layer = layers.Conv2D(kernel.shape[3], **arguments)
        else:
            layer = layers.DepthwiseConv2D(depth_multiplier=kernel.shape[3],
                                           **arguments)
        output = layer(x)
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        return output

    def build(self, node):  # pylint: disable=too-many-return-statements,too-many-branches
        layers = self.keras.layers
        name = _layer_name(node.name)
        op = node.op
        if op in ('Conv2D', 'DepthwiseConv2dNative'):
            return self.convolution(node)
        if op == 'BiasAdd':
            producer = self.nodes[node.input[0].split(':')[0]]
            bias = self.constant(node.input[1])
            if producer.op in ('Conv2D', 'DepthwiseConv2dNative') and \
                    len(self.consumers[producer.name]) == 1:
                return self.convolution(producer, bias, name=node.name)
            raise ExportError('cannot export %s to Keras: a bias after %s'
                              % (node.name, producer.op))
        if op == 'Relu6':
            return layers.ReLU(max_value=6.0, name=name)(
                self.tensor(node.input[0]))
        if op == 'Relu':
            return layers.ReLU(name=name)(self.tensor(node.input[0]))
        if op in ('AddV2', 'Add', 'Mul'):
            scalar = self.scalar(node)
            if scalar is not None:
                source, value = scalar
                rescaling = layers.Rescaling(
                    scale=value if op == 'Mul' else 1.0,
                    offset=0.0 if op == 'Mul' else value, name=name)
                return rescaling(self.tensor(source))
            merge = layers.Multiply if op == 'Mul' else layers.Add
            return merge(name=name)([self.tensor(node.input[0]),
                                     self.tensor(node.input[1])])
        if op in ('AvgPool', 'MaxPool'):
            pool = layers.AveragePooling2D if op == 'AvgPool' else \
                layers.MaxPooling2D
            return pool(pool_size=list(node.attr['ksize'].list.i)[1:3],
                        strides=list(node.attr['strides'].list.i)[1:3],
                        padding=node.attr['padding'].s.decode().lower(),
                        name=name)(self.tensor(node.input[0]))
        if op == 'Mean':
            axes = sorted(int(a) for a in np.ravel(self.constant(
                node.input[1])))
            if axes != [1, 2]:
                raise ExportError('cannot export %s to Keras: mean over %s'
                                  % (node.name, axes))
            return layers.GlobalAveragePooling2D(
                keepdims=node.attr['keep_dims'].b, name=name)(
                    self.tensor(node.input[0]))
        if op == 'Pad':
            paddings = self.constant(node.input[1])
            if paddings is None or paddings[0].any() or paddings[3].any():
                raise ExportError('cannot export %s to Keras: padding '
                                  'outside height and width' % node.name)
            return layers.ZeroPadding2D(
                [tuple(int(p) for p in paddings[1]),
                 tuple(int(p) for p in paddings[2])], name=name)(
                     self.tensor(node.input[0]))
        if op in ('Squeeze', 'Reshape'):
            x = self.tensor(node.input[0])
            shape = _reshape_target(node, x)
            return layers.Reshape(shape, name=name)(x)
        if op == 'Softmax':
            return layers.Softmax(name=name)(self.tensor(node.input[0]))
        if op == 'Identity':
            return layers.Identity(name=name)(self.tensor(node.input[0]))
        raise ExportError('cannot export %s to Keras: op %s has no Keras '
                          'layer here' % (node.name, op))


def _reshape_target(node, x):
    """The per-example output shape of a Squeeze or Reshape on `x`."""
    if node.op == 'Squeeze':
        dims = list(node.attr['squeeze_dims'].list.i)
        return tuple(d for i, d in enumerate(x.shape)
                     if i > 0 and (i not in dims if dims else d != 1))
    raise ExportError('cannot export %s to Keras: Reshape' % node.name)


def keras_model(graph_def):
    """A Keras 3 model with input 'input' [N, size, size, 3] and outputs
    {'logits', 'probabilities'} [N, num_classes], from the folded graph."""
    import keras  # pylint: disable=import-outside-toplevel
    builder = KerasBuilder(graph_def, keras)
    shape = [d.size for d in
             builder.nodes[INPUT_NAME].attr['shape'].shape.dim]
    builder.tensors[INPUT_NAME] = keras.Input(
        shape=tuple(shape[1:]), name=INPUT_NAME)
    outputs = {name: builder.tensor(name) for name in OUTPUT_NAMES}
    return keras.Model(builder.tensors[INPUT_NAME], outputs,
                       name='slimnets')


def write_keras(graph_def, path, probe):
    """Writes a .keras model; returns the reloaded model's probabilities."""
    import keras  # pylint: disable=import-outside-toplevel
    # Keras names the format by the suffix: the temporary keeps it.
    scratch = fileio.temporary_name(fileio.parent_folder_made(path)) + '.keras'
    try:
        keras_model(graph_def).save(scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    loaded = keras.saving.load_model(path)
    return np.asarray(loaded(probe, training=False)['probabilities'])
