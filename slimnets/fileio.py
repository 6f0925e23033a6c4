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

`read_text` reads the UTF-8 text files a user gives (a labels file), with
or without a byte-order mark, and names the encoding of one that is not.

This module is a low layer: it imports only slimnets.errors.
"""

import contextlib
import os
import secrets
import shutil
import stat
import time

from slimnets.errors import InputError
from slimnets.errors import OutputError

__all__ = [
    'STALE_AFTER_SECONDS', 'temporary_name', 'remove_stale', 'atomic_file',
    'path_argument', 'parent_folder_made', 'write_bytes', 'atomic_folder', 'atomic_files',
    'read_text', 'ProcessLock', 'try_process_lock', 'file_lock',
]

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


def path_argument(value, name):
    """`value` as a path string (a str or an os.PathLike such as
    pathlib.Path).

    Raises:
      InputError: anything else, naming the argument and what it got.
    """
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    raise InputError('%s must be a path (a str or pathlib.Path), got %r'
                     % (name, value))


def parent_folder_made(path):
    """Creates the folder that will hold `path` (and its parents); returns
    `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


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


_BOMS = ((b'\x00\x00\xfe\xff', 'UTF-32 (big-endian)'),
         (b'\xff\xfe\x00\x00', 'UTF-32 (little-endian)'),
         (b'\xfe\xff', 'UTF-16 (big-endian)'),
         (b'\xff\xfe', 'UTF-16 (little-endian)'))


def read_text(path, what='file'):
    """The text of a UTF-8 file (a byte-order mark is dropped).

    Raises:
      InputError: the file cannot be read, or is not UTF-8: the message
        names the encoding found (a UTF-16/32 byte-order mark, NUL bytes
        of UTF-16 without one, else the first byte that is not UTF-8, as
        Latin-1 and other 8-bit encodings give) and asks for UTF-8.
    """
    try:
        # Non-blocking: a FIFO is refused below instead of waiting for ever.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
        with os.fdopen(descriptor, 'rb') as handle:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise InputError('the %s %s is not a regular file; give a '
                                 'text file' % (what, path))
            data = handle.read()
    except OSError as error:
        raise InputError('cannot read the %s %s: %s' % (
            what, path, error.strerror or error)) from None
    advice = 'save it as UTF-8'
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise InputError('the %s %s is %s text, not UTF-8; %s' % (
                what, path, encoding, advice))
    if data.startswith(b'\xef\xbb\xbf'):
        data = data[3:]
    if b'\x00' in data:
        raise InputError('the %s %s is not UTF-8 text: it has NUL bytes '
                         '(UTF-16 without a byte-order mark?); %s' % (
                             what, path, advice))
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as error:
        raise InputError(
            'the %s %s is not UTF-8 text: it has the byte 0x%02X at offset %d '
            '(Latin-1 or another 8-bit encoding?); %s' % (
                what, path, data[error.start], error.start, advice)) from None


class ProcessLock(object):
    """An exclusive advisory lock on a file, held by this process (its PID
    written in the file) until `release()`, the end of a `with` block or
    the process's death (the kernel releases it: a lock whose process is
    gone is never in the way).  The file stays (removing it would race
    with the next taker)."""

    def __init__(self, descriptor, path):
        self.descriptor, self.path = descriptor, path

    def release(self):
        if self.descriptor is not None:
            os.close(self.descriptor)   # releases the lock
            self.descriptor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


def try_process_lock(path):
    """Takes `path`'s lock without waiting.

    Returns:
      (ProcessLock, None) when this process now holds it, else (None, the
      PID recorded by the holder, or None when unreadable).  Without
      advisory locks (Windows) the lock is always granted.

    Raises:
      OutputError: the lock file cannot be created.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT |
                             getattr(os, 'O_NOFOLLOW', 0), 0o666)
    except OSError as error:
        raise _output_error(path, error) from None
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                text = os.pread(descriptor, 32, 0).decode('ascii', 'replace')
            finally:
                os.close(descriptor)
            return None, int(text) if text.strip().isdigit() else None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, b'%d\n' % os.getpid(), 0)
    return ProcessLock(descriptor, path), None


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
