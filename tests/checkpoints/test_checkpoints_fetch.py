"""The catalogue and `fetch`, against a local HTTP server on 127.0.0.1.

Every archive is built by the test; nothing leaves this machine.
"""

import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import nets_factory

import helpers

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
        assert item.sources and all(
            s.url.startswith('https://') for s in item.sources), item.name
        assert item.sources[0].format == 'slim-archive'
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
    source_tree = checkpoints.published.source_tree_cache()
    assert source_tree and source_tree.endswith('checkpoints')
    assert checkpoints.cache_dir() == source_tree
    monkeypatch.setenv('SLIMNETS_CACHE', str(tmp_path / 'env'))
    assert checkpoints.cache_dir() == str(tmp_path / 'env')
    assert checkpoints.cache_dir(str(tmp_path / 'arg')) == str(tmp_path / 'arg')


# ----------------------------------------------------------- local server


def test_complete_download_and_cache_reuse(tmp_path, tiny_checkpoint):
    archive = helpers.make_tar({'mobilenet_v1_0.25_128/' + n: d
                        for n, d in tiny_checkpoint.items()})
    with helpers.Server({'/a.tgz': archive}) as server:
        item = helpers.entry_for(server.url('/a.tgz'))
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
    assert helpers.cache_is_clean(str(tmp_path))
    assert checkpoints.cached_checkpoint('mobilenet_v1_0.25_128',
                                         str(tmp_path)) == prefix


def test_member_hint_and_ema_preference(tmp_path, tiny_checkpoint):
    members = {}
    for folder in ('pristine', 'ema'):
        members.update({'v3/%s/%s' % (folder, n): d
                        for n, d in tiny_checkpoint.items()})
    with helpers.Server({'/v3.tgz': helpers.make_tar(members, 'w')}) as server:
        prefix = checkpoints.fetch(helpers.entry_for(server.url('/v3.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    assert prefix.endswith(os.path.join('v3', 'ema', 'model.ckpt'))


def test_progress_bar_goes_to_stderr(tmp_path, tiny_checkpoint, capsys):
    archive = helpers.make_tar({n: d for n, d in tiny_checkpoint.items()})
    with helpers.Server({'/p.tgz': archive}) as server:
        checkpoints.fetch(helpers.entry_for(server.url('/p.tgz')),
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
        route = helpers.make_tar({'../../evil.txt': b'x', 'model.ckpt.index': b'y'})
    elif route == 'link':
        route = helpers.make_tar({'model.ckpt.index': ('symlink', '/etc/passwd')})
    elif route == 'no-checkpoint':
        route = helpers.make_tar({'README': b'nothing here'})
    elif route == 'truncated':
        files = dict(tiny_checkpoint)
        data = [n for n in files if '.data-' in n][0]
        files[data] = files[data][:len(files[data]) // 2]
        route = helpers.make_tar(files)
    cache = tmp_path / 'cache'
    with helpers.Server({'/x.tgz': route}) as server:
        item = helpers.entry_for(server.url('/x.tgz'))
        with pytest.raises(checkpoints.CheckpointError, match=match) as error:
            checkpoints.fetch(item, cache_dir=str(cache), progress=False)
    message = str(error.value)
    assert item.url in message
    assert str(cache / item.name) in message
    assert helpers.leftovers(cache) == []
    assert not (tmp_path / 'evil.txt').exists()


def test_offline_names_url_and_manual_location(tmp_path):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    item = helpers.entry_for('http://127.0.0.1:%d/gone.tgz' % port)
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.fetch(item, cache_dir=str(tmp_path), progress=False,
                          timeout=5)
    message = str(error.value)
    assert message.startswith('Could not download mobilenet_v1_0.25_128: tried '
                              'http://127.0.0.1:%d/gone.tgz (' % port)
    assert '--checkpoint PATH' in message and '--url URL' in message
    assert 'by hand' in message and str(tmp_path / item.name) in message
    assert helpers.leftovers(tmp_path) == []


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
    archive.write_bytes(helpers.make_tar({'/tmp/absolute.txt': b'x'}, 'w'))
    with pytest.raises(checkpoints.CheckpointError, match='outside'):
        checkpoints.extract_archive(str(archive), str(tmp_path / 'out'))


def test_tiny_checkpoint_values_survive(tmp_path, tiny_checkpoint):
    archive = helpers.make_tar(dict(tiny_checkpoint))
    with helpers.Server({'/v.tgz': archive}) as server:
        prefix = checkpoints.fetch(helpers.entry_for(server.url('/v.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(
        reader.get_tensor('MobilenetV1/Conv2d_0/weights'),
        np.ones([3, 3, 3, 8], np.float32))


# ------------------------------------------- sources: https, then Keras

def test_every_entry_lists_https_sources_in_order():
    entries = checkpoints.catalogue()
    assert not [s.url for i in entries for s in i.sources
                if not s.url.startswith('https://')]
    keras_served = {i.name for i in entries
                    if any(s.format == 'keras-h5' for s in i.sources)}
    # Every float v1 and v2 entry and the six float v3 ones have a Keras copy.
    assert len(keras_served) == 16 + 22 + 6
    for item in entries:
        formats = [s.format for s in item.sources]
        assert formats[0] == 'slim-archive', item.name
        assert formats == sorted(formats, key=('slim-archive',
                                               'keras-h5').index)
        assert (item.name in keras_served) == (item.weights == 'float' and
                                                item.family != 'edgetpu')
    item = checkpoints.entry('mobilenet_v1_0.25_128')
    assert [s.url.rsplit('/', 1)[-1] for s in item.sources] == [
        'mobilenet_v1_0.25_128.tgz', 'mobilenet_2_5_128_tf.h5',
        'mobilenet_2_5_128_tf.h5']
    v3 = checkpoints.entry('v3-small-minimalistic_224_1.0_float').sources[1]
    assert v3.url.endswith('weights_mobilenet_v3_small_minimalistic_224_1.0_'
                           'float.h5')
    assert v3.md5 == '99cd97fb2fcdad2bf028eb838de69e37'


@pytest.fixture(scope='module')
def keras_v1_quarter(tmp_path_factory):
    """A Keras Applications MobileNet(alpha=0.25) at 128 px with random
    weights and batch-norm statistics, its weights in Keras Applications'
    (legacy HDF5) layout, and its logits for a fixed batch."""
    import h5py  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=import-outside-toplevel
    model = keras.applications.MobileNet(
        alpha=0.25, input_shape=(128, 128, 3), weights=None,
        classifier_activation=None)
    helpers.randomize(model)
    rng = np.random.RandomState(1)
    path = str(tmp_path_factory.mktemp('keras') / 'mobilenet_2_5_128_tf.h5')
    with h5py.File(path, 'w') as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    images = rng.uniform(-1, 1, [3, 128, 128, 3]).astype(np.float32)
    logits = np.asarray(model(images, training=False)).reshape(3, -1)
    with open(path, 'rb') as handle:
        return handle.read(), images, logits


def _slim_logits(prefix, images):
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, images.shape)
        logits, _ = nets_factory.get_network_fn('mobilenet_v1', 1001)(
            inputs, depth_multiplier=0.25)
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, prefix)
            return sess.run(logits, {inputs: images})


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _forbidden(handler):
    handler.send_error(403, 'Forbidden')


def test_falls_back_to_keras_weights_when_google_says_403(
        tmp_path, keras_v1_quarter, caplog):
    data, images, keras_logits = keras_v1_quarter
    with helpers.Server({'/models/a.tgz': _forbidden, '/keras/w.h5': data}) as server:
        item = checkpoints.entry('mobilenet_v1_0.25_128')._replace(sources=(
            checkpoints.published.Source(server.url('/models/a.tgz')),
            checkpoints.published.Source(
                server.url('/keras/w.h5'), 'keras-h5',
                hashlib.sha256(data).hexdigest())))
        with caplog.at_level(logging.DEBUG, 'slimnets'):
            prefix = checkpoints.fetch(item, cache_dir=str(tmp_path),
                                       progress=False)
        assert server.requests == ['/models/a.tgz', '/keras/w.h5']
    assert prefix == str(tmp_path / item.name / (item.name + '.ckpt'))
    log = caplog.text
    assert '%s failed (HTTP 403' % server.url('/models/a.tgz') in log
    assert '1001-class slim checkpoint' in log and 'background' in log
    assert 'Stored mobilenet_v1_0.25_128' in log and str(tmp_path) in log
    slim_logits = _slim_logits(prefix, images)
    # The background row never wins; the 1000 others are Keras' logits,
    # and the 1001-way probabilities are Keras' 1000-way ones.
    print('Keras -> slim logits max |diff| %.2e, probabilities %.2e' % (
        np.abs(slim_logits[:, 1:] - keras_logits).max(),
        np.abs(_softmax(slim_logits)[:, 1:] - _softmax(keras_logits)).max()))
    assert (slim_logits.argmax(1) > 0).all()
    np.testing.assert_allclose(slim_logits[:, 1:], keras_logits, atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(_softmax(slim_logits)[:, 1:],
                               _softmax(keras_logits), atol=1e-5, rtol=0)
    assert (_softmax(slim_logits)[:, 0] < 1e-30).all()
    # Offline from now on: the cache answers.
    again = checkpoints.fetch(item, cache_dir=str(tmp_path), progress=False)
    assert again == prefix
    assert helpers.cache_is_clean(str(tmp_path))


def test_hash_mismatch_and_all_sources_failing_is_one_error(
        tmp_path, keras_v1_quarter):
    data = keras_v1_quarter[0]
    with helpers.Server({'/a.tgz': _forbidden, '/w.h5': data}) as server:
        item = checkpoints.entry('mobilenet_v1_0.25_128')._replace(sources=(
            checkpoints.published.Source(server.url('/a.tgz')),
            checkpoints.published.Source(server.url('/w.h5'), 'keras-h5',
                                        '0' * 64),
            checkpoints.published.Source(server.url('/gone.h5'), 'keras-h5')))
        with pytest.raises(checkpoints.CheckpointError) as error:
            checkpoints.fetch(item, cache_dir=str(tmp_path), progress=False)
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith('Could not download mobilenet_v1_0.25_128: '
                              'tried ')
    for url, reason in [('/a.tgz', 'HTTP 403'), ('/w.h5', 'its sha256 is %s'
                                                 % hashlib.sha256(
                                                     data).hexdigest()),
                        ('/gone.h5', 'HTTP 404')]:
        assert '%s (%s' % (server.url(url), reason) in message
    assert '--checkpoint PATH' in message
    assert 'slimnets fetch mobilenet_v1_0.25_128 --url URL' in message
    assert helpers.leftovers(tmp_path) == []


def test_list_shows_sources(capsys, tmp_path):
    from slimnets import cli  # pylint: disable=import-outside-toplevel
    cli.main(['list', '--family', 'v3', '--sources', '--cache-dir',
              str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ['sources', 'cached']
    rows = {line.split()[0]: line.split() for line in lines[1:]
            if not line.startswith(' ')}
    assert rows['v3-large_224_1.0_float'][-2:] == ['slim+keras', '-']
    assert rows['v3-large_224_1.0_uint8'][-2:] == ['slim', '-']
    urls = [line.split() for line in lines if line.startswith('    ')]
    assert len(urls) == sum(len(i.sources) for i in checkpoints.catalogue()
                            if i.family == 'v3')
    assert ['keras-h5', 'sha256', 'https://storage.googleapis.com/tensorflow/'
            'keras-applications/mobilenet_v3/weights_mobilenet_v3_large_224_'
            '1.0_float.h5'] in urls
    assert ['keras-h5', 'md5', 'https://storage.googleapis.com/tensorflow/'
            'keras-applications/mobilenet_v3/weights_mobilenet_v3_small_'
            'minimalistic_224_1.0_float.h5'] in urls
    assert ['slim-archive', '-', 'https://storage.googleapis.com/mobilenet_v3/'
            'checkpoints/v3-small-minimalistic_224_1.0_float.tgz'] in urls


# ----------------------------------------- nothing of the user's is lost


def test_user_files_in_the_cache_folder_survive(tmp_path, tiny_checkpoint):
    target = tmp_path / 'mobilenet_v1_0.25_128'
    target.mkdir()
    (target / 'notes.txt').write_text('mine')
    (target / 'half.index').write_bytes(b'not a whole checkpoint')
    # A folder holding only an index is not a checkpoint.
    assert checkpoints.cached_checkpoint(target.name, str(tmp_path)) is None
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        prefix = checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    assert (target / 'notes.txt').read_text() == 'mine'
    assert (target / 'half.index').read_bytes() == b'not a whole checkpoint'
    assert prefix == str(target / 'mobilenet_v1_0.25_128' / 'model.ckpt')
    assert checkpoints.cached_checkpoint(target.name, str(tmp_path)) == prefix
    assert helpers.cache_is_clean(str(tmp_path))


def test_a_link_in_the_cache_is_never_written_through(tmp_path,
                                                      tiny_checkpoint):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'keep.txt').write_text('x')
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / 'mobilenet_v1_0.25_128').symlink_to(outside)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        with pytest.raises(checkpoints.CheckpointError, match='is a link'):
            checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                              cache_dir=str(cache), progress=False)
        assert server.requests == []
    assert os.listdir(outside) == ['keep.txt']
    # A link to a good checkpoint is used as it is.
    for name, data in tiny_checkpoint.items():
        (outside / name).write_bytes(data)
    assert checkpoints.fetch('mobilenet_v1_0.25_128', cache_dir=str(cache),
                             progress=False) == str(
                                 cache / 'mobilenet_v1_0.25_128' / 'model.ckpt')


def test_concurrent_fetches_end_with_one_copy(tmp_path, tiny_checkpoint):
    archive = helpers.archive_of(tiny_checkpoint)

    def slow(handler):
        time.sleep(0.5)
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(archive)))
        handler.end_headers()
        handler.wfile.write(archive)

    results, errors = [], []

    def run(item):
        try:
            results.append(checkpoints.fetch(item, cache_dir=str(tmp_path),
                                             progress=False))
        except Exception as error:  # pylint: disable=broad-except
            errors.append(error)

    with helpers.Server({'/a.tgz': slow}) as server:
        item = helpers.entry_for(server.url('/a.tgz'))
        threads = [threading.Thread(target=run, args=(item,))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert server.requests == ['/a.tgz']
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert helpers.leftovers(tmp_path) == ['mobilenet_v1_0.25_128']
    checkpoints.validate_readable(results[0])


def test_stale_partial_folders_are_removed(tmp_path, tiny_checkpoint):
    dead = tmp_path / '.mobilenet_v1_0.25_128.partial-999999999-0a0b0c0d'
    (dead / 'checkpoint').mkdir(parents=True)
    (dead / 'download').write_bytes(b'half')
    alive = tmp_path / '.other_model.partial-999999999-0a0b0c0d'
    alive.mkdir()
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                          cache_dir=str(tmp_path), progress=False)
    assert not dead.exists()
    assert alive.exists()  # another name's: not this fetch's to remove


def test_ctrl_c_leaves_nothing_half_done(tmp_path, tiny_checkpoint,
                                         monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.archives, 'extract_checkpoint_files',
                        interrupted)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        with pytest.raises(KeyboardInterrupt):
            checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                              cache_dir=str(tmp_path), progress=False)
    assert helpers.leftovers(tmp_path) == []


# ------------------------------------------- a server that misbehaves

def _trickle(handler):
    handler.send_response(200)
    handler.send_header('Content-Length', '1000')
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b'x')
        handler.wfile.flush()
        time.sleep(0.05)


def _stall(handler):
    handler.send_response(200)
    handler.send_header('Content-Length', '1000')
    handler.end_headers()
    handler.wfile.write(b'x' * 10)
    handler.wfile.flush()
    time.sleep(3)


def _silent(handler):
    time.sleep(3)


def _redirect(to):
    def handler_function(handler):
        handler.send_response(302)
        handler.send_header('Location', to)
        handler.send_header('Content-Length', '0')
        handler.end_headers()
    return handler_function


def _long_length(handler):
    handler.send_response(200)
    handler.send_header('Content-Length', '5000')
    handler.end_headers()
    handler.wfile.write(b'x' * 100)


@pytest.mark.parametrize('routes,limits,match', [
    ({'/x': _forbidden}, {}, r'/x \(HTTP 403 Forbidden\)'),
    ({}, {}, r'/x \(HTTP 404'),
    ({'/x': _long_length}, {}, 'interrupted after 100 of 5000 bytes'),
    ({'/x': _trickle}, dict(stall_timeout=2, deadline=0.6),
     'not complete within the 0.6 s deadline'),
    ({'/x': _stall}, dict(stall_timeout=0.3), 'no data for 0.3 s'),
    ({'/x': _silent}, dict(connect_timeout=0.3), 'timed out'),
    ({'/x': _redirect('/y'), '/y': _redirect('/x')}, {}, 'redirect loop'),
    ({'/x': _redirect('file:///etc/passwd')}, {}, 'non-http'),
    ({'/x': b'x' * 5000}, dict(max_bytes=1000), '1000-byte limit'),
])
def test_misbehaving_server(tmp_path, routes, limits, match):
    with helpers.Server(routes) as server:
        started = time.monotonic()
        with pytest.raises(checkpoints.CheckpointError, match=match):
            checkpoints.fetch(helpers.entry_for(server.url('/x')),
                              cache_dir=str(tmp_path), progress=False,
                              **limits)
        assert time.monotonic() - started < 2.5
    assert helpers.leftovers(tmp_path) == []


def test_limits_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('SLIMNETS_STALL_TIMEOUT', '0.3')
    with helpers.Server({'/x': _stall}) as server:
        with pytest.raises(checkpoints.CheckpointError,
                           match='no data for 0.3 s'):
            checkpoints.fetch(helpers.entry_for(server.url('/x')),
                              cache_dir=str(tmp_path), progress=False)
    monkeypatch.setenv('SLIMNETS_DOWNLOAD_DEADLINE', 'soon')
    with pytest.raises(checkpoints.CheckpointError,
                       match=r'\$SLIMNETS_DOWNLOAD_DEADLINE must be a '
                             'positive number'):
        checkpoints.fetch(helpers.entry_for('http://127.0.0.1:9/x'),
                          cache_dir=str(tmp_path), progress=False)


def test_gzip_bomb_is_refused_before_it_is_written(tmp_path,
                                                   tiny_checkpoint):
    members = dict(tiny_checkpoint)
    members['model.ckpt.data-00000-of-00001'] = bytes(64 << 20)
    bomb = helpers.make_tar(members)
    assert len(bomb) < 1 << 20
    with helpers.Server({'/b.tgz': bomb}) as server:
        with pytest.raises(checkpoints.CheckpointError,
                           match='unpacks to more than 8388608 bytes'):
            checkpoints.fetch(helpers.entry_for(server.url('/b.tgz')),
                              cache_dir=str(tmp_path), progress=False,
                              max_extract_bytes=8 << 20)
    assert helpers.leftovers(tmp_path) == []


def test_only_checkpoint_members_are_extracted(tmp_path, tiny_checkpoint):
    members = {'m/' + n: d for n, d in tiny_checkpoint.items()}
    members.update({'m/frozen_graph.pb': b'g' * 1000,
                    'm/model.tflite': b't' * 1000, 'm/checkpoint':
                    b'model_checkpoint_path: "model.ckpt"\n'})
    with helpers.Server({'/a.tgz': helpers.make_tar(members)}) as server:
        prefix = checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    folder = os.path.dirname(prefix)
    # Plus the record fetch writes beside the checkpoint (model_info).
    assert sorted(os.listdir(folder)) == sorted(
        ['checkpoint', 'model.ckpt.slimnets.json'] + list(tiny_checkpoint))


def test_catalogue_entry_must_match_the_network(tmp_path, tiny_checkpoint):
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        item = helpers.entry_for(server.url('/a.tgz'), name='mobilenet_v1_0.5_128')
        with pytest.raises(checkpoints.CheckpointError,
                           match=r'does not fit mobilenet_v1_0.5_128.*'
                                 r'Conv2d_0/BatchNorm/beta is \[8\], not '
                                 r'\[16\].* and 133 more'):
            checkpoints.fetch(item, cache_dir=str(tmp_path), progress=False)
    assert helpers.leftovers(tmp_path) == []


def test_two_fetch_processes_both_succeed_with_one_copy(tmp_path,
                                                        tiny_checkpoint):
    archive = helpers.archive_of(tiny_checkpoint)

    def slow(handler):
        time.sleep(1.0)
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(archive)))
        handler.end_headers()
        handler.wfile.write(archive)

    with helpers.Server({'/a.tgz': slow}) as server:
        command = [sys.executable, '-m', 'slimnets', 'fetch',
                   'mobilenet_v1_0.25_128', '--url', server.url('/a.tgz'),
                   '--cache-dir', str(tmp_path), '--no-progress']
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
        try:
            results = [p.communicate(timeout=120) for p in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert server.requests == ['/a.tgz']
    assert [p.returncode for p in processes] == [0, 0], results
    prefixes = {out.strip().splitlines()[-1] for out, _ in results}
    assert prefixes == {str(tmp_path / 'mobilenet_v1_0.25_128' /
                            'mobilenet_v1_0.25_128' / 'model.ckpt')}
    assert helpers.leftovers(tmp_path) == ['mobilenet_v1_0.25_128']
    checkpoints.validate_readable(prefixes.pop())


def test_a_read_only_cache_serves_what_it_holds(tmp_path, tiny_checkpoint):
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        item = helpers.entry_for(server.url('/a.tgz'))
        prefix = checkpoints.fetch(item, cache_dir=str(tmp_path),
                                   progress=False)
    for name in os.listdir(tmp_path):
        if name.endswith('.lock'):
            os.unlink(tmp_path / name)
    os.chmod(tmp_path, 0o555)
    try:
        assert checkpoints.fetch(item, cache_dir=str(tmp_path),
                                 progress=False) == prefix
        assert os.listdir(tmp_path) == ['mobilenet_v1_0.25_128']
    finally:
        os.chmod(tmp_path, 0o755)
