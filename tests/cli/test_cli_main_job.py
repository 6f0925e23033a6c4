"""The main job end to end: `slimnets classify / eval / export / inspect /
list / fetch` (in-process; exports load in a fresh process), against the
pretrained fixtures."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import helpers
import reference
from conftest import run_cli

PRETRAINED = reference.PRETRAINED
IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')

# ../shared/README.md, "Expected predictions with Inception eval
# preprocessing": top-3 (label, probability) per checkpoint and image.
EXPECTED_TOP3 = {
    'mobilenet_v1/0.25_128': [
        [(283, .44), (286, .33), (282, .14)],
        [(401, .18), (668, .14), (458, .10)],
        [(20, .61), (17, .14), (132, .05)]],
    'mobilenet_v1/0.75_192': [
        [(286, .46), (282, .35), (283, .17)],
        [(653, .36), (668, .21), (401, .13)],
        [(20, .94), (17, .04), (18, .01)]],
    'mobilenet_v2/1.0_224': [
        [(286, .78), (282, .10), (283, .09)],
        [(653, .42), (458, .24), (835, .13)],
        [(20, .99)]],
    'mobilenet_v3_small/1.0_224': [
        [(286, .40), (282, .22), (283, .16)],
        [(653, .34), (458, .20), (982, .02)],
        [(20, .82), (21, .02), (19, .01)]],
}






def image_paths():
    return [reference.require(os.path.join(PRETRAINED, n)) for n in IMAGES]


def checkpoint(name):
    return reference.require(os.path.join(PRETRAINED, name, 'model.ckpt.index')
                             )[:-len('.index')]


@pytest.mark.parametrize('name', sorted(EXPECTED_TOP3))
def test_classify_reproduces_the_published_table(name, cli):
    completed = cli('classify', *image_paths(), '--checkpoint',
                         checkpoint(name), '--top-k', '3')
    assert completed.returncode == 0, completed.stderr[-2000:]
    blocks = re.split(r'^(\S+\.bmp)$', completed.stdout, flags=re.M)[1:]
    results = dict(zip(blocks[0::2], blocks[1::2]))
    for image, expected in zip(image_paths(), EXPECTED_TOP3[name]):
        rows = [line.split() for line in results[image].strip().splitlines()]
        got = [(int(r[0]), float(r[-1])) for r in rows]
        assert [label for label, _ in got[:len(expected)]] == [
            label for label, _ in expected], (image, got)
        for (_, probability), (_, wanted) in zip(got, expected):
            assert abs(probability - wanted) < 0.02, (image, got)


@pytest.fixture(scope='module')
def labelled_folder(tmp_path_factory):
    """cat under tiger cat (its top-1), bird under bulbul (its top-2),
    grace_hopper under tench (not in its top-5), for v1 0.25_128."""
    root = tmp_path_factory.mktemp('eval')
    for folder, image in (('n02123159', 'cat.bmp'), ('bulbul', 'bird.bmp'),
                          ('tench', 'grace_hopper.bmp')):
        os.makedirs(root / folder)
        shutil.copy(reference.require(os.path.join(PRETRAINED, image)),
                    root / folder / image)
    return root


def test_eval_on_a_class_folder(labelled_folder, tmp_path, cli):
    output = tmp_path / 'result.json'
    completed = cli('eval', '--checkpoint',
                         checkpoint('mobilenet_v1/0.25_128'), '--data',
                         str(labelled_folder), '--batch-size', '2', '--json',
                         str(output))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert re.search(r'^top-1\s+0\.3333$', completed.stdout, re.M)
    assert re.search(r'^top-5\s+0\.6667$', completed.stdout, re.M)
    result = json.loads(output.read_text())
    assert result['images'] == 3
    assert result['top1'] == pytest.approx(1 / 3)
    assert result['top5'] == pytest.approx(2 / 3)


def test_eval_on_tfrecords_and_max_images(tmp_path, cli):
    path = str(tmp_path / 'validation-00000-of-00001')
    with tf.io.TFRecordWriter(path) as writer:
        for image, label in (('cat.bmp', 283), ('bird.bmp', 17),
                             ('grace_hopper.bmp', 1)):
            with open(reference.require(os.path.join(PRETRAINED, image)),
                      'rb') as handle:
                encoded = handle.read()
            example = tf.train.Example(features=tf.train.Features(feature={
                'image/encoded': tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[encoded])),
                'image/class/label': tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label]))}))
            writer.write(example.SerializeToString())
    completed = cli('eval', '--checkpoint',
                         checkpoint('mobilenet_v1/0.25_128'), '--data',
                         str(tmp_path), '--max-images', '2', '--no-progress')
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert re.search(r'^images\s+2$', completed.stdout, re.M)
    assert re.search(r'^top-1\s+0\.5000$', completed.stdout, re.M)
    assert re.search(r'^top-5\s+1\.0000$', completed.stdout, re.M)


_LOAD_AND_RUN = textwrap.dedent('''
    import sys, json, numpy as np
    jobs, images = json.load(open(sys.argv[1])), np.load(sys.argv[2])

    def run(fmt, path):
        if fmt == 'frozen':
            import tensorflow.compat.v1 as tf
            graph_def = tf.GraphDef()
            graph_def.ParseFromString(open(path, 'rb').read())
            with tf.Graph().as_default() as graph:
                tf.import_graph_def(graph_def, name='')
                with tf.Session() as sess:
                    return sess.run('probabilities:0', {'input:0': images})
        import tensorflow as tf
        if fmt == 'saved_model':
            function = tf.saved_model.load(path).signatures['serving_default']
            return function(images=tf.constant(images))['probabilities'].numpy()
        interpreter = tf.lite.Interpreter(model_path=path)
        inp = interpreter.get_input_details()[0]
        output = [d for d in interpreter.get_output_details()
                  if d['name'].startswith('probabilities')][0]
        interpreter.resize_tensor_input(inp['index'], [1] + list(images.shape[1:]))
        interpreter.allocate_tensors()
        rows = []
        for image in images:
            interpreter.set_tensor(inp['index'], image[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(output['index'])[0])
        return np.stack(rows)

    for fmt, path, result in jobs:
        np.save(result, run(fmt, path))
''')


@pytest.fixture(scope='module')
def fixture_inputs(tmp_path_factory):
    """The three images, eval-preprocessed at 128, and the source graph's
    probabilities for them (v1 0.25_128)."""
    from slimnets import inference
    with inference.Classifier(checkpoint('mobilenet_v1/0.25_128')) as model:
        data = [inference.read_image_file(p) for p in image_paths()]
        probabilities = model.predict(data)
        images = model.session.run(model.images, {model.encoded: data})
    path = tmp_path_factory.mktemp('probe') / 'images.npy'
    np.save(path, images)
    return str(path), probabilities


EXPORTS = [
    ('frozen', None, 1e-5),
    ('saved_model', None, 1e-5),
    ('tflite', None, 1e-4),
    ('tflite', 'float16', None),
    ('tflite', 'dynamic', None),
    ('tflite', 'int8', None),
]


@pytest.fixture(scope='module')
def exported(fixture_inputs, tmp_path_factory):
    """Every EXPORTS entry written by `slimnets export` (in this process),
    then all of them loaded and run by one fresh process that imports no
    slimnets: {(format, quantization): (export's output, probabilities or
    None)}."""
    images_path, _ = fixture_inputs
    folder = tmp_path_factory.mktemp('exports')
    results, jobs = {}, []
    for number, (fmt, quantization, _) in enumerate(EXPORTS):
        output = str(folder / ('%d_%s' % (number, 'model.pb' if fmt == 'frozen'
                                          else 'model.tflite' if fmt == 'tflite'
                                          else 'saved_model')))
        args = ['export', '--checkpoint', checkpoint('mobilenet_v1/0.25_128'),
                '--format', fmt, '--output', output]
        if quantization:
            args += ['--quantization', quantization]
        if quantization == 'int8':
            args += ['--representative-data', PRETRAINED]
        completed = run_cli(*args)
        result_path = str(folder / ('%d.npy' % number))
        results[fmt, quantization] = (completed, result_path)
        if completed.returncode == 0:
            jobs.append((fmt, output, result_path))
    spec = str(folder / 'jobs.json')
    with open(spec, 'w') as handle:
        json.dump(jobs, handle)
    ran = subprocess.run([sys.executable, '-c', _LOAD_AND_RUN, spec,
                          images_path], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return {key: (completed, np.load(path) if os.path.exists(path) else None)
            for key, (completed, path) in results.items()}


@pytest.mark.parametrize('fmt,quantization,tolerance', EXPORTS)
def test_export_loads_in_a_fresh_process(fmt, quantization, tolerance,
                                         fixture_inputs, exported):
    _, expected = fixture_inputs
    completed, actual = exported[fmt, quantization]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert 'self-check on' in completed.stdout
    assert 'batch norms folded: 27' in completed.stdout
    if tolerance:
        assert np.abs(actual - expected).max() < tolerance
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


def test_export_rejects_bad_options(tmp_path, cli, one_line_error):
    completed = cli('export', '--checkpoint',
                         checkpoint('mobilenet_v1/0.25_128'), '--format',
                         'frozen', '--output', str(tmp_path / 'x.pb'),
                         '--quantization', 'int8')
    one_line_error(completed, 'tflite only')
    completed = cli('export', '--checkpoint',
                         checkpoint('mobilenet_v1/0.25_128'), '--format',
                         'tflite', '--output', str(tmp_path / 'x.tflite'),
                         '--quantization', 'int8')
    one_line_error(completed, '--representative-data')


def test_inspect_identifies_and_diffs(cli):
    completed = cli('inspect', checkpoint('mobilenet_v2/1.0_224'),
                         '--model', 'mobilenet_v2_140')
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert 'mobilenet_v2 (V2_DEF), scope MobilenetV2, depth multiplier 1.0' in out
    assert 'catalogue:  mobilenet_v2_1.0_224' in out
    assert re.search(r'matched \d+, missing 0, mis-shaped \d+', out)
    assert 'depth multiplier: the checkpoint is mobilenet_v2 at ' \
        'depth_multiplier=1.0, the graph at 1.4' in out


def test_list_shows_the_catalogue(cli):
    completed = cli('list')
    assert completed.returncode == 0
    rows = [row for row in completed.stdout.splitlines()[1:] if row.strip()]
    assert len(rows) == 87
    row = [r for r in rows if r.startswith('mobilenet_v1_1.0_224 ')][0].split()
    assert row[1:9] == ['v1', '1.0', '224', 'float', '569', '4.24', '70.9', '89.9']


def test_fetch_then_classify_by_catalogue_name(tmp_path, cli):
    files = {}
    source = os.path.join(PRETRAINED, 'mobilenet_v1', '0.25_128')
    for name in os.listdir(reference.require(source)):
        with open(os.path.join(source, name), 'rb') as handle:
            files['mobilenet_v1_0.25_128/' + name.replace(
                'model.ckpt', 'mobilenet_v1_0.25_128.ckpt')] = handle.read()
    cache = tmp_path / 'cache'
    with helpers.Server({'/m.tgz': helpers.make_tar(files)}) as server:
        completed = cli('fetch', 'mobilenet_v1_0.25_128', '--url',
                             server.url('/m.tgz'), '--cache-dir', str(cache),
                             '--no-progress')
    assert completed.returncode == 0, completed.stderr[-2000:]
    prefix = completed.stdout.strip().splitlines()[-1]
    assert prefix == str(cache / 'mobilenet_v1_0.25_128' /
                         'mobilenet_v1_0.25_128' /
                         'mobilenet_v1_0.25_128.ckpt')
    listed = cli('list', '--family', 'v1', '--cache-dir', str(cache))
    row = [r for r in listed.stdout.splitlines()
           if r.startswith('mobilenet_v1_0.25_128 ')][0]
    assert row.split()[-1] == 'yes'
    # The catalogue name now resolves from the cache, at the catalogue's size.
    classified = cli('classify', image_paths()[0], '--checkpoint',
                          'mobilenet_v1_0.25_128', '--cache-dir', str(cache),
                          '--top-k', '1')
    assert classified.returncode == 0, classified.stderr[-2000:]
    assert 'at 128x128' in classified.stdout
    assert re.search(r'^\s+283\s+tiger cat\s+0\.4', classified.stdout, re.M)


def test_fetch_offline_is_a_one_line_error(tmp_path, cli, one_line_error):
    completed = cli('fetch', 'mobilenet_v1_0.25_128', '--url',
                         'http://127.0.0.1:9/none.tgz', '--cache-dir',
                         str(tmp_path), '--no-progress')
    one_line_error(completed, 'Could not download',
                          'http://127.0.0.1:9/none.tgz')


class TestBadInput(object):

    def test_missing_image(self, cli, one_line_error):
        completed = cli('classify', '/no/such/image.jpg', '--checkpoint',
                             checkpoint('mobilenet_v1/0.25_128'))
        one_line_error(completed, 'image not found: /no/such/image.jpg')

    def test_unreadable_image(self, tmp_path, cli, one_line_error):
        bad = tmp_path / 'bad.jpg'
        bad.write_bytes(b'not an image')
        completed = cli('classify', str(bad), '--checkpoint',
                             checkpoint('mobilenet_v1/0.25_128'))
        one_line_error(completed, 'cannot decode image %s' % bad)

    def test_unknown_model(self, cli, one_line_error):
        completed = cli('classify', image_paths()[0], '--checkpoint',
                             checkpoint('mobilenet_v1/0.25_128'), '--model',
                             'resnet_50')
        one_line_error(completed, "unknown model 'resnet_50'")

    def test_checkpoint_of_another_network(self, cli, one_line_error):
        completed = cli('classify', image_paths()[0], '--checkpoint',
                             checkpoint('mobilenet_v1/0.25_128'), '--model',
                             'mobilenet_v3_small')
        one_line_error(completed, 'holds mobilenet_v1',
                              'not mobilenet_v3_small')

    def test_not_a_checkpoint(self, cli, one_line_error):
        completed = cli('inspect', reference.require(
            os.path.join(PRETRAINED, 'cat.bmp')))
        one_line_error(completed, 'is not a TensorFlow checkpoint')
