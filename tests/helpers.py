"""Helpers that several test files share (fixtures are in conftest.py):
a local HTTP server on 127.0.0.1, archives built in memory, catalogue
entries pointed at that server, and random Keras weights."""

import http.server
import io
import os
import tarfile
import threading

import numpy as np

from slimnets import checkpoints


class Server(object):
    """Serves `routes` {path: bytes or callable(handler)} on 127.0.0.1."""

    def __init__(self, routes):
        self.routes = routes
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if callable(body):
                    body(self)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *args: None  # clients hang up
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.httpd.server_address[1], path)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_tar(members, mode='w:gz'):
    """A tar archive of {name: bytes}; a value of ('symlink', target) makes
    a link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = data[1]
                archive.addfile(info)
                continue
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def entry_for(url, name='mobilenet_v1_0.25_128', member=None):
    return checkpoints.entry(name).with_url(url)._replace(member=member)


def leftovers(cache):
    """What the cache holds besides fetch's lock files."""
    return sorted(n for n in os.listdir(cache) if not n.endswith('.lock'))


def cache_is_clean(cache):
    return not [n for n in leftovers(cache) if n.startswith('.')]


def archive_of(tiny_checkpoint, folder='mobilenet_v1_0.25_128'):
    return make_tar({'%s/%s' % (folder, n): d
                     for n, d in tiny_checkpoint.items()})


def randomize(model, seed=0):
    """Random weights and batch-norm statistics, so that every one matters."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if type(layer).__name__ == 'BatchNormalization':
            weights = [rng.uniform(0.5, 1.5, w.shape) if i in (0, 3) else
                       rng.normal(0, 0.1, w.shape)
                       for i, w in enumerate(weights)]
        else:
            weights = [w + rng.normal(0, 0.05, w.shape) for w in weights]
        layer.set_weights([w.astype(np.float32) for w in weights])

