"""The catalogue of published checkpoints and the local download cache.

The catalogue (`slimnets/data/catalogue.json`, package data read through
`importlib.resources`, so every kind of install carries it) lists every
published research/slim MobileNet archive with the network that restores it,
its published figures and its sources: where the weights can be downloaded,
in the order `fetch` tries them (see `FORMATS`).
"""

import collections
import importlib.resources
import json
import logging
import os
import re
import tempfile

from slimnets.errors import CheckpointError
from slimnets.errors import OutputError
from slimnets.errors import UnknownNameError

__all__ = [
    'CACHE_ENVIRONMENT_VARIABLE', 'FORMATS', 'Source', 'CatalogueEntry',
    'parse_catalogue', 'catalogue', 'entry', 'source_tree_cache',
    'cache_dir', 'fallback_cache_dir', 'can_write', 'writable_cache_dir',
]

_log = logging.getLogger(__name__)

CACHE_ENVIRONMENT_VARIABLE = 'SLIMNETS_CACHE'

# What a source's file is; the catalogue's "formats" section says more.
FORMATS = ('slim-archive', 'keras-h5')

Source = collections.namedtuple('Source', ['url', 'format', 'sha256', 'md5'])
Source.__new__.__defaults__ = ('slim-archive', None, None)

_FIELDS = [
    'name', 'family', 'sources', 'member', 'network', 'network_kwargs',
    'input_size', 'num_classes', 'weights', 'moving_average_shadows', 'top1',
    'top5', 'macs_millions', 'params_millions', 'notes']


class CatalogueEntry(collections.namedtuple('CatalogueEntry', _FIELDS)):
    """One published checkpoint; `sources` is a tuple of `Source`."""

    __slots__ = ()

    @property
    def url(self):
        """The first (preferred) source's URL."""
        return self.sources[0].url

    def with_url(self, url):
        """This entry served from `url` only (a mirror); the format comes
        from the name ('.h5': Keras weights, else a slim archive)."""
        fmt = 'keras-h5' if url.split('?')[0].endswith('.h5') else (
            'slim-archive')
        return self._replace(sources=(Source(url, fmt),))


_ENTRIES = None
_HEX = {'sha256': re.compile(r'^[0-9a-f]{64}$'),
        'md5': re.compile(r'^[0-9a-f]{32}$')}


def _check(condition, origin, what):
    if not condition:
        raise CheckpointError('The checkpoint catalogue %s is damaged: %s. '
                              'Reinstall slimnets.' % (origin, what))


def _source(row, origin, name):
    _check(isinstance(row, dict) and set(row) == set(Source._fields), origin,
           '%s has a source that is not {%s}' % (name,
                                                 ', '.join(Source._fields)))
    _check(isinstance(row['url'], str) and
           re.match(r'^https?://[^\s/]+/\S*$', row['url']), origin,
           '%s has a source URL that is not http(s): %r' % (name, row['url']))
    _check(row['format'] in FORMATS, origin, '%s has a source of unknown '
           'format %r' % (name, row['format']))
    for key, pattern in _HEX.items():
        _check(row[key] is None or (isinstance(row[key], str) and
                                    pattern.match(row[key])), origin,
               '%s has a malformed %s' % (name, key))
    return Source(**row)


def parse_catalogue(text, origin='(text)'):
    """{name: CatalogueEntry} from the catalogue's JSON text, checked.

    Raises:
      CheckpointError: not JSON, or an entry lacks a field or has one of
        the wrong type.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSON and Unicode errors
        raise CheckpointError('The checkpoint catalogue %s is damaged: %s. '
                              'Reinstall slimnets.' % (origin, error)
                              ) from None
    _check(isinstance(document, dict) and
           isinstance(document.get('checkpoints'), list), origin,
           'no "checkpoints" list')
    entries = collections.OrderedDict()
    for row in document['checkpoints']:
        _check(isinstance(row, dict) and set(row) == set(_FIELDS), origin,
               'an entry does not have exactly the fields %s'
               % ', '.join(_FIELDS))
        name = row['name']
        _check(isinstance(name, str) and re.match(r'^[\w.-]+$', name) and
               name not in entries, origin, 'bad or repeated name %r' % name)
        _check(isinstance(row['sources'], list) and row['sources'], origin,
               '%s lists no sources' % name)
        kwargs = row['network_kwargs']
        _check(isinstance(row['network'], str) and
               isinstance(kwargs, dict) and
               isinstance(kwargs.get('depth_multiplier'), (int, float)) and
               all(isinstance(row[k], str) for k in ('family', 'weights')) and
               all(isinstance(row[k], (str, type(None))) for k in ('notes',))
               and isinstance(row['moving_average_shadows'],
                              (bool, type(None))) and
               isinstance(row['member'], (str, type(None))) and
               all(isinstance(row[k], int) and not isinstance(row[k], bool)
                   and 0 < row[k] < 100000
                   for k in ('input_size', 'num_classes')) and
               all(isinstance(row[k], (int, float, type(None))) for k in
                   ('top1', 'top5', 'macs_millions', 'params_millions')),
               origin, '%s has a field of the wrong type' % name)
        row = dict(row, sources=tuple(_source(s, origin, name)
                                      for s in row['sources']))
        entries[name] = CatalogueEntry(**row)
    return entries


def _load():
    global _ENTRIES  # pylint: disable=global-statement
    if _ENTRIES is None:
        resource = importlib.resources.files('slimnets').joinpath(
            'data', 'catalogue.json')
        _ENTRIES = parse_catalogue(resource.read_bytes(), str(resource))
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
    raise UnknownNameError(
        '%r is not in the checkpoint catalogue%s. `slimnets list` shows every '
        'name.' % (name, '; did you mean %s?' % ', '.join(close)
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


def fallback_cache_dir():
    """The per-user cache in the temporary directory
    (`<tmp>/slimnets-<uid>`), used when the cache cannot be written."""
    return os.path.join(tempfile.gettempdir(), 'slimnets-%s' % (
        os.getuid() if hasattr(os, 'getuid') else 'user'))


def can_write(folder):
    """True when files can be created in `folder` (made if missing): tried
    for real, since a read-only mount or a folder without write permission
    answers differently to root and to `os.access`."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, '.slimnets-probe-%d' % os.getpid())
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                             getattr(os, 'O_NOFOLLOW', 0), 0o600)
    except OSError:
        return False
    os.close(descriptor)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def writable_cache_dir(directory=None, what='checkpoints'):
    """The cache to write into: `cache_dir(directory)` when it can be
    written, else `fallback_cache_dir()` with one warning (logged) naming
    both and the way out.

    Raises:
      OutputError: neither can be written.
    """
    cache = cache_dir(directory)
    if can_write(cache):
        return cache
    fallback = os.path.abspath(fallback_cache_dir())
    if fallback != cache and can_write(fallback):
        _log.warning('The cache %s cannot be written; %s go to %s instead '
                     '(set $%s or --cache-dir to a writable folder to keep '
                     'them).', cache, what, fallback,
                     CACHE_ENVIRONMENT_VARIABLE)
        return fallback
    raise OutputError('Neither the cache %s nor %s can be written; set $%s '
                      'or --cache-dir to a writable folder.' % (
                          cache, fallback, CACHE_ENVIRONMENT_VARIABLE))
