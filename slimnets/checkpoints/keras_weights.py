"""Keras Applications MobileNets <-> slim checkpoints, both ways.

`keras.applications.MobileNet`, `MobileNetV2`, `MobileNetV3Large` and
`MobileNetV3Small` are the slim architectures with other layer names:

    v1  conv1, conv_dw_N, conv_pw_N (+ '_bn'), conv_preds
    v2  Conv1/bn_Conv1, expanded_conv_{depthwise,project}(_BN),
        block_N_{expand,depthwise,project}(_BN), Conv_1(_bn), predictions
    v3  conv(_bn), expanded_conv_N_{expand,depthwise,project}(_bn),
        expanded_conv_N_squeeze_excite_conv(_1), conv_1(_bn), conv_2, logits

Keras classifies 1000 classes, slim 1001 (index 0 is background): towards
Keras the background column is dropped; towards slim a background column
is added whose logit is always below every other class's.

Keras v3 models must be built with `include_preprocessing=False` (slim
networks take inputs already scaled to [-1, 1]); classifiers with
`classifier_activation=None` give the logits.
"""

import os
import re

import numpy as np

from slimnets import registry
from slimnets.checkpoints import converters
from slimnets.checkpoints import identification
from slimnets.checkpoints import reader
from slimnets.errors import CheckpointError

_BN_SUFFIX = re.compile(r'^(.*?)_(?:bn|BN)$')


# `slimnets.keras_models` names its EdgeTPU models so (Keras Applications
# has none; their layers are named as in v3).
EDGETPU_MODEL_NAME = 'MobilenetEdgeTPU'


def keras_family(model):
    """'v1', 'v2', 'v3' from a Keras Applications MobileNet's layer names
    ('edgetpu' for a `slimnets.keras_models` EdgeTPU, by its model name)."""
    names = {layer.name for layer in model.layers}
    if model.name.startswith(EDGETPU_MODEL_NAME) and (
            'expanded_conv_1_expand' in names):
        return 'edgetpu'
    if 'conv_dw_1' in names:
        return 'v1'
    if 'block_1_expand' in names:
        return 'v2'
    if 'expanded_conv_1_expand' in names or 'expanded_conv_depthwise' in names:
        return 'v3'
    raise CheckpointError('%s is not a Keras Applications MobileNet (v1, v2 '
                          'or v3)' % model.name)


_ROOTS = {name: registry.FAMILIES[name].root
          for name in ('v1', 'v2', 'v3', 'edgetpu')}


def _v1_scope(name):
    if name == 'conv1':
        return 'Conv2d_0'
    match = re.match(r'conv_(dw|pw)_(\d+)$', name)
    if match:
        return 'Conv2d_%s_%s' % (match.group(2), {
            'dw': 'depthwise', 'pw': 'pointwise'}[match.group(1)])
    return {'conv_preds': 'Logits/Conv2d_1c_1x1'}.get(name)


def _v2_scope(name):
    if name == 'Conv1':
        return 'Conv'
    if name == 'Conv_1':
        return 'Conv_1'
    if name == 'predictions':
        return 'Logits/Conv2d_1c_1x1'
    match = re.match(r'(?:expanded_conv|block_(\d+))_(expand|depthwise|'
                     r'project)$', name)
    if match:
        block = 'expanded_conv' + ('_%s' % match.group(1)
                                   if match.group(1) else '')
        return '%s/%s' % (block, match.group(2))
    return None


def _v3_scope(name):
    if name in ('conv', 'conv_1', 'conv_2'):
        return {'conv': 'Conv', 'conv_1': 'Conv_1', 'conv_2': 'Conv_2'}[name]
    if name == 'logits':
        return 'Logits/Conv2d_1c_1x1'
    match = re.match(r'(expanded_conv(?:_\d+)?)_(?:(expand|depthwise|project)|'
                     r'squeeze_excite_(conv(?:_1)?))$', name)
    if match:
        if match.group(2):
            return '%s/%s' % (match.group(1), match.group(2))
        return '%s/squeeze_excite/%s' % (match.group(1), {
            'conv': 'Conv', 'conv_1': 'Conv_1'}[match.group(3)])
    return None


_SCOPES = {'v1': _v1_scope, 'v2': _v2_scope, 'v3': _v3_scope,
           'edgetpu': _v3_scope}


def _v1_name(scope):
    if scope == 'Conv2d_0':
        return 'conv1'
    match = re.match(r'Conv2d_(\d+)_(depthwise|pointwise)$', scope)
    if match:
        return 'conv_%s_%s' % ({'depthwise': 'dw', 'pointwise': 'pw'}[
            match.group(2)], match.group(1))
    return None


def _v2_name(scope):
    names = {'Conv': 'Conv1', 'Conv_1': 'Conv_1'}
    if scope in names:
        return names[scope]
    match = re.match(r'expanded_conv(?:_(\d+))?/(expand|depthwise|project)$',
                     scope)
    if match:
        return '%s_%s' % ('block_' + match.group(1) if match.group(1) else
                          'expanded_conv', match.group(2))
    return None


def _v3_name(scope):
    if scope in ('Conv', 'Conv_1', 'Conv_2'):
        return scope.lower()
    match = re.match(r'(expanded_conv(?:_\d+)?)/(?:(expand|depthwise|project)|'
                     r'squeeze_excite/(Conv(?:_1)?))$', scope)
    if match:
        return '%s_%s' % (match.group(1), match.group(2) or
                          'squeeze_excite_' + match.group(3).lower())
    return None


_NAMES = {'v1': _v1_name, 'v2': _v2_name, 'v3': _v3_name, 'edgetpu': _v3_name}
_LOGITS_NAMES = {'v1': 'conv_preds', 'v2': 'predictions', 'v3': 'logits',
                 'edgetpu': 'logits'}
_BN_NAMES = {'v1': '%s_bn', 'v2': '%s_BN', 'v3': '%s_bn', 'edgetpu': '%s_bn'}


def keras_layer_name(family, scope):
    """The Keras Applications layer name of slim variable scope `scope`
    (with its root, e.g. 'MobilenetV1/Conv2d_1_depthwise' -> 'conv_dw_1';
    '.../BatchNorm' -> the layer's batch norm, 'conv_dw_1_bn'), the inverse
    of `layer_scopes`; None when the scope has no Keras counterpart.

    Args:
      family: 'v1', 'v2', 'v3' or 'edgetpu'.
    """
    root = _ROOTS[family] + '/'
    if not scope.startswith(root):
        return None
    scope = scope[len(root):]
    batch_norm = scope.endswith('/BatchNorm')
    if batch_norm:
        scope = scope[:-len('/BatchNorm')]
    if scope == 'Logits/Conv2d_1c_1x1':
        name = None if batch_norm else _LOGITS_NAMES[family]
    else:
        name = _NAMES[family](scope)
    if name is None or _SCOPES[family](name) != scope:
        return None
    if not batch_norm:
        return name
    special = {'Conv1': 'bn_Conv1', 'Conv_1': 'Conv_1_bn'} if (
        family == 'v2') else {}
    return special.get(name, _BN_NAMES[family] % name)


def layer_scopes(model):
    """[(keras layer, slim variable scope, is batch norm)] for every layer
    with weights.

    Raises:
      CheckpointError: a weighted layer has no slim counterpart.
    """
    family = keras_family(model)
    scope_of = _SCOPES[family]
    root = _ROOTS[family]
    pairs = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name == 'bn_Conv1':
            pairs.append((layer, root + '/Conv/BatchNorm', True))
            continue
        batch_norm = _BN_SUFFIX.match(layer.name)
        scope = scope_of(batch_norm.group(1) if batch_norm else layer.name)
        if scope is None:
            raise CheckpointError('no slim counterpart for Keras layer %r'
                                  % layer.name)
        pairs.append((layer, '%s/%s%s' % (root, scope, '/BatchNorm'
                                          if batch_norm else ''),
                      bool(batch_norm)))
    return pairs


def _slim_kernel_name(layer, scope):
    kind = type(layer).__name__
    return scope + ('/depthwise_weights' if kind == 'DepthwiseConv2D'
                    else '/weights')


def _with_background(kernel, bias):
    """1000-class head -> 1001 classes, class 0 never the most likely."""
    kernel = np.concatenate([np.zeros(kernel.shape[:-1] + (1,), kernel.dtype),
                             kernel], axis=-1)
    bias = np.concatenate([[bias.min() - 100.0], bias]).astype(bias.dtype)
    return kernel, bias


def keras_to_variables(model, add_background=True):
    """{slim variable name: array} of a Keras Applications MobileNet.

    Args:
      add_background: a 1000-class head gets slim's background class 0
        (Keras Applications' ImageNet heads); False keeps the classes as
        they are (models from `slimnets.keras_models`).
    """
    values = {}
    for layer, scope, is_batch_norm in layer_scopes(model):
        weights = [np.asarray(w) for w in layer.get_weights()]
        if is_batch_norm:
            names = [n for n, on in (('gamma', layer.scale),
                                     ('beta', layer.center)) if on]
            names += ['moving_mean', 'moving_variance']
            values.update({scope + '/' + n: w for n, w in zip(names, weights)})
            continue
        kernel = weights[0]
        if type(layer).__name__ == 'Dense':
            kernel = kernel.reshape((1, 1) + kernel.shape)
        bias = weights[1] if len(weights) > 1 else None
        if add_background and scope.endswith('Logits/Conv2d_1c_1x1') and (
                kernel.shape[-1] == 1000):
            kernel, bias = _with_background(kernel, bias)
        values[_slim_kernel_name(layer, scope)] = kernel
        if bias is not None:
            values[scope + '/biases'] = bias
    return values


def _check_layers(model, values, target, network):
    """Raises naming the first Keras layer whose weights have no slim
    variable of the same shape in `target` ({name: shape})."""
    for layer, scope, _ in layer_scopes(model):
        for name in sorted(n for n in values
                           if n.rsplit('/', 1)[0] == scope):
            if name not in target:
                raise CheckpointError(
                    'Keras layer %r does not match %s: it has %s %s, the slim '
                    'network has no such variable; nothing was written' % (
                        layer.name, network, name, list(values[name].shape)))
            if list(values[name].shape) != list(target[name]):
                raise CheckpointError(
                    'Keras layer %r does not match %s: %s is %s in Keras, %s '
                    'in slim; nothing was written' % (
                        layer.name, network, name, list(values[name].shape),
                        list(target[name])))


def keras_to_checkpoint(model, output_prefix, add_background=True,
                        target=None):
    """Writes a slim checkpoint with a Keras Applications MobileNet's weights.

    The slim network is identified from the weights (or given), built, and
    must be filled completely with matching shapes; otherwise nothing is
    written.

    Args:
      add_background: see `keras_to_variables`.
      target: (Identity or a description, {slim variable name: shape}) of
        the network to fill; default identified from the weights.

    Beside an identified network's checkpoint `<prefix>.slimnets.json`
    records it (`slimnets.model_info`): the network, the Keras model's
    input size, the classes and the label offset (1 for the 1001 classes
    of a background-extended ImageNet head).

    Returns:
      (checkpoint prefix, the slim network's `Identity`, or `target[0]`).

    Raises:
      CheckpointError: naming the first Keras layer that does not match.
    """
    values = keras_to_variables(model, add_background=add_background)
    if target is None:
        identity, shapes = converters.target_variables(
            {name: list(value.shape) for name, value in values.items()})
    else:
        identity, shapes = target
    _check_layers(model, values, shapes, getattr(identity, 'network', None)
                  or identity)
    converters._check_complete(values, shapes, model.name)  # pylint: disable=protected-access
    prefix = converters.write_checkpoint(values, output_prefix)
    if isinstance(identity, identification.Identity):
        shape = tuple(model.input_shape)
        logits = [v for n, v in values.items()
                  if n.endswith('Logits/Conv2d_1c_1x1/biases')]
        classes = int(logits[0].shape[-1]) if logits else None
        converters.write_model_info(
            prefix, identity._replace(num_classes=classes or
                                      identity.num_classes),
            shape[1] if len(shape) == 4 and shape[1] and
            shape[1] == shape[2] else None,
            'Keras model %s' % model.name)
    return prefix, identity


def checkpoint_to_keras(checkpoint, model, moving_average='auto'):
    """Loads a slim checkpoint into a Keras Applications MobileNet, in place.

    Args:
      checkpoint: a slim checkpoint path.
      model: the Keras model, built with `weights=None` and the architecture
        of the checkpoint (alpha, input size, minimalistic, classes 1000 or
        1001, `include_preprocessing=False` for v3).
      moving_average: use '<name>/ExponentialMovingAverage' shadows: True,
        False or 'auto' (when present).

    Raises:
      CheckpointError: a Keras weight has no checkpoint entry or another
        shape; the model is left unchanged.
    """
    prefix, checkpoint_reader = reader.open_checkpoint(checkpoint)
    shapes = checkpoint_reader.get_variable_to_shape_map()

    def key(name):
        shadow = name + '/ExponentialMovingAverage'
        if moving_average is True or (moving_average == 'auto' and
                                      shadow in shapes):
            return shadow
        return name

    assignments = []
    for layer, scope, is_batch_norm in layer_scopes(model):
        current = layer.get_weights()
        if is_batch_norm:
            names = [n for n, on in (('gamma', layer.scale),
                                     ('beta', layer.center)) if on]
            names = [scope + '/' + n for n in
                     names + ['moving_mean', 'moving_variance']]
        else:
            names = [_slim_kernel_name(layer, scope)]
            if len(current) > 1:
                names.append(scope + '/biases')
        missing = [n for n in names if key(n) not in shapes]
        if missing:
            raise CheckpointError('%s has no %s (for Keras layer %r); nothing '
                                  'was loaded' % (prefix, missing[0],
                                                  layer.name))
        values = [checkpoint_reader.get_tensor(key(n)) for n in names]
        if not is_batch_norm:
            if type(layer).__name__ == 'Dense':
                values[0] = values[0].reshape(values[0].shape[2:])
            if current[0].shape[-1] == values[0].shape[-1] - 1:
                values = [v[..., 1:] for v in values]  # drop background
        for target, value, name in zip(current, values, names):
            if target.shape != value.shape:
                raise CheckpointError(
                    'Keras layer %r expects %s for %s, the checkpoint has %s '
                    '(different alpha, classes or variant?); nothing was '
                    'loaded' % (layer.name, target.shape, name, value.shape))
        assignments.append((layer, values))
    for layer, values in assignments:
        layer.set_weights(values)
    return model


def keras_application(network, network_kwargs, input_size):
    """The Keras Applications model (random weights, logits out) whose
    weights fill the slim network `network` (a nets_factory name) built
    with `network_kwargs` at `input_size`.

    Raises:
      CheckpointError: Keras Applications has no such model.
    """
    import keras  # pylint: disable=import-outside-toplevel  (heavy, optional)
    alpha = network_kwargs.get('depth_multiplier', 1.0)
    shape = (input_size, input_size, 3)
    common = dict(weights=None, input_shape=shape, classifier_activation=None)
    if network.startswith('mobilenet_v1'):
        return keras.applications.MobileNet(alpha=alpha, **common)
    if network.startswith('mobilenet_v2'):
        return keras.applications.MobileNetV2(alpha=alpha, **common)
    if network.startswith('mobilenet_v3_'):
        function = (keras.applications.MobileNetV3Large
                    if network.startswith('mobilenet_v3_large') else
                    keras.applications.MobileNetV3Small)
        return function(alpha=alpha, minimalistic='minimalistic' in network,
                        include_preprocessing=False, **common)
    raise CheckpointError('Keras Applications has no counterpart of %s'
                          % network)


def load_keras_weights_file(model, path):
    """Loads a Keras weights file (.h5, legacy or Keras 3 layout) into
    `model`, in place.

    Raises:
      CheckpointError: the file is not a weights file of this model.
    """
    import h5py  # pylint: disable=import-outside-toplevel  (comes with keras)
    try:
        with h5py.File(path, 'r') as handle:
            legacy = 'layer_names' in handle.attrs or (
                'model_weights' in handle)
        if legacy:
            named = path if path.endswith('.h5') and not path.endswith(
                '.weights.h5') else path + '.h5'
        else:
            named = path if path.endswith('.weights.h5') else (
                path + '.weights.h5')
        if named != path:
            os.link(path, named)
        try:
            model.load_weights(named)
        finally:
            if named != path:
                os.unlink(named)
    except CheckpointError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        # h5py and Keras raise OSError, KeyError, ValueError, TypeError...
        raise CheckpointError('%s is not a Keras weights file for %s (%s: %s)'
                              % (path, model.name, type(error).__name__,
                                 str(error).splitlines()[0] if str(error)
                                 else '')) from None
    return model


__all__ = ['keras_application', 'load_keras_weights_file', 'keras_family',
           'layer_scopes', 'keras_to_variables', 'keras_to_checkpoint',
           'checkpoint_to_keras', 'keras_layer_name']
