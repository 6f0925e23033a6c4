"""Model resolution: which network, size and classes a checkpoint needs.

`model_spec(model, checkpoint)` turns what a user names (a nets_factory
name, a catalogue name, a checkpoint path, or nothing: the default model)
into a `ModelSpec` and a checkpoint prefix, fetching catalogue checkpoints
into the cache.  Folders written by `slimnets train` record their network in
`model.json` and their classes in `labels.txt`; both are read here.
"""

import json
import os

from slimnets import checkpoints
from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets import nets_factory
from slimnets import registry
from slimnets.errors import InputError
from slimnets.registry import ModelSpec

DEFAULT_MODEL = registry.DEFAULT_MODEL

LABELS_FILE = 'labels.txt'
MODEL_FILE = 'model.json'
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
               cache_dir=None, progress=True):
    """Works out which network to build for a checkpoint.

    Args:
      model: a nets_factory name, a catalogue name, or None: the network
        recorded beside the checkpoint by `slimnets train` (model.json), else
        inferred from the checkpoint's variables.
      checkpoint: a checkpoint path or catalogue name (fetched if needed).
      image_size: input size; default the catalogue's, else the size a
        published-style path names ('0.25_128'), else the network's.
      num_classes: default the checkpoint's.

    Returns:
      (ModelSpec, checkpoint prefix or None).

    Raises:
      InputError: unknown model name, or a checkpoint of another network.
    """
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
    recorded = read_model_file(prefix) if prefix else None
    if recorded is not None and model is None:
        return recorded._replace(
            image_size=int(image_size or recorded.image_size),
            num_classes=int(num_classes or recorded.num_classes)), prefix
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
    if image_size is None and item is not None:
        image_size = item.input_size
    if image_size is None and identity is not None:
        image_size = size_from_name(prefix, identity.depth_multiplier)
    if image_size is None:
        image_size = nets_factory.get_network_fn(network, 1).default_image_size
    if num_classes is None:
        num_classes = (identity.num_classes if identity and
                       identity.num_classes else 1001)
    return ModelSpec(network, kwargs, int(image_size), int(num_classes)), prefix


def weights_for(checkpoint=None, model=None):
    """The checkpoint to restore when a user names `checkpoint`, `model`,
    both or neither: the checkpoint when given; else `model` when it is a
    catalogue name; else `DEFAULT_MODEL` when nothing is named.

    Raises:
      InputError: `model` names a network architecture, which has no
        weights of its own.
    """
    if checkpoint is not None:
        return checkpoint
    if model is None:
        return DEFAULT_MODEL
    if model in registry.NETWORKS:
        raise InputError('%s names a network, not weights: pass --checkpoint '
                         'PATH, or a catalogue name such as %s as --model '
                         '(`slimnets list` shows them)' % (model, DEFAULT_MODEL))
    return model


def write_model_file(folder, spec):
    """Records which network a folder's checkpoints are (see read_model_file)."""
    fileio.write_bytes(os.path.join(folder, MODEL_FILE), (json.dumps(
        spec._asdict(), indent=1) + '\n').encode('utf-8'))


def read_model_file(prefix):
    """The ModelSpec recorded beside a checkpoint, or None."""
    path = os.path.join(os.path.dirname(prefix), MODEL_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return ModelSpec(**json.load(handle))


def class_names_for(prefix, num_classes):
    """Class names of a checkpoint: its folder's labels.txt (written by
    `slimnets train`), else ImageNet's for 1001 or 1000 classes, else None."""
    path = os.path.join(os.path.dirname(prefix), LABELS_FILE)
    if os.path.isfile(path):
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(names) == num_classes:
            return names
    if num_classes == 1001:
        return labels_lib.imagenet_labels()
    if num_classes == 1000:
        return labels_lib.imagenet_labels()[1:]
    return None
