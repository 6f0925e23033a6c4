"""Issue 25, part C: checkpoint metadata, exports and fetch under faults.

Each case ends with one line (CLI) or a slimnets error naming the problem
and the way out, with nothing half-written.  Networks are MobileNet v1 0.25
at 64 px (fast); the fetch cases run against a local server on 127.0.0.1.
"""

import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import export
from slimnets import images
from slimnets import labels
from slimnets import model_info
from slimnets import nets_factory
from slimnets import quantized_tflite
from slimnets.checkpoints import converters
from slimnets.checkpoints import download
from slimnets.checkpoints import keras_weights
from slimnets.checkpoints import published as catalogue
from slimnets.errors import OutputError
from slimnets.errors import UsageError
from slimnets.export import exporter
from slimnets.export import serving as serving_export
from slimnets.graph_format import MAX_BATCH_SIZE
from slimnets.inference import models

import helpers
import reference

SIZE = 64


@pytest.fixture(scope='module')
def float_checkpoint(tmp_path_factory):
    """A mobilenet_v1 0.25, 5-class checkpoint (random weights): its prefix."""
    prefix = str(tmp_path_factory.mktemp('float') / 'model.ckpt')
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, SIZE, SIZE, 3])
        nets_factory.get_network_fn('mobilenet_v1', 5)(images,
                                                       depth_multiplier=0.25)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


def _export_args(prefix, *more):
    return ('export', '--checkpoint', prefix, '--image-size', SIZE) + more


def _png(width, height):
    """A PNG whose header declares width x height (no pixel data)."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
        '>IIBBBBB', width, height, 8, 2, 0, 0, 0)) + chunk(b'IEND', b''))


def _jpeg(width, height):
    """A small real JPEG whose frame header is rewritten to declare
    width x height."""
    data = tf2.io.encode_jpeg(tf2.zeros([8, 8, 3], tf2.uint8)).numpy()
    frame = data.find(b'\xff\xc0')
    return data[:frame + 5] + struct.pack('>HH', height, width) + \
        data[frame + 9:]


# ------------------------------------------------ item 9: --output a folder

@pytest.mark.parametrize('fmt', ['frozen', 'tflite', 'onnx'])
def test_export_output_an_existing_directory_is_one_line_up_front(
        fmt, cli, one_line_error, float_checkpoint, tmp_path, monkeypatch):
    # Nothing may be built before the refusal: fail loudly if it is.
    def no_work(*args, **kwargs):
        raise AssertionError('the export did work before checking --output')
    monkeypatch.setattr(exporter.models, 'model_spec', no_work)
    folder = tmp_path / 'out'
    folder.mkdir()
    (folder / 'keep.txt').write_text('mine')
    result = cli(*_export_args(float_checkpoint, '--format', fmt,
                               '--output', folder))
    one_line_error(result, 'is a directory', 'a directory is in the way',
                   '--output %s' % os.path.join(str(folder), 'model'))
    assert 'Free some space' not in result.stderr
    assert 'deprecat' not in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(folder) == ['keep.txt']


def test_export_output_directory_subprocess_has_no_tensorflow_noise(
        cli_process, one_line_error, float_checkpoint, tmp_path):
    folder = tmp_path / 'out.tflite'
    folder.mkdir()
    # By default: a TF_CPP_MIN_LOG_LEVEL of the user's (or left in this
    # process's environment by an earlier test) brings TensorFlow's lines back.
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    result = cli_process(*_export_args(float_checkpoint, '--format', 'tflite',
                                       '--output', folder), timeout=120,
                         env=env)
    one_line_error(result, 'a directory is in the way')
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[-1]], result.stderr


def test_saved_model_over_an_existing_path_is_refused_before_work(
        cli, one_line_error, float_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter.models, 'model_spec', None)  # not reached
    (tmp_path / 'sm').mkdir()
    result = cli(*_export_args(float_checkpoint, '--format', 'saved_model',
                               '--output', tmp_path / 'sm'))
    one_line_error(result, 'already exists (a folder)', 'choose another '
                   '--output')


# --------------------------------------------- item 11: export arguments

@pytest.mark.parametrize('value,fragment', [
    ('0', '0 must be in 1..%d' % MAX_BATCH_SIZE),
    ('-3', '-3 must be in 1..%d' % MAX_BATCH_SIZE),
    (str(MAX_BATCH_SIZE + 1), 'must be in 1..%d' % MAX_BATCH_SIZE),
    ('100000000', 'must be in 1..%d' % MAX_BATCH_SIZE),
])
def test_export_batch_size_out_of_range_is_a_usage_error(
        value, fragment, cli, one_line_error, float_checkpoint, tmp_path):
    result = cli(*_export_args(float_checkpoint, '--format', 'frozen',
                               '--output', tmp_path / 'm.pb',
                               '--batch-size', value))
    one_line_error(result, '--batch-size', fragment, status=2)
    assert not (tmp_path / 'm.pb').exists()


@pytest.mark.parametrize('value', [0, -1, MAX_BATCH_SIZE + 1, 10 ** 8, 2.5,
                                   True])
def test_library_export_refuses_a_batch_size_out_of_range(
        value, float_checkpoint, tmp_path):
    with pytest.raises(UsageError, match=r'1\.\.%d' % MAX_BATCH_SIZE):
        export.export(str(tmp_path / 'm.pb'), 'frozen', float_checkpoint,
                      image_size=SIZE, batch_size=value)
    assert os.listdir(tmp_path) == []


def test_export_at_the_largest_batch_size_works(float_checkpoint, tmp_path):
    report = export.export(str(tmp_path / 'm.pb'), 'frozen', float_checkpoint,
                           image_size=32, batch_size=MAX_BATCH_SIZE)
    assert report.probe_images == MAX_BATCH_SIZE
    assert report.max_abs_difference < 1e-4


def _int8_args(prefix, folder, output):
    return _export_args(prefix, '--format', 'tflite', '--quantization',
                        'int8', '--output', output,
                        '--representative-data', folder)


def test_int8_with_an_empty_representative_folder(
        cli, one_line_error, float_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter.models, 'model_spec', None)  # not reached
    (tmp_path / 'empty').mkdir()
    result = cli(*_int8_args(float_checkpoint, tmp_path / 'empty',
                             tmp_path / 'm.tflite'))
    one_line_error(result, 'no images in %s' % (tmp_path / 'empty'),
                   'give a folder of typical images')
    assert not (tmp_path / 'm.tflite').exists()


def test_int8_with_a_missing_representative_folder(
        cli, one_line_error, float_checkpoint, tmp_path):
    result = cli(*_int8_args(float_checkpoint, tmp_path / 'nowhere',
                             tmp_path / 'm.tflite'))
    one_line_error(result, 'is not a folder')


def test_int8_with_only_non_image_files(cli, one_line_error, float_checkpoint,
                                        tmp_path):
    folder = tmp_path / 'data'
    (folder / 'sub').mkdir(parents=True)
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'sub' / 'labels.csv').write_text('a,b')
    os.mkfifo(folder / 'pipe.jpg')  # not a regular file: never opened
    result = cli(*_int8_args(float_checkpoint, folder, tmp_path / 'm.tflite'))
    one_line_error(result, 'no images in')
    assert not (tmp_path / 'm.tflite').exists()


def test_int8_with_a_file_that_is_not_an_image(cli, one_line_error,
                                               float_checkpoint, tmp_path):
    folder = tmp_path / 'data'
    folder.mkdir()
    (folder / 'a.png').write_bytes(serving_export.encode_pngs(
        np.zeros([1, 16, 16, 3], np.float32))[0])
    (folder / 'b.jpg').write_bytes(b'this is text, not a JPEG')
    result = cli(*_int8_args(float_checkpoint, folder, tmp_path / 'm.tflite'))
    one_line_error(result, str(folder / 'b.jpg'), 'not an image that decodes')
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'm.tflite').exists()


def test_int8_without_representative_data_is_refused_before_work(
        float_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter.models, 'model_spec', None)  # not reached
    with pytest.raises(export.ExportError, match='--representative-data'):
        export.export(str(tmp_path / 'm.tflite'), 'tflite', float_checkpoint,
                      quantization='int8')


# ---------------------------------- item 11: the image_bytes signature

@pytest.fixture(scope='module')
def serving(float_checkpoint, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('serving') / 'sm')
    export.export(path, 'saved_model', float_checkpoint, image_size=SIZE)
    return tf2.saved_model.load(path).signatures[
        serving_export.BYTES_SIGNATURE]


@pytest.mark.parametrize('name,data,fragment', [
    ('malformed', b'this is not an image at all', 'Unknown image file format'),
    ('truncated png', _png(8, 8)[:30], 'PNG'),
    ('empty', b'', 'an empty string is not an image'),
    ('huge png', _png(30000, 30000), 'declares more than 50000000 pixels'),
    ('huge png, 2^32-1 wide', _png(2 ** 32 - 1, 2 ** 32 - 1),
     'declares more than'),
    ('huge jpeg', _jpeg(30000, 30000), 'declares more than 50000000 pixels'),
])
def test_image_bytes_signature_fails_the_call_and_keeps_serving(
        serving, name, data, fragment):
    good = serving_export.encode_pngs(np.zeros([1, 20, 20, 3], np.float32))
    before = serving(image_bytes=tf2.constant(good))['probabilities'].numpy()
    with pytest.raises(tf2.errors.InvalidArgumentError) as caught:
        serving(image_bytes=tf2.constant([data]))
    assert fragment in caught.value.message, (name, caught.value.message)
    # In a batch with good images too: the call fails, nothing is returned.
    with pytest.raises(tf2.errors.InvalidArgumentError):
        serving(image_bytes=tf2.constant(good + [data]))
    after = serving(image_bytes=tf2.constant(good))['probabilities'].numpy()
    np.testing.assert_array_equal(before, after)


def test_declared_pixels_match_the_python_header_reader():
    bmp = tf2.io.encode_png(tf2.zeros([3, 5, 3], tf2.uint8)).numpy()
    gif = b'GIF89a' + struct.pack('<HH', 700, 300) + b'\x00' * 10
    bitmap = (b'BM' + b'\x00' * 12 + struct.pack('<I', 40) +
              struct.pack('<ii', 640, -480) + b'\x00' * 30)
    os2 = b'BM' + b'\x00' * 12 + struct.pack('<IHH', 12, 320, 200) + \
        b'\x00' * 10
    function = tf2.function(serving_export.declared_pixels)
    for data in (bmp, gif, bitmap, os2, _png(123, 45), _jpeg(640, 480),
                 b'junk', b''):
        size = images.header_size(data)
        expected = size[0] * size[1] if size else 0
        assert function(tf2.constant(data)).numpy() == expected, data[:8]


# --------------------------------- item 11: fetch, read-only, full, SIGINT

@pytest.fixture
def read_only(monkeypatch):
    """Makes folders read-only: chmod 555, and (root ignores modes) every
    create under them raises EROFS as a read-only mount does."""
    folders = []
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path):
        path = os.path.abspath(os.fspath(path))
        return any(path == f or path.startswith(f + os.sep) for f in folders)

    def guarded_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, 'open', guarded_open)
    monkeypatch.setattr(os, 'mkdir', guarded_mkdir)

    def make(folder):
        folders.append(os.path.abspath(str(folder)))
        os.chmod(folder, 0o555)
    yield make
    for folder in folders:
        os.chmod(folder, 0o755)


def test_fetch_into_a_read_only_cache_uses_the_temporary_cache(
        tmp_path, tiny_checkpoint, read_only, monkeypatch, caplog):  # noqa: F811
    cache = tmp_path / 'cache'
    cache.mkdir()
    monkeypatch.setattr('tempfile.tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    read_only(cache)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        item = helpers.entry_for(server.url('/a.tgz'))
        with caplog.at_level('WARNING', logger='slimnets'):
            prefix = checkpoints.fetch(item, cache_dir=str(cache),
                                       progress=False)
        fallback = catalogue.fallback_cache_dir()
        assert fallback.startswith(str(tmp_path / 'tmp'))
        assert prefix.startswith(os.path.join(fallback, item.name) + os.sep)
        checkpoints.validate_readable(prefix)
        assert os.listdir(cache) == []
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and 'cannot be written' in warnings[0] and \
            fallback in warnings[0] and 'SLIMNETS_CACHE' in warnings[0]
        # The next fetch finds the copy there, without the server.
        server.routes.clear()
        assert checkpoints.fetch(item, cache_dir=str(cache),
                                 progress=False) == prefix


def test_fetch_with_no_writable_cache_at_all_is_one_error(
        tmp_path, tiny_checkpoint, read_only, monkeypatch):  # noqa: F811
    cache, temporary = tmp_path / 'cache', tmp_path / 'tmp'
    cache.mkdir()
    temporary.mkdir()
    monkeypatch.setattr('tempfile.tempdir', str(temporary))
    read_only(cache)
    read_only(temporary)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        with pytest.raises(OutputError, match='Neither the cache .* can be '
                           'written; set \\$SLIMNETS_CACHE'):
            checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                              cache_dir=str(cache), progress=False)
        assert server.requests == []


def test_cli_fetch_into_a_read_only_cache(tmp_path, tiny_checkpoint,  # noqa: F811
                                          read_only, monkeypatch, cli):
    cache = tmp_path / 'cache'
    cache.mkdir()
    (tmp_path / 'tmp').mkdir()
    monkeypatch.setattr('tempfile.tempdir', str(tmp_path / 'tmp'))
    read_only(cache)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        result = cli('fetch', 'mobilenet_v1_0.25_128', '--url',
                     server.url('/a.tgz'), '--cache-dir', cache,
                     '--no-progress')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(tmp_path / 'tmp'))
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if 'cannot be written' in line] == [
        line for line in lines if str(cache) in line]


class _FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails with ENOSPC."""

    def __init__(self, path, room):
        self.handle = open(path, 'wb')  # pylint: disable=consider-using-with
        self.room = room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            self.handle.write(bytes(data[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def close(self):
        self.handle.close()
        super().close()


def test_fetch_onto_a_full_disk_is_one_line_and_leaves_nothing(
        tmp_path, tiny_checkpoint, monkeypatch, cli, one_line_error):  # noqa: F811
    archive = helpers.archive_of(tiny_checkpoint)
    monkeypatch.setattr(download, 'open', lambda path, mode: _FullDisk(
        path, len(archive) // 3), raising=False)
    with helpers.Server({'/a.tgz': archive}) as server:
        result = cli('fetch', 'mobilenet_v1_0.25_128', '--url',
                     server.url('/a.tgz'), '--cache-dir', tmp_path,
                     '--no-progress')
        assert server.requests == ['/a.tgz']   # not retried as a bad source
    one_line_error(result, 'Could not fetch mobilenet_v1_0.25_128 into %s'
                   % tmp_path, 'No space left on device', 'nothing was kept',
                   'Free some space')
    assert 'mirror' not in result.stderr
    assert helpers.leftovers(tmp_path) == []


def test_extraction_onto_a_full_disk_is_not_called_a_corrupt_archive(
        tmp_path, tiny_checkpoint, monkeypatch):  # noqa: F811
    real_fdopen = os.fdopen

    def full_fdopen(descriptor, mode='r', *args, **kwargs):
        handle = real_fdopen(descriptor, mode, *args, **kwargs)
        if 'w' in mode and '.data-' in os.readlink(
                '/proc/self/fd/%d' % descriptor):
            def write(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            handle.write = write
        return handle

    monkeypatch.setattr(os, 'fdopen', full_fdopen)
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        with pytest.raises(checkpoints.CheckpointError,
                           match='No space left on device; nothing was kept'
                           ) as caught:
            checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                              cache_dir=str(tmp_path), progress=False)
    assert 'corrupt' not in str(caught.value)
    assert helpers.leftovers(tmp_path) == []


def test_sigint_mid_download_leaves_no_partial_files(tmp_path, tiny_checkpoint):  # noqa: F811
    archive = helpers.archive_of(tiny_checkpoint)

    def slow(handler):
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(archive)))
        handler.end_headers()
        for start in range(0, len(archive), 256):
            handler.wfile.write(archive[start:start + 256])
            handler.wfile.flush()
            time.sleep(0.2)

    cache = tmp_path / 'cache'
    with helpers.Server({'/a.tgz': slow}) as server:
        process = subprocess.Popen(
            [sys.executable, '-m', 'slimnets', 'fetch',
             'mobilenet_v1_0.25_128', '--url', server.url('/a.tgz'),
             '--cache-dir', str(cache), '--no-progress'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            partial = []
            while time.monotonic() < deadline and not partial:
                partial = [os.path.join(cache, n, 'download')
                           for n in (os.listdir(cache) if cache.is_dir()
                                     else []) if '.partial-' in n]
                partial = [p for p in partial if os.path.isfile(p) and
                           os.path.getsize(p) > 0]
                time.sleep(0.1)
            assert partial, 'the download never started'
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1, stderr
    assert 'Traceback' not in stderr
    assert stderr.strip().splitlines()[-1] == (
        'slimnets fetch: error: interrupted (Ctrl-C); nothing half-written '
        'was kept'), stderr
    assert stdout == ''
    assert helpers.leftovers(cache) == []


# ------------------------- item 2: what is recorded beside a checkpoint

@pytest.fixture(scope='module')
def quant_128(tmp_path_factory):
    """Google's mobilenet_v1_0.25_128_quant.tflite recovered twice into one
    folder (several checkpoints may share one): the QAT checkpoint and the
    float one.  Returns (tflite path, QAT prefix, float prefix)."""
    google = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1_0.25_128_quant.tflite'))
    folder = tmp_path_factory.mktemp('recovered')
    qat, _, _ = quantized_tflite.tflite_to_qat_checkpoint(
        google, str(folder / 'qat.ckpt'))
    floats, _ = converters.tflite_to_float_checkpoint(google,
                                                str(folder / 'float.ckpt'))
    return google, qat, floats


def test_recovered_checkpoints_record_size_classes_offset_network(quant_128):
    _, qat, floats = quant_128
    for prefix in (qat, floats):
        info = model_info.read(prefix)
        assert os.path.isfile(prefix + '.slimnets.json')
        assert (info.network, info.kwargs, info.image_size, info.num_classes,
                info.label_offset) == ('mobilenet_v1', {
                    'depth_multiplier': 0.25}, 128, 1001, 1), prefix
    assert model_info.read(qat).input_stats == [128.0, 128.0]
    assert model_info.read(floats).input_stats is None


def test_every_command_defaults_to_the_recorded_size(quant_128):
    _, qat, floats = quant_128
    for prefix in (qat, floats):   # nothing in the path names 128
        spec, _ = models.model_spec(checkpoint=prefix)
        assert spec == models.ModelSpec('mobilenet_v1',
                                        {'depth_multiplier': 0.25}, 128, 1001)


def test_qat_export_without_image_size_is_the_calibration_size(
        quant_128, cli, tmp_path):
    google, qat, _ = quant_128
    output = tmp_path / 'again.tflite'
    result = cli('export', '--checkpoint', qat, '--format', 'tflite',
                 '--output', output)
    assert result.returncode == 0, result.stderr
    assert 'at 128x128' in result.stdout
    assert quantized_tflite.tflite_input_size(str(output)) == 128
    # Bit for bit as Google's on probe images (the recorded input stats).
    images = export.probe_batch(128)
    expected, _, _ = quantized_tflite.run_integer_tflite(google, images)
    actual, _, _ = quantized_tflite.run_integer_tflite(str(output), images)
    assert np.mean(np.abs(actual.astype(int) - expected.astype(int)) <= 1) \
        >= 0.99


def test_a_size_contradicting_the_calibration_is_refused_unless_forced(
        quant_128, cli, one_line_error, tmp_path):
    _, qat, _ = quant_128
    image = tmp_path / 'image.png'
    image.write_bytes(serving_export.encode_pngs(
        np.zeros([1, 16, 16, 3], np.float32))[0])
    out = tmp_path / 'out'
    out.mkdir()
    for command in (['export', '--format', 'tflite', '--output',
                     out / 'm.tflite'],
                    ['classify', str(image)],
                    ['export', '--format', 'frozen', '--output',
                     out / 'm.pb']):
        result = cli(*(command + ['--checkpoint', qat, '--image-size', 224]))
        one_line_error(result, 'quantization-aware checkpoint calibrated at '
                       '128x128', '--image-size 224 contradicts it',
                       '--force-image-size')
    assert os.listdir(out) == []
    # Its own size is no contradiction; asked for, another size is taken.
    assert models.model_spec(checkpoint=qat, image_size=128)[0].image_size \
        == 128
    assert models.model_spec(checkpoint=qat, image_size=224,
                             force_image_size=True)[0].image_size == 224


def test_float_checkpoints_run_at_any_size(quant_128, float_checkpoint,
                                           tmp_path):
    _, _, floats = quant_128
    assert models.model_spec(checkpoint=floats, image_size=224)[
        0].image_size == 224
    report = export.export(str(tmp_path / 'm.pb'), 'frozen', floats,
                           image_size=96)
    assert report.spec.image_size == 96


def test_forced_size_exports_an_integer_model_at_that_size(quant_128, cli,
                                                           tmp_path):
    _, qat, _ = quant_128
    result = cli('export', '--checkpoint', qat, '--format', 'tflite',
                 '--output', tmp_path / 'm.tflite', '--image-size', 160,
                 '--force-image-size')
    assert result.returncode == 0, result.stderr
    assert quantized_tflite.tflite_input_size(str(tmp_path / 'm.tflite')) \
        == 160


def test_frozen_graph_recovery_records_the_graph_input_size(float_checkpoint,
                                                            tmp_path):
    export.export(str(tmp_path / 'm.pb'), 'frozen', float_checkpoint,
                  image_size=96)
    prefix, _ = converters.frozen_graph_to_checkpoint(
        str(tmp_path / 'm.pb'), str(tmp_path / 'back' / 'model.ckpt'))
    info = model_info.read(prefix)
    assert (info.network, info.image_size, info.num_classes,
            info.label_offset) == ('mobilenet_v1', 96, 5, 0)


def test_keras_conversion_records_the_keras_input_size(tmp_path):
    model = keras_weights.keras_application(
        'mobilenet_v1', {'depth_multiplier': 0.25}, 96)
    prefix, _ = keras_weights.keras_to_checkpoint(model, str(
        tmp_path / 'k.ckpt'))
    info = model_info.read(prefix)
    assert (info.network, info.kwargs, info.image_size, info.num_classes,
            info.label_offset) == ('mobilenet_v1', {'depth_multiplier': 0.25},
                                   96, 1001, 1)


def test_fetch_records_the_catalogue_entry(tmp_path, tiny_checkpoint):  # noqa: F811
    with helpers.Server({'/a.tgz': helpers.archive_of(tiny_checkpoint)}) as server:
        prefix = checkpoints.fetch(helpers.entry_for(server.url('/a.tgz')),
                                   cache_dir=str(tmp_path), progress=False)
    info = model_info.read(prefix)
    assert (info.network, info.image_size, info.num_classes,
            info.label_offset) == ('mobilenet_v1', 128, 1001, 1)


def test_training_folder_model_json_is_the_same_format(tmp_path):
    spec = models.ModelSpec('mobilenet_v1', {'depth_multiplier': 0.25}, 64, 5)
    models.write_model_file(str(tmp_path), spec, label_offset=0,
                            source='slimnets train')
    info = model_info.read(str(tmp_path / 'model.ckpt-10'))
    assert info == model_info.ModelInfo('mobilenet_v1', {
        'depth_multiplier': 0.25}, 64, 5, 0, None, 'slimnets train')
    assert models.read_model_file(str(tmp_path / 'model.ckpt')) == spec


def test_model_json_of_earlier_versions_is_still_read(float_checkpoint,
                                                      tmp_path):
    for name in os.listdir(os.path.dirname(float_checkpoint)):
        if name.startswith('model.ckpt'):
            shutil.copy(os.path.join(os.path.dirname(float_checkpoint), name),
                        tmp_path)
    (tmp_path / 'model.json').write_text(json.dumps({
        'network': 'mobilenet_v1', 'kwargs': {'depth_multiplier': 0.25},
        'image_size': 80, 'num_classes': 5}))
    prefix = str(tmp_path / 'model.ckpt')
    spec, _ = models.model_spec(checkpoint=prefix)
    assert spec == models.ModelSpec('mobilenet_v1', {'depth_multiplier': 0.25},
                                    80, 5)
    # A per-checkpoint record wins over the folder's.
    models.model_info.write(prefix, models.model_info.ModelInfo(
        'mobilenet_v1', {'depth_multiplier': 0.25}, 72, 5, 0))
    assert models.model_spec(checkpoint=prefix)[0].image_size == 72


def test_a_damaged_record_is_one_error(float_checkpoint, tmp_path, cli,
                                       one_line_error):
    for name in os.listdir(os.path.dirname(float_checkpoint)):
        if name.startswith('model.ckpt'):
            shutil.copy(os.path.join(os.path.dirname(float_checkpoint), name),
                        tmp_path)
    (tmp_path / 'model.ckpt.slimnets.json').write_text('{"network": ')
    result = cli('export', '--checkpoint', tmp_path / 'model.ckpt',
                 '--format', 'frozen', '--output', tmp_path / 'm.pb')
    one_line_error(result, 'model.ckpt.slimnets.json', 'is damaged',
                   'remove it')


def test_class_names_follow_the_recorded_label_offset(tmp_path):
    prefix = str(tmp_path / 'm.ckpt')
    model_info.write(prefix, model_info.ModelInfo('mobilenet_v1', {}, 224,
                                                  1000, 0))
    assert models.class_names_for(prefix, 1000) == \
        labels.imagenet_labels()[1:]
    model_info.write(prefix, model_info.ModelInfo('mobilenet_v1', {}, 224,
                                                  1001, 1))
    assert models.class_names_for(prefix, 1001)[0] == \
        labels.imagenet_labels()[0]
    model_info.write(prefix, model_info.ModelInfo('mobilenet_v1', {}, 224,
                                                  1001, 0))  # 1001 real ones
    assert models.class_names_for(prefix, 1001) is None
