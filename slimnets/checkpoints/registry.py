"""The catalogue of published checkpoints and the local download cache.

The catalogue (`slimnets/data/catalogue.json`, package data read through
`importlib.resources`, so every kind of install carries it) lists every published research/slim MobileNet
archive with the network that restores it and its published figures.
"""

import collections
import importlib.resources
import json
import os
from slimnets.errors import UnknownNameError

CACHE_ENVIRONMENT_VARIABLE = 'SLIMNETS_CACHE'

CatalogueEntry = collections.namedtuple('CatalogueEntry', [
    'name', 'family', 'url', 'member', 'network', 'network_kwargs',
    'input_size', 'num_classes', 'weights', 'moving_average_shadows', 'top1',
    'top5', 'macs_millions', 'params_millions', 'notes'])

_ENTRIES = None


def _load():
    global _ENTRIES  # pylint: disable=global-statement
    if _ENTRIES is None:
        resource = importlib.resources.files('slimnets').joinpath(
            'data', 'catalogue.json')
        with resource.open('r', encoding='utf-8') as handle:
            document = json.load(handle)
        _ENTRIES = collections.OrderedDict(
            (row['name'], CatalogueEntry(**row))
            for row in document['checkpoints'])
    return _ENTRIES


def catalogue():
    """Every catalogue entry, in the published order."""
    return list(_load().values())


def entry(name):
    """The catalogue entry called `name`.

    Raises:
      KeyError: unknown name; the message lists close names.
    """
    entries = _load()
    if name in entries:
        return entries[name]
    close = [n for n in entries if name.lower() in n.lower()][:8]
    raise UnknownNameError('%r is not in the checkpoint catalogue%s. `slimnets list` '
                   'shows every name.' % (
                       name, '; did you mean %s?' % ', '.join(close)
                       if close else ''))


def source_tree_cache():
    """`checkpoints/` of the source checkout slimnets runs from, or None."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(os.path.dirname(package_dir), 'checkpoints')
    if os.path.isfile(os.path.join(candidate, 'README.md')) and os.path.isfile(
            os.path.join(os.path.dirname(package_dir), 'setup.py')):
        return candidate
    return None


def cache_dir(directory=None):
    """Where downloaded checkpoints are kept.

    In order: `directory`, $SLIMNETS_CACHE, the source tree's `checkpoints/`
    (git-ignored there), then ~/.cache/slimnets.
    """
    chosen = (directory or os.environ.get(CACHE_ENVIRONMENT_VARIABLE) or
              source_tree_cache() or
              os.path.join(os.path.expanduser('~'), '.cache', 'slimnets'))
    return os.path.abspath(chosen)
