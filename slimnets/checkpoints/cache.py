"""What a cached checkpoint is: the folder `fetch` leaves for a catalogue
entry (`<cache>/<name>/`, its manifest `.slimnets-fetch.json`) and the
checks that it holds the entry's network with every tensor readable."""

import functools
import json
import os

import tensorflow.compat.v1 as tf

from slimnets import nets_factory
from slimnets.checkpoints import published as catalogue_lib
from slimnets.checkpoints import reader
from slimnets.errors import CheckpointError

__all__ = ['MANIFEST', 'expected_variables', 'check_matches_entry',
           'find_checkpoint', 'read_manifest', 'usable',
           'cached_checkpoint']

MANIFEST = '.slimnets-fetch.json'


@functools.lru_cache(maxsize=None)
def _expected_shapes(network, kwargs_json, num_classes):
    kwargs = json.loads(kwargs_json)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 224, 224, 3])
        nets_factory.get_network_fn(network, num_classes)(images, **kwargs)
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()}


def expected_variables(item):
    """{variable name: shape} of the network that restores `item`."""
    return dict(_expected_shapes(item.network, json.dumps(
        item.network_kwargs, sort_keys=True), item.num_classes))


def check_matches_entry(prefix, item, read_all=True):
    """Checks that the checkpoint at `prefix` restores `item`'s network.

    Args:
      prefix: a checkpoint prefix.
      item: a `CatalogueEntry`.
      read_all: also read every tensor (finds truncated data files).

    Raises:
      CheckpointError: it does not open, a tensor does not read, or a
        variable of the network is missing or has another shape.
    """
    prefix, checkpoint = reader.open_checkpoint(prefix)
    shapes = checkpoint.get_variable_to_shape_map()
    wrong = []
    for name, shape in sorted(expected_variables(item).items()):
        if name.endswith('global_step'):
            continue
        if name not in shapes:
            wrong.append('%s is missing' % name)
        elif list(shapes[name]) != shape:
            wrong.append('%s is %s, not %s' % (name, list(shapes[name]),
                                               shape))
    if wrong:
        raise CheckpointError('the checkpoint does not fit %s (%s): %s%s' % (
            item.name, item.network, '; '.join(wrong[:3]),
            ' and %d more' % (len(wrong) - 3) if len(wrong) > 3 else ''))
    if read_all:
        reader.read_tensors(checkpoint, prefix, shapes)
    return prefix


def find_checkpoint(folder, member):
    """The checkpoint prefix inside an extracted archive.

    Uses the catalogue's `member` when it is there; otherwise the only
    checkpoint, or the moving-average one under an `ema/` folder.
    """
    indexes = []
    for root, _, files in os.walk(folder):
        indexes.extend(os.path.join(root, f[:-len('.index')])
                       for f in files if f.endswith('.index'))
    if member:
        named = [p for p in indexes
                 if os.path.basename(p) == os.path.basename(member)]
        if named:
            return sorted(named)[0]
    if len(indexes) == 1:
        return indexes[0]
    moving_average = [p for p in indexes
                      if 'ema' in os.path.relpath(p, folder).split(os.sep)]
    if len(moving_average) == 1:
        return moving_average[0]
    if not indexes:
        raise CheckpointError('the archive holds no checkpoint (no .index '
                              'file)')
    raise CheckpointError('the archive holds several checkpoints (%s) and the '
                          'catalogue does not say which one to use'
                          % ', '.join(os.path.relpath(p, folder)
                                      for p in indexes))


def read_manifest(folder):
    """The prefix our manifest in `folder` names, if its files are intact."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding='utf-8') as handle:
            manifest = json.load(handle)
        prefix = os.path.join(folder, *manifest['prefix'].split('/'))
        for relative, size in manifest['files'].items():
            path = os.path.join(folder, *relative.split('/'))
            if os.path.islink(path) or os.path.getsize(path) != size:
                return None
        if not os.path.isfile(prefix + '.index'):
            return None
        return prefix
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def usable(folder, item, thorough):
    """The checkpoint prefix in a cached `folder`, or None.

    A folder fetched by slimnets has a manifest whose file sizes are
    checked.  Otherwise (files put there by hand) the checkpoint must open
    and, when `thorough`, fit the entry's network and read completely.
    """
    prefix = read_manifest(folder)
    if prefix:
        return prefix
    try:
        prefix = find_checkpoint(folder, item.member)
        if thorough:
            return check_matches_entry(prefix, item)
        reader.open_checkpoint(prefix)
        return prefix
    except CheckpointError:
        return None


def cached_checkpoint(name, directory=None):
    """The prefix of `name`'s checkpoint if it is in the cache, else None.

    Quick: trusts slimnets' manifest, or that a hand-placed checkpoint opens.
    """
    item = catalogue_lib.entry(name)
    folder = os.path.join(catalogue_lib.cache_dir(directory), item.name)
    if not os.path.isdir(folder):
        return None
    return usable(folder, item, thorough=False)
