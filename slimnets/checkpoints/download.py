"""Downloading published checkpoint archives into the cache, safely.

`fetch(name)` downloads the catalogue entry's archive to a temporary file,
extracts it into a temporary folder (refusing members that would land
outside it, links and devices), checks that the checkpoint inside reads
completely, and only then moves the folder to `<cache>/<name>/`.  Whatever
goes wrong, nothing half-written is left in the cache, and the error names
the URL and where to put the files by hand.
"""

import http.client
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request

from slimnets.checkpoints import registry as catalogue_lib
from slimnets.checkpoints import reader
from slimnets.checkpoints.errors import CheckpointError

_log = logging.getLogger(__name__)
_CHUNK = 1 << 16


def _by_hand_hint(item, target):
    return ('Download %s by hand and extract it into %s (or set $%s to a '
            'folder that has %s/ in it), then run again.'
            % (item.url, target, catalogue_lib.CACHE_ENVIRONMENT_VARIABLE,
               item.name))


def _find_checkpoint(folder, member):
    """The checkpoint prefix inside an extracted archive.

    Uses the catalogue's `member` when it is there; otherwise the only
    checkpoint, or the moving-average one under an `ema/` folder.
    """
    if member:
        for root, _, files in os.walk(folder):
            if os.path.basename(member) + '.index' in files:
                return os.path.join(root, os.path.basename(member))
    indexes = []
    for root, _, files in os.walk(folder):
        indexes.extend(os.path.join(root, f[:-len('.index')])
                       for f in files if f.endswith('.index'))
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


def _safe_members(archive, destination):
    """The archive's members, after checking none escapes `destination`."""
    root = os.path.realpath(destination)
    members = []
    for member in archive.getmembers():
        target = os.path.realpath(os.path.join(destination, member.name))
        if os.path.isabs(member.name) or not (
                target == root or target.startswith(root + os.sep)):
            raise CheckpointError('the archive member %r would be written '
                                  'outside the extraction folder; refusing '
                                  'to extract it' % member.name)
        if member.issym() or member.islnk():
            raise CheckpointError('the archive member %r is a link; checkpoint '
                                  'archives hold plain files only' % member.name)
        if not (member.isfile() or member.isdir()):
            raise CheckpointError('the archive member %r is not a plain file '
                                  'or folder' % member.name)
        members.append(member)
    return members


def extract_archive(path, destination):
    """Extracts a (compressed) tar archive of plain files into `destination`.

    Raises:
      CheckpointError: the archive is corrupt or incomplete, or a member is a
        link, a device, an absolute path or escapes `destination`.
    """
    try:
        with tarfile.open(path, 'r:*') as archive:
            for member in _safe_members(archive, destination):
                archive.extract(member, destination, set_attrs=False)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CheckpointError('the archive is corrupt or incomplete (%s)'
                              % error) from None


def _download(url, destination_file, progress, timeout):
    """Streams `url` into an open file; returns the number of bytes."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get('Content-Length')
        expected = int(expected) if expected and expected.isdigit() else None
        received = 0
        with tqdm(total=expected, unit='B', unit_scale=True,
                  unit_divisor=1024, desc=os.path.basename(url),
                  disable=not progress, leave=False) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                destination_file.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise CheckpointError('the transfer was interrupted after %d of %d '
                              'bytes' % (received, expected))
    return received


def cached_checkpoint(name, directory=None):
    """The prefix of `name`'s checkpoint if it is in the cache, else None."""
    item = catalogue_lib.entry(name)
    folder = os.path.join(catalogue_lib.cache_dir(directory), item.name)
    if not os.path.isdir(folder):
        return None
    try:
        return _find_checkpoint(folder, item.member)
    except CheckpointError:
        return None


def fetch(name, cache_dir=None, url=None, progress=True, timeout=60):
    """Downloads a catalogue checkpoint (once) and returns its prefix.

    Args:
      name: a catalogue name (`slimnets list`), or a `CatalogueEntry`.
      cache_dir: the cache folder (default: see `catalogue.cache_dir`).
      url: download from this URL instead of the catalogue's (a mirror).
      progress: show a progress bar on stderr.
      timeout: seconds to wait for the server.

    Returns:
      The checkpoint prefix, '<cache>/<name>/.../<something>.ckpt'.

    Raises:
      CheckpointError: offline, interrupted, corrupt or unsafe archive, or no
        readable checkpoint inside; the cache is left as it was.
    """
    item = name if isinstance(name, catalogue_lib.CatalogueEntry) else (
        catalogue_lib.entry(name))
    if url:
        item = item._replace(url=url)
    cache = catalogue_lib.cache_dir(cache_dir)
    target = os.path.join(cache, item.name)
    if os.path.isdir(target):
        try:
            return _find_checkpoint(target, item.member)
        except CheckpointError:
            _log.warning('Cached folder %s holds no usable checkpoint; '
                         'downloading it again.', target)
            shutil.rmtree(target)
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix='.%s.partial-' % item.name, dir=cache)
    try:
        archive_path = os.path.join(work, 'archive')
        _log.info('Downloading %s from %s', item.name, item.url)
        try:
            with open(archive_path, 'wb') as archive_file:
                _download(item.url, archive_file, progress, timeout)
        except (urllib.error.URLError, socket.timeout, ConnectionError,
                OSError, http.client.HTTPException, CheckpointError) as error:
            reason = getattr(error, 'reason', error)
            raise CheckpointError('Could not download %s (%s). %s' % (
                item.url, reason, _by_hand_hint(item, target))) from None
        extracted = os.path.join(work, 'extracted')
        os.makedirs(extracted)
        try:
            extract_archive(archive_path, extracted)
            prefix = _find_checkpoint(extracted, item.member)
            reader.validate_readable(prefix)
        except CheckpointError as error:
            raise CheckpointError('The download of %s is not a usable '
                                  'checkpoint archive: %s. %s' % (
                                      item.url, error,
                                      _by_hand_hint(item, target))) from None
        os.replace(extracted, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return os.path.join(target, os.path.relpath(prefix, extracted))


def resolve(name_or_path, cache_dir=None, progress=True):
    """A checkpoint prefix from a path or a catalogue name (fetched if needed).

    Raises:
      CheckpointError: neither an existing checkpoint nor a catalogue name.
    """
    text = os.fspath(name_or_path)
    looks_like_path = os.sep in text or os.path.exists(text) or os.path.exists(
        text + '.index')
    if not looks_like_path:
        try:
            catalogue_lib.entry(text)
        except KeyError as error:
            raise CheckpointError('%s is neither a checkpoint path nor a '
                                  'catalogue name: %s' % (text, error.args[0])
                                  ) from None
        return fetch(text, cache_dir=cache_dir, progress=progress)
    prefix, _ = reader.open_checkpoint(text)
    return prefix
