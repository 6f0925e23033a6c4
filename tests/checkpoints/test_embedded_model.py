"""The embedded default model: shipped in the package, offline, checked.

`slimnets/data/embedded/mobilenet_v2_1.0_224_quant.tflite` is Google's
file; `slimnets.checkpoints.embedded` turns it into a float slim checkpoint
in the cache on first use.  These tests need no ../shared, except the two
that compare with Google's recovered checkpoint and the shared images.

Agreement with Google's uint8 file: the float checkpoint has the file's
weights exactly, but computes every activation in float where the file
rounds each one to 8 bits; measured on the three shared images and
tests/data/cat.jpg the probabilities differ by at most 0.041 (10.5 steps of
the file's 1/256 output grid, on cat.jpg; 0.0072, 0.0245 and 0.0019 on
cat.bmp, grace_hopper.bmp and bird.bmp), so the limit is 0.05.  Top-5 is compared up
to the file's ties: its uint8 probabilities are often equal in the tail (0
or 1 step), so no class outside our top-5 may have a strictly larger uint8
probability than one inside it, and top-1 must be the same class.
"""

import hashlib
import os
import shutil
import socket

import numpy as np
import pytest

from slimnets.checkpoints import download
from slimnets.checkpoints import embedded
from slimnets.errors import CheckpointError

import golden
import reference

CAT = os.path.join(golden.DATA, 'cat.jpg')
SHARED_IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')
MAX_PROBABILITY_DIFFERENCE = 0.05


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp('embedded-cache'))


@pytest.fixture(scope='module')
def prefix(cache):
    return embedded.checkpoint(cache)


@pytest.fixture(scope='module')
def classifier(prefix, cache):
    from slimnets.inference import Classifier
    with Classifier(cache_dir=cache, runtime='tensorflow') as model:
        yield model


def _uint8_probabilities(images):
    """Google's file run on float images in [-1, 1] [N, 224, 224, 3]:
    its dequantized probabilities [N, 1001]."""
    from slimnets import runtimes
    with open(embedded.model_file(), 'rb') as handle:
        interpreter = runtimes.tflite_interpreter(handle.read())
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    scale, zero = source['quantization']
    out_scale, out_zero = target['quantization']
    rows = []
    for image in images:
        codes = np.clip(np.round(image / scale + zero), 0, 255)
        interpreter.set_tensor(source['index'], codes[None].astype(np.uint8))
        interpreter.invoke()
        rows.append((interpreter.get_tensor(target['index'])[0].astype(
            np.float64) - out_zero) * out_scale)
    return np.array(rows)


def _assert_agrees_with_the_file(classifier, encoded):
    images = classifier.session.run(classifier.images,
                                    {classifier.encoded: encoded})
    ours = classifier.runtime.run(images)
    google = _uint8_probabilities(images)
    assert np.abs(ours - google).max() < MAX_PROBABILITY_DIFFERENCE
    for row, quantized in zip(ours, google):
        assert row.argmax() == quantized.argmax()
        top5 = np.argsort(-row)[:5]
        rest = np.setdiff1d(np.arange(row.size), top5)
        assert quantized[top5].min() >= quantized[rest].max()
    return ours, google


def test_the_package_ships_googles_file_unchanged():
    path = embedded.verify_model_file()
    assert os.path.getsize(path) == embedded.SIZE
    with open(path, 'rb') as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == embedded.SHA256
    folder = os.path.dirname(path)
    assert os.path.isfile(os.path.join(folder, 'LICENSE'))
    with open(os.path.join(folder, 'README.md')) as handle:
        assert embedded.SHA256 in handle.read()


def test_the_checkpoint_is_made_once_with_a_manifest(prefix, cache):
    folder = os.path.dirname(prefix)
    assert folder == os.path.join(cache, 'embedded', embedded.MODEL)
    assert {embedded.MANIFEST, 'model.ckpt.data-00000-of-00001',
            'model.ckpt.index'} <= set(os.listdir(folder))
    stamp = os.stat(prefix + '.index').st_mtime_ns
    assert embedded.checkpoint(cache) == prefix
    assert download.resolve('embedded', cache_dir=cache) == prefix
    assert os.stat(prefix + '.index').st_mtime_ns == stamp
    assert not [n for n in os.listdir(os.path.dirname(folder))
                if n not in (embedded.MODEL, '.lock')]


def test_the_classifier_names_the_embedded_model(classifier):
    assert classifier.model_name == 'mobilenet_v2_1.0_224_quant (embedded)'
    assert classifier.spec.network == 'mobilenet_v2'
    assert classifier.spec.kwargs == {'depth_multiplier': 1.0}
    assert (classifier.spec.image_size, classifier.spec.num_classes) == (
        224, 1001)
    assert classifier.class_names[286] == 'Egyptian cat'


def test_it_agrees_with_googles_file_on_the_repository_image(classifier):
    with open(CAT, 'rb') as handle:
        ours, _ = _assert_agrees_with_the_file(classifier, [handle.read()])
    assert ours[0].argmax() == 286   # Egyptian cat


def test_it_agrees_with_googles_file_on_the_shared_images(
        classifier, pretrained_dir):
    encoded = []
    for name in SHARED_IMAGES:
        with open(os.path.join(pretrained_dir, name), 'rb') as handle:
            encoded.append(handle.read())
    ours, _ = _assert_agrees_with_the_file(classifier, encoded)
    assert list(ours.argmax(1)) == [286, 653, 20]


def test_it_equals_the_checkpoint_recovered_from_the_same_file(
        prefix, pretrained_dir):
    import tensorflow.compat.v1 as tf
    shared = os.path.join(pretrained_dir, 'mobilenet_v2', '1.0_224',
                          'model.ckpt')
    reference.require(shared + '.index')
    ours, theirs = tf.train.load_checkpoint(prefix), \
        tf.train.load_checkpoint(shared)
    names = ours.get_variable_to_shape_map()
    assert set(theirs.get_variable_to_shape_map()) - set(names) == {
        'global_step'}
    for name in names:
        np.testing.assert_array_equal(ours.get_tensor(name),
                                      theirs.get_tensor(name))


def test_classify_touches_no_network(cli, tmp_path, monkeypatch):
    """With an empty cache, the default model is made without a socket
    connecting anywhere."""
    def refuse(self, address):
        raise AssertionError('network use: %r' % (address,))

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
    completed = cli('classify', CAT, '--top-k', '1', '--runtime', 'tensorflow',
                    '--cache-dir', str(tmp_path / 'cache'))
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert 'model: mobilenet_v2_1.0_224_quant (embedded)' in lines
    assert lines[lines.index(CAT) + 1].split()[:3] == ['286', 'Egyptian',
                                                       'cat']


def _damaged_copy(tmp_path, monkeypatch):
    copy = tmp_path / 'package' / embedded.FILE_NAME
    copy.parent.mkdir()
    data = bytearray(open(embedded.model_file(), 'rb').read())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(embedded, 'model_file', lambda: str(copy))
    return str(copy)


def test_a_damaged_embedded_file_is_one_line_naming_it(
        cli, one_line_error, tmp_path, monkeypatch):
    path = _damaged_copy(tmp_path, monkeypatch)
    with pytest.raises(CheckpointError, match='damaged or replaced'):
        embedded.checkpoint(str(tmp_path / 'cache-a'))
    completed = cli('classify', CAT, '--cache-dir', str(tmp_path / 'cache-b'))
    one_line_error(completed, path, 'damaged or replaced', 'reinstall')
    assert not (tmp_path / 'cache-b' / 'embedded' / embedded.MODEL).exists()
    os.remove(path)
    with pytest.raises(CheckpointError, match='is missing'):
        embedded.verify_model_file()


def test_a_damaged_cache_copy_is_made_again(prefix, tmp_path):
    cache = str(tmp_path / 'cache')
    folder = os.path.join(cache, 'embedded', embedded.MODEL)
    shutil.copytree(os.path.dirname(prefix), folder)
    with open(os.path.join(folder, 'model.ckpt.data-00000-of-00001'),
              'r+b') as handle:
        handle.seek(1000)
        handle.write(b'\x00' * 16)
    made = embedded.checkpoint(cache)
    assert made == os.path.join(folder, 'model.ckpt')
    assert embedded._manifest_ok(folder)  # noqa: SLF001


def test_nothing_is_half_written_when_the_conversion_fails(
        tmp_path, monkeypatch):
    from slimnets.checkpoints import converters

    def fail(path, output_prefix):
        with open(output_prefix + '.index', 'wb') as handle:
            handle.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(converters, 'tflite_to_float_checkpoint', fail)
    cache = tmp_path / 'cache'
    with pytest.raises(KeyboardInterrupt):
        embedded.checkpoint(str(cache))
    assert os.listdir(str(cache / 'embedded')) == ['.lock']


def test_an_unwritable_cache_falls_back_to_a_temporary_folder(
        prefix, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    fallback = tmp_path / 'fallback'
    monkeypatch.setattr(embedded, '_fallback_root', lambda: str(fallback))
    with caplog.at_level('WARNING', logger='slimnets'):
        made = embedded.checkpoint(str(blocker / 'cache'))
    assert made == str(fallback / 'embedded' / embedded.MODEL / 'model.ckpt')
    assert embedded._manifest_ok(os.path.dirname(made))  # noqa: SLF001
    warnings = [r.getMessage() for r in caplog.records
                if r.levelname == 'WARNING']
    assert len(warnings) == 1 and 'cannot be written' in warnings[0] and \
        str(fallback) in warnings[0]
