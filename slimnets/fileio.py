"""Writing files and folders so that a failure never leaves half of one.

Every file slimnets writes goes to a temporary name in the destination's
own folder, is flushed to disk, and only then takes the final name with
`os.replace` (atomic on POSIX and Windows).  Folders are built under a
temporary name and swapped in the same way.  Whatever happens in between
(an exception, Ctrl-C, a full disk), the final path holds the previous
good content or nothing, and the temporary is removed.  A process killed
outright (kill -9, power loss) cannot clean up; its temporaries carry its
process id and `remove_stale` deletes them on a later run once that
process is gone.

Temporary names: `.<final name>.<kind>-<pid>-<random>` beside the final
path, kind 'tmp' (being written), 'old' (the previous folder, being
removed after a swap) or 'partial' (a download being assembled).

This module is a low layer: it imports only slimnets.errors.
"""

import contextlib
import os
import secrets
import shutil
import time

from slimnets.errors import InputError
from slimnets.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; fetches are not parallel
    fcntl = None

STALE_AFTER_SECONDS = 24 * 3600
_KINDS = ('tmp', 'old', 'partial')


def temporary_name(path, kind='tmp'):
    """A fresh temporary path beside `path` (not created)."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, '.%s.%s-%d-%s' % (base, kind, os.getpid(),
                                                  secrets.token_hex(4)))


def _owner_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _remove(path):
    """Removes a file, link or folder tree; never follows a link."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale(folder, base=None, kinds=_KINDS):
    """Deletes temporaries left in `folder` by processes that are gone.

    Args:
      folder: where to look.
      base: only temporaries of this final name (default: all).
      kinds: which kinds of temporaries.

    A temporary is stale when the process that made it no longer runs, or
    when it is older than a day.  Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.startswith('.'):
            continue
        stem, _, tail = name[1:].rpartition('.')
        kind, _, rest = tail.partition('-')
        pid_text = rest.split('-', 1)[0]
        if (kind not in kinds or not pid_text.isdigit() or
                (base is not None and stem != base)):
            continue
        path = os.path.join(folder, name)
        try:
            age = now - os.lstat(path).st_mtime
        except OSError:
            continue
        if _owner_alive(int(pid_text)) and age < STALE_AFTER_SECONDS:
            continue
        _remove(path)
        removed.append(path)
    return removed


def _fsync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_file(path, mode='wb'):
    """Opens a temporary file that becomes `path` when the block succeeds.

    Usage: `with atomic_file(path) as handle: handle.write(data)`.  The
    folder of `path` must exist.  On any exception (KeyboardInterrupt
    included) the temporary is removed and `path` is left as it was.
    """
    if 'w' not in mode:
        raise InputError('atomic_file writes; mode %r has no "w"' % mode)
    path = os.path.abspath(path)
    remove_stale(os.path.dirname(path), os.path.basename(path), ('tmp',))
    temporary = temporary_name(path)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                             getattr(os, 'O_NOFOLLOW', 0), 0o666)
    except OSError as error:
        raise _output_error(path, error) from None
    with _removed_on_failure(temporary, path):
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    _fsync_folder(os.path.dirname(path))


@contextlib.contextmanager
def _removed_on_failure(temporary, path):
    """On any exception in the block, removes `temporary`; an OSError
    becomes the one-line OutputError about `path`."""
    try:
        yield
    except OSError as error:
        _remove(temporary)
        if isinstance(error, OutputError):
            raise
        raise _output_error(path, error) from None
    except BaseException:
        _remove(temporary)
        raise


def _output_error(path, error):
    """The one-line OutputError for a failed write of `path`."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return OutputError('could not write %s: %s; it is left as it was. Free '
                       'some space or choose another place to write.' % (
                           path, reason))


def write_bytes(path, data):
    """Writes `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path, 'wb') as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_folder(path, create=True):
    """Yields a temporary folder that replaces `path` on success.

    Fill the yielded folder (created empty, or with `create=False` only
    named, for writers that insist on making it themselves); when the block
    ends without an exception it takes the name `path`.  An existing
    folder at `path` is replaced (moved aside, then removed); a file or a
    link there is an error (InputError) and is left alone.  On any exception the temporary
    folder is removed and `path` is unchanged.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale(folder, os.path.basename(path), ('tmp', 'old'))
    if os.path.islink(path) or (os.path.lexists(path) and
                                not os.path.isdir(path)):
        raise InputError('%s is a file or a link, not a folder; slimnets '
                         'does not replace it. Move it away or choose another '
                         'output.' % path)
    temporary = temporary_name(path)
    if create:
        try:
            os.mkdir(temporary)
        except OSError as error:
            raise _output_error(path, error) from None
    with _removed_on_failure(temporary, path):
        yield temporary
        old = None
        if os.path.isdir(path):
            old = temporary_name(path, 'old')
            os.rename(path, old)
        try:
            os.rename(temporary, path)
        except BaseException:
            if old:
                os.rename(old, path)
            raise
    _fsync_folder(folder)
    if old:
        _remove(old)


@contextlib.contextmanager
def atomic_files(paths):
    """Yields temporary paths that replace `paths` together on success.

    For writers that make several files at once (an OpenVINO IR's .xml and
    .bin).  The temporaries keep the final base names, inside one
    temporary folder beside them, so a writer that derives one name from
    another (`model.xml` -> `model.bin`) finds them; every path must be in
    one folder.  When the block ends without an exception each file takes
    its final name; if a replace fails half way, the files already
    replaced get their previous content back (kept as hard links while
    the swap runs) and new names are removed.  On any failure the final
    paths hold what they held before, or nothing, and no temporary is
    left.  A file the writer did not make is an OutputError.
    """
    paths = [os.path.abspath(p) for p in paths]
    folders = {os.path.dirname(p) for p in paths}
    if len(folders) != 1 or len(set(map(os.path.basename, paths))) != \
            len(paths):
        raise InputError('atomic_files writes distinct names in one folder; '
                         'got %s' % ', '.join(paths))
    folder = folders.pop()
    os.makedirs(folder, exist_ok=True)
    for path in paths:
        remove_stale(folder, os.path.basename(path), ('tmp', 'old'))
    staging = temporary_name(paths[0])
    try:
        os.mkdir(staging)
    except OSError as error:
        raise _output_error(paths[0], error) from None
    with _removed_on_failure(staging, paths[0]):
        temporaries = [os.path.join(staging, os.path.basename(p))
                       for p in paths]
        yield temporaries
        for temporary, path in zip(temporaries, paths):
            if not os.path.isfile(temporary):
                raise OutputError('the writer of %s made no %s; nothing was '
                                  'replaced' % (paths[0], path))
            with open(temporary, 'rb') as handle:
                os.fsync(handle.fileno())
        _swap_in(temporaries, paths)
        _remove(staging)
    _fsync_folder(folder)


def _swap_in(temporaries, paths):
    """Replaces each path by its temporary; on failure, restores them."""
    backups = {}
    done = []
    try:
        for path in paths:
            if os.path.lexists(path):
                backups[path] = temporary_name(path, 'old')
                try:
                    os.link(path, backups[path], follow_symlinks=False)
                except OSError:   # no hard links here: a copy
                    shutil.copy2(path, backups[path], follow_symlinks=False)
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
            done.append(path)
    except BaseException:
        for path in done:
            if path in backups:
                os.replace(backups.pop(path), path)
            else:
                _remove(path)
        raise
    finally:
        for backup in backups.values():
            _remove(backup)


@contextlib.contextmanager
def file_lock(path):
    """Holds an exclusive advisory lock on `path` (created if needed).

    Processes that take the same lock run the block one at a time.  The
    lock file stays (removing it would race with the next taker); the lock
    is released when the block ends or the process dies.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT |
                         getattr(os, 'O_NOFOLLOW', 0), 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
