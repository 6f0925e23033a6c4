"""Slim checkpoints as trainable Keras 3 models, and back: the way out of TF1.

    model = keras_models.keras_model('mobilenet_v2_1.0_224')   # or a path
    model.fit(...)                                             # any backend
    keras_models.to_checkpoint(model, 'out/model.ckpt')        # slim again

`keras_model` builds the network the checkpoint holds (any family of the
tree: v1, v2, v3 large/small/minimalistic, EdgeTPU; any depth multiplier,
class count, input size, with or without the background class, and the
spec's `output_stride` or explicit padding) as a Keras 3 functional model
of standard layers only, with the checkpoint's weights:

* batch norm unfolded: `BatchNormalization` with the checkpoint's gamma,
  beta and moving statistics (the exponential-moving-average shadows when
  the checkpoint has them), the graph's epsilon and, as momentum, the arg
  scope's batch-norm `decay` (v1 0.9997, v2/v3/EdgeTPU 0.997);
* the arg scope's L2 weight decay w on every full convolution's kernel
  (depthwise kernels, biases and batch norm are not decayed, as in slim):
  slim's `l2_regularizer(w)` is w * sum(x^2) / 2, so Keras gets
  `L2(w / 2)`;
* the dropout slim trains with before the logits (v1 keep 0.999, v2/v3
  0.8 from the arg scope) as `Dropout`;
* TensorFlow's SAME padding made explicit (`ZeroPadding2D`, then 'valid'),
  so that every backend pads as slim did, at every input size;
* the layer names of Keras Applications (`conv_dw_1`, `block_1_expand`,
  `expanded_conv_1_squeeze_excite_conv`, `..._bn`/`_BN`;
  `slimnets.checkpoints.keras_weights` holds the correspondence, both
  ways).  EdgeTPU, which Applications lacks, is named like v3.

The model is built by translating the network's inference graph (built
by `nets_factory` exactly as slim builds it, restored, not folded) op by op,
so the Keras model computes slim's network whatever the variant; v3's
gates keep slim's relu6(x + 3) * 0.16667 (Keras Applications' v3 uses
/ 6, which is 1e-3 off on real weights), and Keras Applications' v1/v2
pad asymmetrically only where SAME does (inputs that are multiples of 32).

Its input is 'input' [N, size, size, 3] in [-1, 1] (Inception
preprocessing), its output the logits [N, num_classes].  `to_checkpoint`
writes the weights back as a slim checkpoint (`keras_weights`), checked
layer by layer against the slim network.

Not translated (one line naming the network and the op): group norm, and
anything else whose graph has an op without a standard Keras layer.
"""

import inspect
import os

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import nets_factory
from slimnets import optimize
from slimnets import registry
from slimnets import slim
from slimnets import train_config
from slimnets.checkpoints import keras_weights
from slimnets.errors import ExportError
from slimnets.export import keras as keras_export
from slimnets.graph_format import INPUT_NAME
from slimnets.inference import models

LOGITS_NAME = 'logits'
DEFAULT_WEIGHT_DECAY = train_config.DEFAULTS.weight_decay

_LOGITS_SCOPE = '/Logits/Conv2d_1c_1x1'


def _keras():
    import keras  # pylint: disable=import-outside-toplevel  (heavy)
    return keras


def training_options(network):
    """What slim trains `network` (a nets_factory name) with, from its arg
    scope and builder: {'momentum': batch-norm decay, 'dropout_rate': 1 -
    the dropout keep probability before the logits}."""
    scope = registry.arg_scope_fn(network)()
    batch_norm = scope.get(slim.arg_scope_func_key(slim.batch_norm), {})
    momentum = batch_norm.get('decay', inspect.signature(
        slim.batch_norm).parameters['decay'].default)
    dropout = scope.get(slim.arg_scope_func_key(slim.dropout), {})
    keep = dropout.get('keep_prob')
    if keep is None:
        parameter = inspect.signature(registry.builder(network)).parameters.get(
            'dropout_keep_prob')
        keep = parameter.default if parameter is not None else (
            inspect.signature(slim.dropout).parameters['keep_prob'].default)
    return {'momentum': float(momentum), 'dropout_rate': 1.0 - float(keep)}


class _TrainableBuilder(keras_export.KerasBuilder):  # pylint: disable=protected-access
    """Translates an unfolded inference GraphDef into trainable Keras
    layers named as Keras Applications names them."""

    def __init__(self, graph_def, keras, family, momentum, weight_decay,
                 dropout_rate):
        super().__init__(graph_def, keras)
        self.family = family
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dropout_rate = dropout_rate

    def _constant_name(self, name):
        node = self.nodes[name.split(':')[0]]
        while node.op == 'Identity':
            node = self.nodes[node.input[0].split(':')[0]]
        return node.name

    def keras_name(self, scope):
        name = keras_weights.keras_layer_name(self.family, scope)
        if name is None:
            raise ExportError('no Keras counterpart for slim layer %s' % scope)
        return name

    def convolution(self, node, bias=None, name=None, atrous=None):
        """A Conv2D or DepthwiseConv2D layer; `atrous`: (source tensor
        name, rate) of a SAME convolution TensorFlow wrapped in
        SpaceToBatchND / BatchToSpaceND (slim's `rate` > 1)."""
        del name  # named from the kernel's variable scope
        layers = self.keras.layers
        kernel = self.constant(node.input[1])
        scope = self._constant_name(node.input[1]).rsplit('/', 1)[0]
        strides = list(node.attr['strides'].list.i)[1:3]
        dilations = list(node.attr['dilations'].list.i)[1:3] or [1, 1]
        x = self.tensor(atrous[0] if atrous else node.input[0])
        if scope.endswith(_LOGITS_SCOPE) and self.dropout_rate > 0:
            x = layers.Dropout(self.dropout_rate, name='dropout')(x)
        if atrous:
            dilations = atrous[1]
            pads = tuple(keras_export.same_padding(
                x.shape[1 + axis], kernel.shape[axis], strides[axis],
                dilations[axis]) for axis in (0, 1))
            if pads != ((0, 0), (0, 0)):
                x = layers.ZeroPadding2D(pads, name=scope.replace('/', '_') +
                                         '_pad')(x)
        else:
            x = self._pad(node, x, kernel.shape[:2], strides, dilations)
        arguments = dict(kernel_size=kernel.shape[:2], strides=strides,
                         dilation_rate=dilations, padding='valid',
                         use_bias=bias is not None,
                         name=self.keras_name(scope))
        if node.op == 'Conv2D':
            regularizer = (self.keras.regularizers.L2(self.weight_decay / 2.0)
                           if self.weight_decay else None)
            layer = layers.Conv2D(kernel.shape[3],
                                  kernel_regularizer=regularizer, **arguments)
        else:
            layer = layers.DepthwiseConv2D(depth_multiplier=kernel.shape[3],
                                           **arguments)
        output = layer(x)
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        return output

    def _atrous(self, node):
        """(convolution node, source, rate) of BatchToSpaceND(conv(
        SpaceToBatchND(source))) with zero crops, else None."""
        conv = self.nodes[node.input[0].split(':')[0]]
        if conv.op not in ('Conv2D', 'DepthwiseConv2dNative'):
            return None
        space = self.nodes[conv.input[0].split(':')[0]]
        crops = self.constant(node.input[2])
        if space.op != 'SpaceToBatchND' or crops is None or crops.any() or (
                conv.attr['padding'].s != b'VALID'):
            return None
        rate = [int(r) for r in np.ravel(self.constant(space.input[1]))]
        return conv, space.input[0], rate

    def build(self, node):
        if node.op == 'Identity':
            return self.tensor(node.input[0])
        if node.op == 'BatchToSpaceND' and self._atrous(node):
            conv, source, rate = self._atrous(node)
            return self.convolution(conv, atrous=(source, rate))
        if node.op not in optimize.BATCH_NORMS:
            return super().build(node)
        if node.attr['is_training'].b or node.attr['data_format'].s not in (
                b'NHWC', b''):
            raise ExportError('cannot translate batch norm %s' % node.name)
        scope = self._constant_name(node.input[1]).rsplit('/', 1)[0]
        weights = [self.constant(name) for name in node.input[1:5]]
        layer = self.keras.layers.BatchNormalization(
            epsilon=node.attr['epsilon'].f, momentum=self.momentum,
            name=self.keras_name(scope))
        output = layer(self.tensor(node.input[0]))
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
        return output


def _model_name(spec, family):
    depth = spec.kwargs.get('depth_multiplier',
                            registry.network(spec.network).depth_multiplier)
    if family == 'edgetpu':
        return '%s_%.2f_%d' % (keras_weights.EDGETPU_MODEL_NAME, depth,
                               spec.image_size)
    return '%s_%.2f_%d' % (spec.network, depth, spec.image_size)


def build(spec, checkpoint, weight_decay=DEFAULT_WEIGHT_DECAY,
          dropout_rate=None, momentum=None, moving_average='auto'):
    """The trainable Keras model of `spec` with `checkpoint`'s weights.

    Args:
      spec: a `registry.ModelSpec` (`models.model_spec` works it out).
      checkpoint: the slim checkpoint prefix.
      weight_decay: slim's L2 weight decay (Keras gets half of it per
        kernel, see the module docstring); 0 or None: no regularizers.
      dropout_rate: before the logits; default slim's (`training_options`).
      momentum: of the batch norms; default slim's decay.
      moving_average: take the checkpoint's moving-average shadows: True,
        False or 'auto' (when present).

    Returns:
      keras.Model: 'input' [N, size, size, 3] -> logits [N, num_classes].

    Raises:
      ExportError: the network has a layer no standard Keras layer computes
        (the message names the network and the op).
    """
    keras = _keras()
    family = registry.network(spec.network).family
    if not spec.num_classes:
        raise ExportError('%s without classes has no logits to train: give '
                          'the checkpoint with its classifier' % spec.network)
    options = training_options(spec.network)
    graph_def, _ = optimize.frozen_inference_graph(
        spec, checkpoint, moving_average=moving_average, fold=False)
    builder = _TrainableBuilder(
        graph_def, keras, family,
        options['momentum'] if momentum is None else momentum,
        weight_decay or 0.0,
        options['dropout_rate'] if dropout_rate is None else dropout_rate)
    builder.tensors[INPUT_NAME] = keras.Input(
        shape=(spec.image_size, spec.image_size, 3), name=INPUT_NAME)
    try:
        logits = builder.tensor(LOGITS_NAME)
    except ExportError as error:
        raise ExportError('cannot build a Keras model of %s %s: %s (no '
                          'standard Keras layer computes it; `slimnets export '
                          '--format saved_model` still exports it)' % (
                              spec.network, spec.kwargs or '', error)) from None
    return keras.Model(builder.tensors[INPUT_NAME], logits,
                       name=_model_name(spec, family))


def keras_model(checkpoint=None, model=None, image_size=None,
                weight_decay=DEFAULT_WEIGHT_DECAY, dropout_rate=None,
                moving_average='auto', cache_dir=None, progress=True):
    """A trainable Keras 3 model of a slim checkpoint.

    Args:
      checkpoint: a checkpoint path or catalogue name; with neither it nor
        `model`, the default model (`registry.DEFAULT_MODEL`).
      model: a catalogue name, or the nets_factory network of `checkpoint`
        (default: recorded beside it, else identified from its variables).
      image_size: input size; default the checkpoint's (`models.model_spec`).
      weight_decay, dropout_rate, moving_average: see `build`.

    Returns:
      keras.Model: 'input' [N, size, size, 3] in [-1, 1] -> logits
      [N, num_classes].
    """
    spec, prefix = models.model_spec(
        model, models.weights_for(checkpoint, model), image_size,
        cache_dir=cache_dir, progress=progress)
    return build(spec, prefix, weight_decay=weight_decay,
                 dropout_rate=dropout_rate, moving_average=moving_average)


def slim_variable_shapes(spec):
    """{slim variable name: shape} of the network `spec` describes."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, spec.image_size,
                                             spec.image_size, 3])
        nets_factory.build_network(spec, images)
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()
                if not v.op.name.endswith('global_step')}


def to_checkpoint(model, output_prefix, spec=None):
    """Writes a Keras model's weights as a slim checkpoint.

    `model` is a model of `keras_model` (trained further, or reloaded from
    a .keras file) or a Keras Applications MobileNet of the same layout;
    its classes are kept as they are.  With `spec`, the checkpoint folder
    also records it (model.json), as `slimnets train` does.

    Args:
      spec: the `registry.ModelSpec` the weights must fill; default
        identified from the weights.

    Returns:
      (checkpoint prefix, the network's `Identity` or `spec.network`).

    Raises:
      CheckpointError: a layer does not match the slim network (the message
        names the first such Keras layer and both shapes); nothing is
        written then.
    """
    target = None
    if spec is not None:
        target = (spec.network, slim_variable_shapes(spec))
    prefix, identity = keras_weights.keras_to_checkpoint(
        model, output_prefix, add_background=False, target=target)
    if spec is not None:
        models.write_model_file(os.path.dirname(os.path.abspath(prefix)), spec)
    return prefix, identity


def save(model, path):
    """Saves `model` as a .keras file, atomically (nothing is left at
    `path` on failure); `keras.saving.load_model(path)` opens it without
    slimnets."""
    if not path.endswith('.keras'):
        raise ExportError('a Keras model is a .keras file: use --output '
                          'model.keras')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Keras names the format by the suffix: the temporary keeps it.
    scratch = fileio.temporary_name(path) + '.keras'
    try:
        model.save(scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    return path


def write_trainable(spec, checkpoint, path, probe, moving_average='auto',
                    weight_decay=DEFAULT_WEIGHT_DECAY):
    """Writes the trainable Keras model of a checkpoint to `path` (.keras);
    returns the reloaded model's probabilities of `probe` (inference)."""
    keras = _keras()
    save(build(spec, checkpoint, weight_decay=weight_decay,
               moving_average=moving_average), path)
    loaded = keras.saving.load_model(path)
    logits = np.asarray(loaded(probe, training=False), np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


__all__ = ['keras_model', 'build', 'to_checkpoint', 'save',
           'training_options', 'write_trainable', 'slim_variable_shapes']
