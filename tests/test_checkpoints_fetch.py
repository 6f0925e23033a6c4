"""The catalogue and `fetch`, against a local HTTP server on 127.0.0.1.

Every archive is built by the test; nothing leaves this machine.
"""

import http.server
import io
import os
import socket
import tarfile
import threading

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import nets_factory

# ---------------------------------------------------------------- catalogue

def test_catalogue_lists_every_published_archive():
    entries = checkpoints.catalogue()
    assert len(entries) == 87
    families = {}
    for item in entries:
        families.setdefault(item.family, []).append(item)
    assert {f: len(v) for f, v in families.items()} == {
        'v1': 32, 'v2': 44, 'v3': 9, 'edgetpu': 2}
    v1_float = [i for i in families['v1'] if i.weights == 'float']
    assert len(v1_float) == 16
    assert {(i.network_kwargs['depth_multiplier'], i.input_size)
            for i in v1_float} == {(d, s) for d in (1.0, 0.75, 0.5, 0.25)
                                   for s in (224, 192, 160, 128)}
    v2_depths = {i.network_kwargs['depth_multiplier'] for i in families['v2']}
    assert v2_depths == {1.4, 1.3, 1.0, 0.75, 0.5, 0.35}


def test_catalogue_entries_name_buildable_networks():
    for item in checkpoints.catalogue():
        assert item.network in nets_factory.networks_map, item.name
        assert item.num_classes == 1001
        assert item.url.startswith(('http://', 'https://'))
        assert item.params_millions > 0 and item.macs_millions > 0
        finegrain = item.network_kwargs.get('finegrain_classification_mode')
        if item.family == 'v2':
            assert bool(finegrain) == (
                item.network_kwargs['depth_multiplier'] < 1), item.name
    item = checkpoints.entry('mobilenet_v1_1.0_224')
    assert (item.top1, item.top5, item.macs_millions, item.params_millions) \
        == (70.9, 89.9, 569, 4.24)
    assert item.moving_average_shadows is False
    assert checkpoints.entry('v3-large_224_1.0_float').moving_average_shadows


def test_unknown_catalogue_name_suggests():
    with pytest.raises(KeyError, match='did you mean.*mobilenet_v1_0.25_128'):
        checkpoints.entry('0.25_128')


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.delenv('SLIMNETS_CACHE', raising=False)
    source_tree = checkpoints.registry.source_tree_cache()
    assert source_tree and source_tree.endswith('checkpoints')
    assert checkpoints.cache_dir() == source_tree
    monkeypatch.setenv('SLIMNETS_CACHE', str(tmp_path / 'env'))
    assert checkpoints.cache_dir() == str(tmp_path / 'env')
    assert checkpoints.cache_dir(str(tmp_path / 'arg')) == str(tmp_path / 'arg')


# ----------------------------------------------------------- local server

class _Server(object):
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


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """A real (small) checkpoint and its files' bytes."""
    folder = tmp_path_factory.mktemp('source')
    prefix = str(folder / 'model.ckpt')
    with tf.Graph().as_default():
        tf.get_variable('MobilenetV1/Conv2d_0/weights', [3, 3, 3, 8],
                        initializer=tf.ones_initializer())
        tf.get_variable('MobilenetV1/Logits/Conv2d_1c_1x1/biases', [1001],
                        initializer=tf.zeros_initializer())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    files = {}
    for name in os.listdir(folder):
        if name.startswith('model.ckpt'):
            with open(folder / name, 'rb') as handle:
                files[name] = handle.read()
    return files


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
    return checkpoints.entry(name)._replace(url=url, member=member)


def cache_is_clean(cache):
    return not [n for n in os.listdir(cache) if n.startswith('.')]


def test_complete_download_and_cache_reuse(tmp_path, tiny_checkpoint):
    archive = make_tar({'mobilenet_v1_0.25_128/' + n: d
                        for n, d in tiny_checkpoint.items()})
    with _Server({'/a.tgz': archive}) as server:
        item = entry_for(server.url('/a.tgz'))
        prefix = checkpoints.fetch(item, cache_dir=str(tmp_path),
                                   progress=False)
        assert prefix == str(tmp_path / 'mobilenet_v1_0.25_128' /
                             'mobilenet_v1_0.25_128' / 'model.ckpt')
        shapes = checkpoints.variable_shapes(prefix)
        assert shapes['MobilenetV1/Conv2d_0/weights'] == [3, 3, 3, 8]
        again = checkpoints.fetch(item, cache_dir=str(tmp_path),
                                  progress=False)
        assert again == prefix
        assert server.requests == ['/a.tgz']
    assert cache_is_clean(str(tmp_path))
    assert checkpoints.cached_checkpoint('mobilenet_v1_0.25_128',
                                         str(tmp_path)) == prefix


def test_member_hint_and_ema_preference(tmp_path, tiny_checkpoint):
    members = {}
    for folder in ('pristine', 'ema'):
        members.update({'v3/%s/%s' % (folder, n): d
                        for n, d in tiny_checkpoint.items()})
    with _Server({'/v3.tgz': make_tar(members, 'w')}) as server:
        prefix = checkpoints.fetch(entry_for(server.url('/v3.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    assert prefix.endswith(os.path.join('v3', 'ema', 'model.ckpt'))


def test_progress_bar_goes_to_stderr(tmp_path, tiny_checkpoint, capsys):
    archive = make_tar({n: d for n, d in tiny_checkpoint.items()})
    with _Server({'/p.tgz': archive}) as server:
        checkpoints.fetch(entry_for(server.url('/p.tgz')),
                          cache_dir=str(tmp_path), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ''
    assert 'p.tgz' in captured.err


def _interrupted(handler):
    handler.send_response(200)
    handler.send_header('Content-Length', '100000')
    handler.end_headers()
    handler.wfile.write(b'\x1f\x8b' + b'x' * 500)
    handler.wfile.flush()
    handler.connection.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize('route,match', [
    (_interrupted, 'interrupted|Could not download'),
    (b'this is not an archive at all', 'corrupt or incomplete'),
    ('escape', 'outside the extraction folder'),
    ('link', 'is a link'),
    ('no-checkpoint', 'no checkpoint'),
    ('truncated', 'damaged|corrupt'),
])
def test_bad_downloads_leave_nothing(tmp_path, tiny_checkpoint, route, match):
    if route == 'escape':
        route = make_tar({'../../evil.txt': b'x', 'model.ckpt.index': b'y'})
    elif route == 'link':
        route = make_tar({'model.ckpt.index': ('symlink', '/etc/passwd')})
    elif route == 'no-checkpoint':
        route = make_tar({'README': b'nothing here'})
    elif route == 'truncated':
        files = dict(tiny_checkpoint)
        data = [n for n in files if '.data-' in n][0]
        files[data] = files[data][:len(files[data]) // 2]
        route = make_tar(files)
    cache = tmp_path / 'cache'
    with _Server({'/x.tgz': route}) as server:
        item = entry_for(server.url('/x.tgz'))
        with pytest.raises(checkpoints.CheckpointError, match=match) as error:
            checkpoints.fetch(item, cache_dir=str(cache), progress=False)
    message = str(error.value)
    assert item.url in message
    assert str(cache / item.name) in message
    assert os.listdir(cache) == []
    assert not (tmp_path / 'evil.txt').exists()


def test_offline_names_url_and_manual_location(tmp_path):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    item = entry_for('http://127.0.0.1:%d/gone.tgz' % port)
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.fetch(item, cache_dir=str(tmp_path), progress=False,
                          timeout=5)
    message = str(error.value)
    assert 'Could not download http://127.0.0.1:%d/gone.tgz' % port in message
    assert 'by hand' in message and str(tmp_path / item.name) in message
    assert os.listdir(tmp_path) == []


def test_resolve_paths_and_names(tmp_path, tiny_checkpoint):
    for name, data in tiny_checkpoint.items():
        (tmp_path / name).write_bytes(data)
    prefix = str(tmp_path / 'model.ckpt')
    assert checkpoints.resolve(prefix) == prefix
    assert checkpoints.resolve(prefix + '.index') == prefix
    assert checkpoints.resolve(str(tmp_path)) == prefix
    with pytest.raises(checkpoints.CheckpointError, match='neither'):
        checkpoints.resolve('no_such_network_name')


def test_extract_archive_is_safe_for_absolute_names(tmp_path):
    archive = tmp_path / 'abs.tar'
    archive.write_bytes(make_tar({'/tmp/absolute.txt': b'x'}, 'w'))
    with pytest.raises(checkpoints.CheckpointError, match='outside'):
        checkpoints.extract_archive(str(archive), str(tmp_path / 'out'))


def test_tiny_checkpoint_values_survive(tmp_path, tiny_checkpoint):
    archive = make_tar(dict(tiny_checkpoint))
    with _Server({'/v.tgz': archive}) as server:
        prefix = checkpoints.fetch(entry_for(server.url('/v.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(
        reader.get_tensor('MobilenetV1/Conv2d_0/weights'),
        np.ones([3, 3, 3, 8], np.float32))
