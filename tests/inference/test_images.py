"""Image files: sizes read from headers, huge images refused before decoding,
classification streamed in batches."""

import struct
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import images
from slimnets.errors import InputError


def _encoded(fmt, width, height):
    pixels = np.random.RandomState(0).randint(0, 255, (height, width, 3),
                                              np.uint8)
    if fmt == 'png':
        return tf2.io.encode_png(pixels).numpy()
    if fmt == 'jpeg':
        return tf2.io.encode_jpeg(pixels).numpy()
    if fmt == 'bmp':
        row = (width * 3 + 3) // 4 * 4
        header = struct.pack('<2sIHHI', b'BM', 54 + row * height, 0, 0, 54)
        info = struct.pack('<IiiHHIIiiII', 40, width, -height, 1, 24, 0,
                           row * height, 0, 0, 0, 0)
        return header + info + b'\0' * (row * height)
    if fmt == 'gif':
        return b'GIF89a' + struct.pack('<HH', width, height) + b'\0' * 8
    raise ValueError(fmt)


@pytest.mark.parametrize('fmt', ['png', 'jpeg', 'bmp', 'gif'])
def test_header_size(fmt):
    assert images.header_size(_encoded(fmt, 37, 21)) == (37, 21)


def test_unknown_bytes_have_no_header_size():
    assert images.header_size(b'not an image') is None
    assert images.header_size(b'\xff\xd8\xff') is None


def _huge_png(width, height):
    """A valid PNG header for width x height pixels, tiny on disk."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack(
            '>I', zlib.crc32(kind + data) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' +
            chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(b'\0' * 1024)) + chunk(b'IEND', b''))


def test_a_huge_image_is_refused_from_its_header():
    started = time.time()
    with pytest.raises(InputError, match='20000x20000 pixels'):
        images.check_image(_huge_png(20000, 20000), 'huge.png')
    assert time.time() - started < 1.0
    assert images.check_image(_encoded('png', 8, 8), 'small.png')


def test_the_cli_refuses_a_huge_png_in_one_line(cli, one_line_error, tmp_path,
                                                pretrained_dir):
    path = tmp_path / 'huge.png'
    path.write_bytes(_huge_png(20000, 20000))
    completed = cli('classify', str(path), '--checkpoint',
                    pretrained_dir + '/mobilenet_v1/0.25_128/model.ckpt')
    one_line_error(completed, 'huge.png is 20000x20000 pixels',
                   '--max-pixels')


def test_classify_streams_in_batches(pretrained_dir, monkeypatch):
    """Every image is read once, in batches of at most batch_size."""
    from slimnets.inference import classifier as classifier_lib
    reads = []
    original = classifier_lib.read_image_file

    def counting(path):
        reads.append(path)
        return original(path)

    monkeypatch.setattr(classifier_lib, 'read_image_file', counting)
    calls = []
    model = classifier_lib.Classifier(
        pretrained_dir + '/mobilenet_v1/0.25_128/model.ckpt')
    try:
        predict = model.predict
        model.predict = lambda data, names=None: (
            calls.append(len(data)) or predict(data, names))
        paths = [pretrained_dir + '/cat.bmp'] * 5
        results = list(model.iter_classify_files(paths, top_k=1, batch_size=2))
    finally:
        model.close()
    assert calls == [2, 2, 1] and len(reads) == 5
    assert [top[0][0] for _, top in results] == [283] * 5
