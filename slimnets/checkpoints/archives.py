"""Extracting the checkpoint out of a published tar archive, safely.

Only checkpoint files are taken (`*.index`, `*.data-NNNNN-of-NNNNN` and the
`checkpoint` state file); frozen graphs, TFLite files and the rest stay in
the archive.  Every member is checked first: an absolute name, a name that
climbs out of the folder, a link or a device refuses the whole archive.
The total size of all members is capped (`max_bytes`), so a compression
bomb stops once it has announced more than the cap, before it is written.
"""

import errno
import lzma
import os
import re
import tarfile
import zlib

from slimnets.errors import CheckpointError

__all__ = [
    'DEFAULT_MAX_BYTES', 'ENVIRONMENT_VARIABLE', 'is_checkpoint_member',
    'extract_checkpoint_files', 'extract_archive',
]

DEFAULT_MAX_BYTES = 4 << 30
ENVIRONMENT_VARIABLE = 'SLIMNETS_MAX_EXTRACT_BYTES'
_CHECKPOINT_FILE = re.compile(
    r'(\.index|\.data-\d{5}-of-\d{5})$|(^|/)checkpoint$')
_CHUNK = 1 << 20
# Errors of the folder being written (raised as they are: the caller says
# "free some space"), not of the archive.
_LOCAL_ERRNOS = frozenset(getattr(errno, name) for name in (
    'ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM') if hasattr(errno, name))


def is_checkpoint_member(name):
    """True for the files a TF1 checkpoint is made of."""
    return bool(_CHECKPOINT_FILE.search(name))


def _checked_name(member):
    name = member.name
    parts = [p for p in name.replace('\\', '/').split('/')
             if p not in ('', '.')]
    if (os.path.isabs(name) or name.startswith(('/', '\\')) or '..' in parts
            or re.match(r'^[A-Za-z]:', name)):
        raise CheckpointError('the archive member %r would be written outside '
                              'the extraction folder; refusing to extract it'
                              % name)
    if member.issym() or member.islnk():
        raise CheckpointError('the archive member %r is a link; checkpoint '
                              'archives hold plain files only' % name)
    if not (member.isfile() or member.isdir()):
        raise CheckpointError('the archive member %r is not a plain file or '
                              'folder' % name)
    return parts


def _make_folders(root, parts):
    """Creates root/parts[0]/... without following any link."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path)
        except FileExistsError:
            if os.path.islink(path) or not os.path.isdir(path):
                raise CheckpointError('the archive puts a folder where %s is'
                                      % path) from None
    return path


def extract_checkpoint_files(path, destination, max_bytes=DEFAULT_MAX_BYTES):
    """Extracts the checkpoint files of a (compressed) tar archive.

    Args:
      path: the archive file.
      destination: an existing empty folder.
      max_bytes: cap on the total (uncompressed) size of all members.

    Returns:
      The extracted files, relative to `destination`.

    Raises:
      CheckpointError: the archive is corrupt or incomplete, larger than the
        cap, or has an unsafe member (link, device, absolute or climbing
        name).  Files already extracted stay in `destination` (the caller
        owns it and removes it).
      OSError: `destination` cannot be written (full, read-only).
    """
    extracted = []
    total = 0
    try:
        with tarfile.open(path, 'r:*') as archive:
            for member in archive:
                parts = _checked_name(member)
                total += max(member.size, 0)
                if total > max_bytes:
                    raise CheckpointError(
                        'the archive unpacks to more than %d bytes (the cap; '
                        'set $%s to raise it)' % (max_bytes,
                                                  ENVIRONMENT_VARIABLE))
                relative = '/'.join(parts)
                if not member.isfile() or not is_checkpoint_member(relative):
                    continue
                folder = _make_folders(destination, parts[:-1])
                target = os.path.join(folder, parts[-1])
                source = archive.extractfile(member)
                descriptor = os.open(target, os.O_WRONLY | os.O_CREAT |
                                     os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0),
                                     0o644)
                written = 0
                with os.fdopen(descriptor, 'wb') as handle:
                    while True:
                        chunk = source.read(_CHUNK)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > member.size:
                            raise CheckpointError('the archive member %r is '
                                                  'larger than its header '
                                                  'says' % member.name)
                        handle.write(chunk)
                extracted.append(relative)
    except FileExistsError as error:
        raise CheckpointError('the archive holds %s twice' % error.filename
                              ) from None
    except OSError as error:
        if error.errno in _LOCAL_ERRNOS:  # the disk written to, not the file
            raise
        raise CheckpointError('the archive is corrupt or incomplete (%s)'
                              % error) from None
    except (tarfile.TarError, EOFError, ValueError, UnicodeError,
            zlib.error, lzma.LZMAError) as error:
        raise CheckpointError('the archive is corrupt or incomplete (%s)'
                              % error) from None
    return extracted


def extract_archive(path, destination, max_bytes=DEFAULT_MAX_BYTES):
    """Extracts the checkpoint files of `path` into `destination` (created
    if needed); see `extract_checkpoint_files`."""
    os.makedirs(destination, exist_ok=True)
    return extract_checkpoint_files(path, destination, max_bytes)
