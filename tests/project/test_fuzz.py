"""Hostile files: every reader answers a damaged file with a SlimnetsError.

Each reader is fed COPIES truncated and bit-flipped copies of a good
file that the test makes: a TFLite model (exported by slimnets from a small
MobileNet v1), a checkpoint index, the catalogue JSON, a checkpoint
archive and a slim TFRecord file of tiny PNGs (read by evaluation's
streaming tf.data reader).  A copy may still be readable (a flipped bit inside a weight is a
valid file); what must never happen is another exception, a signal (a
segmentation fault) or a hang.  The loop runs in a child process, so a
crash fails the test instead of killing pytest; the child prints one line
per copy, so a crash names the copy that caused it.
"""

import importlib.resources
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import export
from slimnets.checkpoints import published

# Per reader: half truncated, half with 1 to 4 bits flipped.  CI runs 64;
# SLIMNETS_FUZZ_COPIES=200 (or more) runs a deeper pass by hand.
COPIES = int(os.environ.get('SLIMNETS_FUZZ_COPIES', '64'))

# The child: reads (reader, good file, structure spans) and fuzzes.
_CHILD = r'''
import os, random, sys, tempfile
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
from slimnets import errors
from slimnets.checkpoints import archives, converters, reader, published
from slimnets import datasets, images, preprocessing
from slimnets.errors import InputError
import tensorflow.compat.v1 as tf

import json
jobs, copies = json.load(open(sys.argv[1])), int(sys.argv[2])
work = tempfile.mkdtemp()

def tflite(path, good_path):
    converters.tflite_to_float_checkpoint(path, os.path.join(work, 'out', 'c.ckpt'))

def index(path, good_path):
    prefix = good_path[:-len('.index')]
    target = os.path.join(work, 'ckpt')
    os.makedirs(target, exist_ok=True)
    os.replace(path, os.path.join(target, 'model.ckpt.index'))
    data = os.path.join(target, 'model.ckpt.data-00000-of-00001')
    if not os.path.exists(data):
        os.symlink(prefix + '.data-00000-of-00001', data)
    reader.validate_readable(os.path.join(target, 'model.ckpt'))

def catalogue(path, good_path):
    published.parse_catalogue(open(path, 'rb').read(), path)

def archive(path, good_path):
    out = tempfile.mkdtemp(dir=work)
    archives.extract_checkpoint_files(path, out, max_bytes=1 << 22)

def _decode_check(encoded, names):
    # What Classifier.predict does before the network: the header check,
    # then a decode; a bad image is an InputError naming it.
    with tf.Graph().as_default():
        data = tf.placeholder(tf.string, [])
        image = preprocessing.decode_and_preprocess(data, 32)
        with tf.Session() as sess:
            for name, value in zip(names, encoded):
                images.check_image(value, name)
                try:
                    preprocessing.run_decoding(sess, image, {data: value})
                except tf.errors.InvalidArgumentError:
                    raise InputError('cannot decode image %s' % name) \
                        from None

def records(path, good_path):
    # As slimnets.inference.evaluation.evaluate drives it, without a network.
    source = datasets.evaluation_source(path, 1001)
    if not source.count():
        raise InputError('no images found in %s' % path)
    with tf.Graph().as_default():
        batches = datasets.evaluation_dataset(source, 32, 2)
        try:
            for _ in datasets.iterate(batches):
                pass
        except tf.errors.OpError as error:
            raise datasets.explain_failure(source, error, _decode_check,
                                           2) from None

def example(path, good_path):
    # The damaged bytes are one record's payload, framed with good CRCs:
    # the damage reaches the Example parser and the PNG decoder.
    framed = path + '.tfrecord'
    with tf.io.TFRecordWriter(framed) as writer:
        writer.write(open(path, 'rb').read())
    records(framed, good_path)

readers = {'tflite': tflite, 'index': index, 'catalogue': catalogue,
           'archive': archive, 'records': records, 'example': example}
for reader_name, good_path, spans in jobs:
    good = open(good_path, 'rb').read()
    read = readers[reader_name]
    rng = random.Random(reader_name)
    for number in range(copies):
        if number % 2 == 0:
            data = good[:rng.randrange(len(good))] if number > 16 else \
                good[:number]
        else:
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                if spans and rng.random() < 0.75:  # uniform over the spans
                    offset = rng.randrange(sum(e - s for s, e in spans))
                    for start, end in spans:
                        if offset < end - start:
                            position = start + offset
                            break
                        offset -= end - start
                else:
                    position = rng.randrange(len(data))
                data[position] ^= 1 << rng.randrange(8)
        path = os.path.join(work, 'copy')
        with open(path, 'wb') as handle:
            handle.write(bytes(data))
        print('start %s %d' % (reader_name, number), flush=True)
        try:
            read(path, good_path)
            outcome = 'read'
        except errors.SlimnetsError as error:
            outcome = 'refused ' + str(error).replace('\n', ' ')[:300]
        except Exception as error:
            outcome = 'OTHER %s: %s' % (type(error).__name__,
                                        str(error).splitlines()[0][:200]
                                        if str(error) else '')
        print('done %s %d %s' % (reader_name, number, outcome), flush=True)
'''


def _fuzz(jobs, folder):
    """Feeds COPIES damaged copies of each job's file to its reader.

    Args:
      jobs: [(reader, good file, [(start, end)] byte spans to flip in)].

    Returns:
      {reader: [outcome line per copy]}; asserts the child lived.
    """
    spec = os.path.join(folder, 'jobs.json')
    with open(spec, 'w') as handle:
        json.dump(jobs, handle)
    process = subprocess.Popen([sys.executable, '-c', _CHILD, spec,
                                str(COPIES)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = out.splitlines()
    started = [line for line in lines if line.startswith('start ')]
    assert process.returncode == 0, (
        'a reader died with status %d at %s:\n%s' % (
            process.returncode, started[-1:], err[-3000:]))
    outcomes = {}
    for line in lines:
        if line.startswith('done '):
            _, reader, _, outcome = line.split(' ', 3)
            outcomes.setdefault(reader, []).append(outcome)
    return outcomes


def _counts(outcomes, reader):
    found = outcomes[reader]
    assert len(found) == COPIES
    other = [o for o in found if o.startswith('OTHER')]
    assert not other, other[:5]
    counts = {'read': found.count('read'),
              'refused': sum(o.startswith('refused') for o in found)}
    print('%s fuzz: %d copies, %s' % (reader, COPIES, counts))
    return counts


def _structure_spans(content):
    """Byte ranges of a TFLite file outside its constant data buffers (the
    FlatBuffer tables that a flipped bit can make dangerous)."""
    from slimnets.checkpoints import tflite_verify  # pylint: disable=import-outside-toplevel
    buffer = tflite_verify._Buffer(content)  # pylint: disable=protected-access
    model = tflite_verify._Table(  # pylint: disable=protected-access
        buffer, buffer.unpack('I', 0), 'model')
    data = sorted(t.vector(0, 1, 'data') for t in model.tables(4, 'buffer')
                  if t.vector(0, 1, 'data'))
    spans, position = [], 0
    for start, length in data:
        if start - 4 > position:
            spans.append((position, start - 4))
        position = max(position, start + length)
    spans.append((position, len(content)))
    return [s for s in spans if s[1] > s[0]]


def _write_records(path):
    """A slim TFRecord file of four 6x5 PNGs (labels 1 to 4); each record
    is about 200 bytes, most of them PNG."""
    rng = np.random.RandomState(0)
    with tf.Graph().as_default(), tf.Session() as sess:
        pixels = tf.placeholder(tf.uint8, [6, 5, 3])
        png = tf.io.encode_png(pixels)
        with tf.io.TFRecordWriter(path) as writer:
            for label in range(1, 5):
                encoded = sess.run(png, {pixels: rng.randint(
                    0, 256, (6, 5, 3)).astype(np.uint8)})
                writer.write(tf.train.Example(features=tf.train.Features(
                    feature={
                        'image/encoded': tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[encoded])),
                        'image/format': tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[b'png'])),
                        'image/class/label': tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[label])),
                    })).SerializeToString())


@pytest.fixture(scope='module')
def fuzzed(tmp_path_factory, small_checkpoint):
    """Runs every reader's fuzz loop in one child process (one TensorFlow
    start-up); {reader: outcomes}."""
    folder = tmp_path_factory.mktemp('fuzz')
    tflite = str(folder / 'model.tflite')
    export.export(tflite, 'tflite', small_checkpoint,
                  model='mobilenet_v1_025', image_size=128)
    with open(tflite, 'rb') as handle:
        spans = _structure_spans(handle.read())
    catalogue = folder / 'catalogue.json'
    catalogue.write_bytes(importlib.resources.files('slimnets').joinpath(
        'data', 'catalogue.json').read_bytes())
    published.parse_catalogue(catalogue.read_bytes())  # the good one reads
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as archive:
        source = os.path.dirname(small_checkpoint)
        for name in sorted(os.listdir(source)):
            archive.add(os.path.join(source, name), 'm/' + name)
    archive_path = folder / 'a.tgz'
    archive_path.write_bytes(buffer.getvalue())
    records = str(folder / 'images.tfrecord')
    _write_records(records)
    example = folder / 'example.pb'
    example.write_bytes(next(iter(tf.data.TFRecordDataset(records))).numpy())
    return _fuzz([('records', records, []),
                  ('example', str(example), []),
                  ('catalogue', str(catalogue), []),
                  ('archive', str(archive_path), []),
                  ('index', small_checkpoint + '.index', []),
                  ('tflite', tflite, spans)], str(folder))


def test_tflite_reader_never_crashes(fuzzed):
    counts = _counts(fuzzed, 'tflite')
    # slimnets' own exports fold the layers under op names, which the reader
    # refuses after parsing ("cannot tell which slim layer"): so every copy
    # the verifier passes has been through the TFLite interpreter.
    parsed = [o for o in fuzzed['tflite'] if 'which slim layer' in o]
    print('tflite: %d copies passed the verifier and were parsed'
          % len(parsed))
    assert counts['refused'] == COPIES and len(parsed) >= COPIES // 10


def test_checkpoint_index_reader_never_crashes(fuzzed):
    counts = _counts(fuzzed, 'index')
    assert counts['refused'] >= COPIES // 2  # every truncation at least


def test_catalogue_reader_never_crashes(fuzzed):
    counts = _counts(fuzzed, 'catalogue')
    assert counts['refused'] >= COPIES // 2  # every truncation at least


def test_archive_reader_never_crashes(fuzzed):
    counts = _counts(fuzzed, 'archive')
    # A gzip stream cut inside tar's trailing padding still reads.
    assert counts['refused'] >= COPIES // 4


@pytest.mark.parametrize('reader', ['records', 'example'])
def test_tfrecord_reader_never_crashes(fuzzed, reader):
    """'records': the file damaged (every damage breaks a CRC);
    'example': one record's payload damaged inside good framing."""
    counts = _counts(fuzzed, reader)
    assert counts['refused'] >= COPIES // 2  # every truncation at least
    # Each refusal names the file, and a TensorFlow node is not the reason.
    for outcome in fuzzed[reader]:
        assert outcome == 'read' or ('copy' in outcome and
                                     'Node:' not in outcome), outcome
