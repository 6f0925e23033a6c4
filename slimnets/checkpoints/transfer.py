"""HTTP(S) downloads with bounded time, size and redirects.

`download(url, handle, limits)` streams a URL into an open file.  Four
limits bound it, each settable by argument or environment variable
(`Limits.from_environment`):

    connect_timeout   SLIMNETS_CONNECT_TIMEOUT    seconds to connect and
                                                  get the response headers
    stall_timeout     SLIMNETS_STALL_TIMEOUT      seconds without one byte
    deadline          SLIMNETS_DOWNLOAD_DEADLINE  seconds for the whole file
    max_bytes         SLIMNETS_MAX_DOWNLOAD_BYTES largest file accepted

Redirects are followed up to `MAX_REDIRECTS` times, to http(s) only.  A
response shorter than its Content-Length is an error.  Proxies in
$https_proxy / $http_proxy (and $no_proxy) are honoured.
"""

import collections
import hashlib
import http.client
import os
import socket
import ssl
import time
import urllib.parse
import urllib.request

from slimnets.errors import ArgumentTypeError
from slimnets.errors import CheckpointError
from slimnets.errors import SlimnetsError

__all__ = [
    'MAX_REDIRECTS', 'TransferError', 'Limits', 'DEFAULT_LIMITS',
    'ENVIRONMENT', 'positive_number', 'limits_from', 'download',
]

MAX_REDIRECTS = 8
_CHUNK = 1 << 16


class TransferError(CheckpointError):
    """One URL could not be downloaded; the message is the reason only."""


Limits = collections.namedtuple('Limits', [
    'connect_timeout', 'stall_timeout', 'deadline', 'max_bytes'])

DEFAULT_LIMITS = Limits(connect_timeout=30.0, stall_timeout=60.0,
                        deadline=3600.0, max_bytes=2 << 30)
ENVIRONMENT = Limits(connect_timeout='SLIMNETS_CONNECT_TIMEOUT',
                     stall_timeout='SLIMNETS_STALL_TIMEOUT',
                     deadline='SLIMNETS_DOWNLOAD_DEADLINE',
                     max_bytes='SLIMNETS_MAX_DOWNLOAD_BYTES')


def positive_number(text, what):
    """float(text) > 0, or CheckpointError naming `what`."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float('nan')
    if not value > 0 or value == float('inf'):
        raise CheckpointError('%s must be a positive number, not %r'
                              % (what, text))
    return value


def limits_from(**overrides):
    """Limits: each argument given (not None), else its environment
    variable, else the default."""
    values = {}
    for field in Limits._fields:
        given = overrides.pop(field, None)
        if given is not None:
            values[field] = positive_number(given, field)
        elif os.environ.get(getattr(ENVIRONMENT, field)):
            name = getattr(ENVIRONMENT, field)
            values[field] = positive_number(os.environ[name], '$' + name)
        else:
            values[field] = getattr(DEFAULT_LIMITS, field)
    if overrides:
        raise ArgumentTypeError('unknown limits: %s' % ', '.join(overrides))
    return Limits(**values)


def _connection(url, timeout):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise TransferError('not an http(s) URL')
    try:
        port = parts.port
    except ValueError:
        raise TransferError('bad port in the URL') from None
    port = port or (443 if parts.scheme == 'https' else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass(parts.hostname):
        proxy = None
    path = urllib.parse.urlunsplit(('', '', parts.path or '/', parts.query,
                                    ''))
    if proxy:
        proxy_parts = urllib.parse.urlsplit(proxy)
        proxy_host = proxy_parts.hostname
        proxy_port = proxy_parts.port or 8080
        if parts.scheme == 'https':
            connection = http.client.HTTPSConnection(
                proxy_host, proxy_port, timeout=timeout,
                context=ssl.create_default_context())
            connection.set_tunnel(parts.hostname, port)
        else:
            connection = http.client.HTTPConnection(proxy_host, proxy_port,
                                                    timeout=timeout)
            path = url
    elif parts.scheme == 'https':
        connection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout,
            context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, port,
                                                timeout=timeout)
    return connection, path


def _open(url, limits, started):
    """(connection, response) of a 200 answer, redirects followed."""
    seen = []
    while True:
        remaining = limits.deadline - (time.monotonic() - started)
        if remaining <= 0:
            raise TransferError('no answer within the %g s deadline'
                                % limits.deadline)
        connection, path = _connection(url, min(limits.connect_timeout,
                                                remaining))
        try:
            connection.connect()
            # The response reads through this socket even after http.client
            # lets go of it (HTTP/1.0 servers); keep it to set timeouts.
            sock = connection.sock
            connection.request('GET', path, headers={
                'User-Agent': 'slimnets', 'Accept-Encoding': 'identity'})
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader('Location')
            connection.close()
            if not location:
                raise TransferError('HTTP %d redirect without a Location'
                                    % response.status)
            seen.append(url)
            url = urllib.parse.urljoin(url, location)
            if len(seen) > MAX_REDIRECTS or url in seen:
                raise TransferError('too many redirects (a redirect loop?) '
                                    'after %s' % ', '.join(seen[:3]))
            if urllib.parse.urlsplit(url).scheme not in ('http', 'https'):
                raise TransferError('redirected to a non-http(s) URL %s'
                                    % url)
            continue
        if response.status != 200:
            connection.close()
            raise TransferError('HTTP %d %s' % (response.status,
                                                response.reason))
        return connection, sock, response


class _LocalWriteError(SlimnetsError):
    """Carries an OSError of writing the download past the handlers that
    turn network errors into TransferError."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


def download(url, handle, limits=DEFAULT_LIMITS, progress=None):
    """Streams `url` into the open binary file `handle`.

    Args:
      url: an http(s) URL.
      handle: a file open for writing.
      limits: a `Limits`.
      progress: called with each chunk's length (a progress bar), and once
        first with `('total', Content-Length or None)`.

    Returns:
      (bytes written, sha256 hex digest, md5 hex digest).

    Raises:
      TransferError: a network error, an HTTP status other than 200, a
        limit exceeded, or a response shorter than announced.
      OSError: writing to `handle` failed (a full disk): the caller's
        problem, not the source's, so not a TransferError.
    """
    started = time.monotonic()
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    try:
        connection, sock, response = _open(url, limits, started)
        try:
            length = response.getheader('Content-Length')
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > limits.max_bytes:
                raise TransferError('the file is %d bytes, more than the '
                                    '%d-byte limit' % (expected,
                                                       limits.max_bytes))
            if progress:
                progress(('total', expected))
            while True:
                remaining = limits.deadline - (time.monotonic() - started)
                if remaining <= 0:
                    raise TransferError(
                        'not complete within the %g s deadline (%d bytes '
                        'received)' % (limits.deadline, received))
                sock.settimeout(min(limits.stall_timeout, remaining))
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > limits.max_bytes:
                    raise TransferError('the file is larger than the '
                                        '%d-byte limit' % limits.max_bytes)
                try:
                    handle.write(chunk)
                except OSError as error:  # the local disk, not the network
                    raise _LocalWriteError(error) from None
                sha256.update(chunk)
                md5.update(chunk)
                if progress:
                    progress(len(chunk))
        finally:
            response.close()
            connection.close()
    except _LocalWriteError as error:
        raise error.error from None
    except socket.timeout:
        if time.monotonic() - started >= limits.deadline:
            raise TransferError('not complete within the %g s deadline (%d '
                                'bytes received)' % (limits.deadline,
                                                     received)) from None
        raise TransferError(
            'timed out: no data for %g s (%d bytes received)' % (
                limits.stall_timeout if received else
                limits.connect_timeout, received)) from None
    except http.client.IncompleteRead as error:
        raise TransferError('the transfer was interrupted after %d of %d '
                            'bytes' % (received + len(error.partial),
                                       received + len(error.partial) +
                                       (error.expected or 0))) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, 'reason', None) or error
        raise TransferError('%s' % (reason,)) from None
    if expected is not None and received != expected:
        raise TransferError('the transfer was interrupted after %d of %d '
                            'bytes' % (received, expected))
    return received, sha256.hexdigest(), md5.hexdigest()
