"""Model resolution: which network, size and classes a checkpoint needs.

`model_spec(model, checkpoint)` turns what a user names (a nets_factory
name, a catalogue name, a checkpoint path, or nothing: the default model)
into a `ModelSpec` and a checkpoint prefix, fetching catalogue checkpoints
into the cache.  What slimnets records beside every checkpoint it writes
(`slimnets.model_info`: network, input size, classes, label offset) and
the class names of training folders (`labels.txt`) are read here.
"""

import os

import numpy as np

from slimnets import checkpoints
from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets import model_info
from slimnets import nets_factory
from slimnets import quantize
from slimnets import registry
from slimnets.checkpoints import embedded
from slimnets.errors import InputError
from slimnets.graph_format import MAX_IMAGE_SIZE
from slimnets.graph_format import MIN_IMAGE_SIZE
from slimnets.registry import ModelSpec

__all__ = [
    'DEFAULT_MODEL', 'LABELS_FILE', 'MODEL_FILE', 'base_network',
    'build_network', 'size_from_name', 'model_spec', 'check_image_size',
    'weights_for', 'weights_name', 'write_model_file', 'read_model_file',
    'class_names_for',
]

DEFAULT_MODEL = registry.DEFAULT_MODEL

LABELS_FILE = labels_lib.LABELS_FILE
MODEL_FILE = model_info.FOLDER_FILE
base_network = registry.base_network
build_network = nets_factory.build_network


def _kwargs_from_identity(identity):
    kwargs = {}
    if identity.depth_multiplier is not None:
        kwargs['depth_multiplier'] = identity.depth_multiplier
    if identity.finegrain and identity.family in ('v2', 'v3', 'edgetpu'):
        kwargs['finegrain_classification_mode'] = True
    if identity.variant and identity.variant.endswith('_DETECTION'):
        raise InputError('the checkpoint holds a detection backbone (%s) '
                         'without a classifier head' % identity.variant)
    return kwargs


def size_from_name(prefix, depth_multiplier):
    """The input size a published-style path names ('.../0.25_128/...')
    for `depth_multiplier`, or None."""
    for depth, size in registry.parse_published_name(prefix):
        if depth_multiplier is not None and abs(
                depth - depth_multiplier) < 1e-6:
            return size
    return None


def model_spec(model=None, checkpoint=None, image_size=None, num_classes=None,
               cache_dir=None, progress=True, force_image_size=False):
    """Works out which network to build for a checkpoint.

    Args:
      model: a nets_factory name, a catalogue name, or None: the network
        recorded beside the checkpoint (`slimnets.model_info`: every
        checkpoint slimnets writes), else inferred from its variables.
      checkpoint: a checkpoint path or catalogue name (fetched if needed).
      image_size: input size; default the size recorded beside the
        checkpoint (`slimnets.model_info`), else the catalogue's, else the
        size a published-style path names ('0.25_128'), else the network's.
      num_classes: default the checkpoint's.
      force_image_size: allow an `image_size` other than the calibration
        size recorded for a quantization-aware checkpoint (see
        `check_image_size`).

    Returns:
      (ModelSpec, checkpoint prefix or None).

    Raises:
      InputError: unknown model name, a checkpoint of another network, or
        an image size that contradicts a QAT checkpoint's calibration.
      CheckpointError: the record beside the checkpoint is damaged.
    """
    _check_arguments(model, checkpoint, image_size, num_classes)
    if checkpoint is not None:
        checkpoint = fileio.path_argument(checkpoint, 'checkpoint')
    if embedded.is_embedded(model):   # `--model embedded`: its weights
        model, checkpoint = None, checkpoint or embedded.NAME
    item = None
    if model is not None and model not in nets_factory.networks_map:
        try:
            item = checkpoints.entry(model)
        except KeyError:
            raise InputError('unknown model %r: use a network (%s) or a '
                             'catalogue name (`slimnets list`)' % (
                                 model, ', '.join(sorted(
                                     nets_factory.networks_map)))) from None
    if item is None and checkpoint is not None and not os.path.exists(
            checkpoint + '.index') and os.sep not in checkpoint:
        try:
            item = checkpoints.entry(checkpoint)
        except KeyError:
            item = None
    prefix = checkpoints.resolve(checkpoint, cache_dir=cache_dir,
                                 progress=progress) if checkpoint else None

    identity = checkpoints.identify(checkpoints.variable_shapes(prefix)) \
        if prefix else None
    recorded = model_info.read(prefix) if prefix else None
    requested_size = image_size
    if recorded is not None and model is None:
        network = recorded.network
        spec = ModelSpec(network, dict(recorded.kwargs or {}), int(
            image_size or recorded.image_size or _default_size(
                network, prefix, identity)), int(
                    num_classes or recorded.num_classes or (
                        identity.num_classes if identity and
                        identity.num_classes else 1001)))
        check_image_size(prefix, requested_size, force_image_size)
        return spec, prefix
    if model in nets_factory.networks_map:
        network = model
    elif item is not None:
        network = item.network
    elif identity is not None and identity.network:
        network = identity.network
    else:
        raise InputError('cannot tell which network %s holds (%s); pass '
                         '--model' % (prefix, checkpoints.describe(identity)
                                      if identity else 'no checkpoint'))

    if identity is not None and identity.family is not None:
        if base_network(identity.network or '') != base_network(network):
            raise InputError('the checkpoint %s holds %s, not %s' % (
                prefix, checkpoints.describe(identity), network))
        kwargs = _kwargs_from_identity(identity)
    elif item is not None:
        kwargs = dict(item.network_kwargs)
    else:
        kwargs = {}
    if image_size is None and recorded is not None and \
            recorded.image_size and base_network(recorded.network) == \
            base_network(network):
        image_size = recorded.image_size
    if image_size is None and item is not None:
        image_size = item.input_size
    if image_size is None and embedded.is_embedded(checkpoint):
        image_size = embedded.IMAGE_SIZE
    if image_size is None:
        image_size = _default_size(network, prefix, identity)
    if num_classes is None:
        num_classes = (identity.num_classes if identity and
                       identity.num_classes else 1001)
    check_image_size(prefix, requested_size, force_image_size)
    return ModelSpec(network, kwargs, int(image_size), int(num_classes)), prefix


def _check_arguments(model, checkpoint, image_size, num_classes):
    """Refuses arguments of the wrong type or range before any work."""
    if model is not None and not isinstance(model, str):
        raise InputError('model must be a network or catalogue name (a str), '
                         'got %r' % (model,))
    if checkpoint is not None:
        fileio.path_argument(checkpoint, 'checkpoint')
    if image_size is not None and (
            isinstance(image_size, bool) or
            not isinstance(image_size, (int, np.integer)) or
            not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise InputError('image_size must be a whole number of pixels in '
                         '%d..%d (or None: the model\'s), got %r' % (
                             MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, image_size))
    if num_classes is not None and (
            isinstance(num_classes, bool) or
            not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
        raise InputError('num_classes must be a whole number of at least 1 '
                         '(or None: the checkpoint\'s), got %r' % (
                             num_classes,))


def _default_size(network, prefix, identity):
    """The size a published-style path names, else the network's."""
    size = size_from_name(prefix, identity.depth_multiplier) if (
        identity is not None and prefix) else None
    return size or nets_factory.get_network_fn(network, 1).default_image_size


def check_image_size(prefix, image_size, force_image_size=False):
    """Refuses an input size that contradicts a QAT checkpoint's record.

    A quantization-aware checkpoint's activation ranges were calibrated at
    one input size (recorded beside it, `slimnets.model_info`); another
    `image_size` contradicts it, and is refused unless `force_image_size`.
    Float checkpoints, and QAT checkpoints with no recorded size, run at
    any size (the networks are fully convolutional).

    Raises:
      InputError: naming both sizes and the two ways out.
    """
    if image_size is None or force_image_size or prefix is None:
        return
    recorded = model_info.read(prefix)
    if recorded is None or not recorded.image_size or \
            int(image_size) == recorded.image_size or \
            not quantize.has_quantization_ranges(prefix):
        return
    raise InputError(
        '%s is a quantization-aware checkpoint calibrated at %dx%d (recorded '
        'in %s), so --image-size %d contradicts it: leave --image-size out, '
        'or pass --force-image-size to run it at %d with ranges calibrated at '
        '%d' % (prefix, recorded.image_size, recorded.image_size,
                model_info.where(prefix), int(image_size), int(image_size),
                recorded.image_size))


def weights_for(checkpoint=None, model=None):
    """The checkpoint to restore when a user names `checkpoint`, `model`,
    both or neither: the checkpoint when given; else `model` when it is a
    catalogue name (or `embedded`); else `DEFAULT_MODEL`, the embedded
    model, when nothing is named.

    Raises:
      InputError: `model` names a network architecture, which has no
        weights of its own; a `checkpoint` that is not a path or a
        `model` that is not a name.
    """
    _check_arguments(model, checkpoint, None, None)
    if checkpoint is not None:
        return fileio.path_argument(checkpoint, 'checkpoint')
    if model is None:
        return DEFAULT_MODEL
    if model in registry.NETWORKS:
        raise InputError('%s names a network, not weights: pass --checkpoint '
                         'PATH, or a catalogue name such as %s as --model '
                         '(`slimnets list` shows them)' % (model, DEFAULT_MODEL))
    return model


def weights_name(weights):
    """How output names the weights `weights_for` chose: a catalogue name as
    it is, the embedded model as 'mobilenet_v2_1.0_224_quant (embedded)', a
    path as it was given."""
    if embedded.is_embedded(weights):
        return embedded.DISPLAY_NAME
    return os.fspath(weights)


def write_model_file(folder, spec, label_offset=None, input_stats=None,
                     source=None):
    """Records what a folder's checkpoints are: `model.json` in `folder`
    (`slimnets.model_info`; see read_model_file).

    Args:
      folder: the folder (a training folder: all its checkpoints one run).
      spec: the ModelSpec (network, kwargs, input size, classes).
      label_offset: 1 when class 0 is background; default slim's
        convention for the class count (1 for 1001, else 0).
      input_stats: (mean, std) of a quantized model's integer input.
      source: what the checkpoints were made from (free text).
    """
    model_info.write_folder(folder, model_info.ModelInfo(
        spec.network, dict(spec.kwargs), spec.image_size, spec.num_classes,
        model_info.label_offset_for(spec.num_classes) if label_offset is None
        else label_offset, input_stats, source))


def read_model_file(prefix):
    """The ModelSpec recorded beside a checkpoint (`<prefix>.slimnets.json`,
    else its folder's `model.json`), or None; None too when the record
    lacks the input size or the class count (`model_info.read` has the
    whole record).

    Raises:
      CheckpointError: the record is damaged.
    """
    recorded = model_info.read(prefix)
    if recorded is None or recorded.image_size is None or \
            recorded.num_classes is None:
        return None
    return ModelSpec(recorded.network, dict(recorded.kwargs or {}),
                     recorded.image_size, recorded.num_classes)


def class_names_for(prefix, num_classes):
    """Class names of a checkpoint: its folder's labels.txt (written by
    `slimnets train`), else ImageNet's when the classes are ImageNet's 1000
    after the recorded label offset (`model_info`: 1001 with background
    first, or 1000 without; without a record, slim's convention for the
    count), else None."""
    names = labels_lib.class_names(os.path.dirname(prefix))
    if names is not None and len(names) == num_classes:
        return names
    recorded = model_info.read(prefix)
    offset = recorded.label_offset if recorded is not None and \
        recorded.label_offset is not None else model_info.label_offset_for(
            num_classes)
    if offset in (0, 1) and num_classes - offset == 1000:
        return labels_lib.imagenet_labels()[1 - offset:]
    return None
