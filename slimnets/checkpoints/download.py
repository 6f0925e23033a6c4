"""Fetching published checkpoints into the cache, safely.

`fetch(name)` tries the catalogue entry's sources in order (the research/slim
archive first, then published copies such as the Keras Applications weight
files).  Each attempt works in a fresh temporary folder beside the target,
`<cache>/.<name>.partial-<pid>-<random>`:

  1. download (bounded: see `slimnets.checkpoints.transfer`), with a
     progress bar, then check the sha256 (or the publisher's md5) when the
     catalogue knows it;
  2. turn it into a checkpoint: extract only the checkpoint files of an
     archive (`archives`), or convert a Keras weights file (`keras_weights`,
     adding the background class);
  3. validate: every tensor reads, and the variables are those of the
     entry's network with the same shapes;
  4. move it into place as `<cache>/<name>/`, with a small manifest
     (`.slimnets-fetch.json`: source, hashes, files) that later calls trust,
     and the entry's network, input size and classes recorded beside the
     checkpoint (`<prefix>.slimnets.json`, `slimnets.model_info`).

A cache that cannot be written (a read-only mount, no permission) still
serves what it holds; a fetch of anything else goes to the per-user
temporary cache (`published.writable_cache_dir`), with one warning.  A full
disk ends the fetch with one error and removes the temporary folder.

Concurrent fetches of one name take turns (a lock file, `.<name>.lock`);
the second finds the first's copy.  Nothing outside the temporary folder
is removed: a `<cache>/<name>/` that exists without a usable checkpoint
keeps its files (ours are added beside them), and a link there is never
written through.  Temporary folders of interrupted runs are removed at the
next fetch.  When no source works, one `CheckpointError` names the model,
every URL tried with its reason, and the ways out.
"""

import json
import logging
import os
import shutil
import time

from tqdm import tqdm

from slimnets import fileio
from slimnets import model_info
from slimnets.checkpoints import archives
from slimnets.checkpoints import cache as cache_lib
from slimnets.checkpoints import embedded
from slimnets.checkpoints import keras_weights
from slimnets.checkpoints import published as catalogue_lib
from slimnets.checkpoints import reader
from slimnets.checkpoints import transfer
from slimnets.errors import CheckpointError

__all__ = ['extract_archive', 'available_sources', 'source_summary', 'fetch',
           'resolve']

_log = logging.getLogger(__name__)
extract_archive = archives.extract_archive  # the public name it had here


# ------------------------------------------------------------ validation


# ------------------------------------------------------------- the cache


def available_sources(item):
    """[(format, check, url)] of `item`'s sources, in the order fetch tries
    them; `check` is the hash fetch verifies: 'sha256', 'md5' or '-'."""
    return [(source.format, 'sha256' if source.sha256 else
             'md5' if source.md5 else '-', source.url)
            for source in item.sources]


def source_summary(item):
    """'slim', 'slim+keras(2)'...: which kinds of source serve `item`."""
    counts = {}
    for source in item.sources:
        kind = source.format.split('-')[0]
        counts[kind] = counts.get(kind, 0) + 1
    return '+'.join(kind if n == 1 else '%s(%d)' % (kind, n)
                    for kind, n in counts.items())


# ------------------------------------------------------------ one source

class _LazyBar(object):
    """A tqdm bar opened when the server first answers (a source that
    fails to connect shows none)."""

    def __init__(self, url, enabled):
        self.description = url.rsplit('/', 1)[-1][:40]
        self.enabled = enabled
        self.bar = None

    def __call__(self, value):
        if self.bar is None:
            self.bar = tqdm(unit='B', unit_scale=True, unit_divisor=1024,
                            desc=self.description, disable=not self.enabled,
                            leave=False)
        if isinstance(value, tuple):
            self.bar.total = value[1]
            self.bar.refresh()
        else:
            self.bar.update(value)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _progress_bar(url, enabled):
    bar = _LazyBar(url, enabled)
    return bar, bar


def _download(source, path, limits, progress):
    bar, update = _progress_bar(source.url, progress)
    try:
        with open(path, 'wb') as handle:
            size, sha256, md5 = transfer.download(source.url, handle, limits,
                                                  update)
    finally:
        bar.close()
    for kind, known, actual in (('sha256', source.sha256, sha256),
                                ('md5', source.md5, md5)):
        if known and known != actual:
            raise transfer.TransferError(
                'its %s is %s, the catalogue says %s (a damaged or different '
                'file)' % (kind, actual, known))
    return {'bytes': size, 'sha256': sha256, 'md5': md5,
            'checked': [k for k in ('sha256', 'md5') if getattr(source, k)]}


def _checkpoint_from_keras(item, weights_path, folder):
    model = keras_weights.keras_application(item.network, item.network_kwargs,
                                            item.input_size)
    keras_weights.load_keras_weights_file(model, weights_path)
    prefix, _ = keras_weights.keras_to_checkpoint(
        model, os.path.join(folder, item.name + '.ckpt'))
    _log.info('Converted the Keras Applications weights of %s (1000 classes) '
              'to a 1001-class slim checkpoint: class 0 (background) has a '
              'logit 100 below the lowest class bias, so it is never '
              'predicted and the other probabilities equal Keras\'.',
              item.name)
    return prefix


def _try_source(item, source, work, limits, max_extract_bytes, progress):
    """Makes a validated checkpoint from `source` in `work`/checkpoint.

    Returns:
      (prefix, manifest dict).
    """
    downloaded = os.path.join(work, 'download')
    folder = os.path.join(work, 'checkpoint')
    os.mkdir(folder)
    _log.debug('Downloading %s from %s', item.name, source.url)
    digest = _download(source, downloaded, limits, progress)
    if source.format == 'keras-h5':
        prefix = _checkpoint_from_keras(item, downloaded, folder)
    else:
        archives.extract_checkpoint_files(downloaded, folder,
                                          max_extract_bytes)
        prefix = cache_lib.find_checkpoint(folder, item.member)
    os.unlink(downloaded)
    cache_lib.check_matches_entry(prefix, item)
    model_info.write(prefix, model_info.ModelInfo(
        item.network, dict(item.network_kwargs), item.input_size,
        item.num_classes, model_info.label_offset_for(item.num_classes),
        None, 'catalogue entry %s, from %s' % (item.name, source.url)))
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder).replace(os.sep, '/')] = (
                os.path.getsize(path))
    manifest = dict(name=item.name, url=source.url, format=source.format,
                    prefix=os.path.relpath(prefix, folder).replace(os.sep,
                                                                   '/'),
                    files=files, fetched=time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                                       time.gmtime()),
                    **digest)
    with open(os.path.join(folder, cache_lib.MANIFEST), 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1)
    return prefix, manifest


# ---------------------------------------------------------- into place

def _merge_into(folder, target):
    """Moves every file of `folder` into the existing folder `target`.

    Files already in `target` with one of our names are kept under
    '<name>.replaced-<time>'; no link in `target` is written through.
    """
    stamp = time.strftime('%Y%m%d%H%M%S')
    for root, _, names in os.walk(folder):
        relative = os.path.relpath(root, folder)
        destination = target
        for part in ([] if relative == '.' else relative.split(os.sep)):
            destination = os.path.join(destination, part)
            if os.path.islink(destination) or (
                    os.path.lexists(destination) and
                    not os.path.isdir(destination)):
                raise CheckpointError('%s is in the way (a link or a file); '
                                      'move it away and fetch again'
                                      % destination)
            if not os.path.isdir(destination):
                os.mkdir(destination)
        for name in names:
            path = os.path.join(destination, name)
            if os.path.lexists(path):
                kept = '%s.replaced-%s' % (path, stamp)
                os.rename(path, kept)
                _log.warning('Kept the earlier %s as %s', path, kept)
            os.rename(os.path.join(root, name), path)


def _failure_message(item, target, attempts):
    tried = '; '.join('%s (%s)' % (url, reason) for url, reason in attempts)
    return ('Could not download %s: tried %s. Pass a checkpoint you have with '
            '--checkpoint PATH, or fetch from a mirror with `slimnets fetch '
            '%s --url URL`, or download a source by hand and extract its '
            'checkpoint files into %s.' % (item.name, tried, item.name,
                                           target))


def fetch(name, cache_dir=None, url=None, progress=True, timeout=None,
          connect_timeout=None, stall_timeout=None, deadline=None,
          max_bytes=None, max_extract_bytes=None):
    """Fetches a catalogue checkpoint into the cache (once); its prefix.

    Args:
      name: a catalogue name (`slimnets list`), or a `CatalogueEntry`.
      cache_dir: the cache folder (default: see `published.cache_dir`).
      url: fetch from this URL only (a mirror): a slim archive, or Keras
        weights when it ends in '.h5'.
      progress: show a progress bar on stderr.
      timeout: the connect timeout (kept for older callers).
      connect_timeout, stall_timeout, deadline: seconds (connect and
        headers; without any byte; the whole download).  Default: the
        environment (`transfer.ENVIRONMENT`), else `transfer.DEFAULT_LIMITS`.
      max_bytes: the largest download accepted.
      max_extract_bytes: cap on an archive's unpacked size (default:
        $SLIMNETS_MAX_EXTRACT_BYTES, else 4 GiB).

    Returns:
      The checkpoint prefix, '<cache>/<name>/.../<something>.ckpt'.

    Raises:
      CheckpointError: no source gave a usable checkpoint (the message names
        every URL tried and why), or the cache entry is a link to something
        unusable.  The cache keeps what it had.
    """
    item = name if isinstance(name, catalogue_lib.CatalogueEntry) else (
        catalogue_lib.entry(name))
    if url:
        item = item.with_url(url)
    limits = transfer.limits_from(
        connect_timeout=connect_timeout or timeout,
        stall_timeout=stall_timeout, deadline=deadline, max_bytes=max_bytes)
    if max_extract_bytes is None:
        max_extract_bytes = os.environ.get(archives.ENVIRONMENT_VARIABLE) or (
            archives.DEFAULT_MAX_BYTES)
    max_extract_bytes = int(transfer.positive_number(
        max_extract_bytes, 'max_extract_bytes'))
    cache, prefix = _cached(catalogue_lib.cache_dir(cache_dir), item)
    if prefix:
        return prefix
    target = os.path.join(cache, item.name)
    with fileio.file_lock(os.path.join(cache, '.%s.lock' % item.name)):
        fileio.remove_stale(cache, item.name, ('partial',))
        if os.path.isdir(target):
            prefix = cache_lib.usable(target, item, thorough=True)
            if prefix:
                return prefix
            _log.warning('%s holds no usable checkpoint; fetching one into '
                         'it (its files stay).', target)
        elif os.path.lexists(target):
            raise CheckpointError('%s is in the way: it is not a folder. Move '
                                  'it away and fetch again.' % target)
        attempts = []
        for source in item.sources:
            prefix = _fetch_source(item, source, cache, target, limits,
                                   max_extract_bytes, progress, attempts)
            if prefix:
                return prefix
            _log.debug('%s failed (%s); trying the next source', *attempts[-1])
    raise CheckpointError(_failure_message(item, target, attempts))


def _cached(cache, item):
    """(the cache to fetch into, the prefix already fetched there or None).

    A read-only cache gives the per-user temporary one.  A cache entry that
    is a link is used when it holds a usable checkpoint, else refused
    (slimnets never writes through links)."""
    target = os.path.join(cache, item.name)
    if os.path.islink(target):
        prefix = cache_lib.usable(target, item, thorough=True) if os.path.isdir(
            target) else None
        if prefix:
            return cache, prefix
        raise CheckpointError('%s is a link to %s, which holds no usable %s '
                              'checkpoint; slimnets does not write through '
                              'links. Point it at a checkpoint folder or '
                              'remove the link.' % (target, os.path.realpath(
                                  target), item.name))
    if os.path.isdir(target):
        prefix = cache_lib.read_manifest(target)  # fetched before: no lock needed,
        if prefix:                       # so a read-only cache works
            return cache, prefix
    writable = catalogue_lib.writable_cache_dir(cache, what=item.name)
    if writable != cache:   # read-only: the per-user temporary cache
        target = os.path.join(writable, item.name)
        prefix = cache_lib.read_manifest(target) if os.path.isdir(target) and not (
            os.path.islink(target)) else None
        return writable, prefix
    return cache, None


def _fetch_source(item, source, cache, target, limits, max_extract_bytes,
                  progress, attempts):
    """Fetches `item` from one source into `target` (a partial folder
    first, moved or merged into place); its prefix, or None with the reason
    appended to `attempts`.

    Raises:
      CheckpointError: the cache's own disk failed (nothing was kept).
    """
    work = fileio.temporary_name(target, 'partial')
    os.mkdir(work)
    try:
        prefix, _ = _try_source(item, source, work, limits,
                                max_extract_bytes, progress)
        folder = os.path.join(work, 'checkpoint')
        relative = os.path.relpath(prefix, folder)
        if os.path.isdir(target):
            _merge_into(folder, target)
        else:
            os.rename(folder, target)
    except transfer.TransferError as error:
        attempts.append((source.url, str(error)))
        return None
    except CheckpointError as error:
        attempts.append((source.url, 'not a usable checkpoint: %s' % error))
        return None
    except OSError as error:  # the cache's disk, not the source
        raise CheckpointError(
            'Could not fetch %s into %s: %s; nothing was kept. Free '
            'some space or set $%s to another folder.' % (
                item.name, cache, os.strerror(error.errno)
                if error.errno else error,
                catalogue_lib.CACHE_ENVIRONMENT_VARIABLE)) from None
    finally:
        if os.path.isdir(work) and not os.path.islink(work):
            shutil.rmtree(work, ignore_errors=True)
    _log.info('Stored %s (from %s) in %s', item.name, source.url, target)
    return os.path.join(target, relative)


def resolve(name_or_path, cache_dir=None, progress=True):
    """A checkpoint prefix from a path or a catalogue name (fetched if needed);
    `embedded` names the model that ships inside the package (made into a
    checkpoint in the cache on first use, never downloaded).

    Raises:
      CheckpointError: neither an existing checkpoint nor a catalogue name.
    """
    text = os.fspath(name_or_path)
    if embedded.is_embedded(text):
        return embedded.checkpoint(cache_dir)
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

