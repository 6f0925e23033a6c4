"""Issue 25, part B: the library API and inference under hostile but
realistic use.

Every public entry point of `Classifier` and `slimnets.inference.evaluation` refuses
wrong types, shapes, dtypes, value ranges and empty inputs with a
slimnets error naming the way out; `predict_images` takes preprocessed
float batches; `auto` keeps only the runtime it chose; `classify` reads
'-' from stdin, refuses --top-k above the class count, streams 10,000
files with bounded open files; a Classifier after close(), in a forked
child, and created and closed 50 times.
"""

import io
import os
import sys
import threading

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import errors
from slimnets import export
from slimnets import inference
from slimnets import nets_factory
from slimnets import optimize
from slimnets import runtimes
from slimnets import training
from slimnets.datasets import builder as dataset_build
from slimnets.images import read_image_file
from slimnets.inference import evaluation

import golden
import small_models

CAT = os.path.join(golden.DATA, 'cat.jpg')


@pytest.fixture(scope='module')
def classifier(small_checkpoint):
    with inference.Classifier(small_checkpoint, runtime='tensorflow',
                              image_size=128, progress=False) as loaded:
        yield loaded


@pytest.fixture(scope='module')
def cat_bytes():
    return read_image_file(CAT)


# ------------------------------------------------------------ 1: predict

def test_predict_refuses_a_float_array_and_names_predict_images(classifier):
    batch = np.zeros([2, 128, 128, 3], np.float32)
    with pytest.raises(errors.InputError, match='predict_images'):
        classifier.predict(batch)


@pytest.mark.parametrize('value, fragment', [
    (b'\xff\xd8 one bytes object', r'\[data\]'),
    ('cat.jpg', 'classify_files'),
    (['cat.jpg'], 'classify_files'),
    ([np.zeros([4, 4, 3], np.float32)], 'predict_images'),
    ([3], 'image 0 is int'),
    (None, 'not NoneType'),
])
def test_predict_refuses_what_is_not_a_list_of_bytes(classifier, value,
                                                     fragment):
    with pytest.raises(errors.InputError, match=fragment):
        classifier.predict(value)


def test_predict_of_nothing_is_an_empty_result(classifier):
    result = classifier.predict([])
    assert result.shape == (0, 1001) and result.dtype == np.float32


def test_predict_names_an_empty_image_and_a_names_mismatch(classifier,
                                                           cat_bytes):
    with pytest.raises(errors.InputError, match='b.jpg is empty'):
        classifier.predict([cat_bytes, b''], names=['a.jpg', 'b.jpg'])
    with pytest.raises(errors.InputError, match='1 names for 2 images'):
        classifier.predict([cat_bytes, cat_bytes], names=['a.jpg'])


def test_predict_images_gives_what_predict_gives(classifier, cat_bytes):
    preprocessed = classifier.session.run(
        classifier.images, {classifier.encoded: [cat_bytes, cat_bytes]})
    expected = classifier.predict([cat_bytes, cat_bytes])
    np.testing.assert_allclose(classifier.predict_images(preprocessed),
                               expected, atol=1e-6)
    # float64 is taken as float32
    np.testing.assert_allclose(
        classifier.predict_images(preprocessed.astype(np.float64)), expected,
        atol=1e-6)
    assert classifier.predict_images(
        np.zeros([0, 128, 128, 3], np.float32)).shape == (0, 1001)


@pytest.mark.parametrize('images, fragment', [
    (np.zeros([1, 128, 128, 3], np.uint8), 'dtype uint8.*127.5'),
    (np.zeros([128, 128, 3], np.float32), r'images\[None\]'),
    (np.zeros([1, 96, 96, 3], np.float32), r'\[1, 96, 96, 3\]'),
    (np.zeros([1, 128, 128, 1], np.float32), 'got shape'),
    (np.full([1, 128, 128, 3], np.nan, np.float32), 'NaN'),
    (np.full([1, 128, 128, 3], 255.0, np.float32), r'\[-1, 1\].*127.5'),
    (np.full([1, 128, 128, 3], -1.5, np.float32), r'\[-1.5, -1.5\]'),
    ([b'jpeg bytes'], 'use predict'),
    ('cat.jpg', 'classify_files'),
])
def test_predict_images_checks_its_batch(classifier, images, fragment):
    with pytest.raises(errors.InputError, match=fragment):
        classifier.predict_images(images)


@pytest.mark.parametrize('kwargs, fragment', [
    ({'paths': CAT}, 'not one path'),
    ({'top_k': 0}, 'top_k must be a whole number'),
    ({'top_k': 2.5}, 'top_k must be a whole number'),
    ({'top_k': 1002}, 'model has 1001 classes'),
    ({'batch_size': 0}, 'batch_size must be'),
])
def test_classify_files_checks_its_arguments(classifier, kwargs, fragment):
    arguments = dict({'paths': [CAT]}, **kwargs)
    with pytest.raises(errors.InputError, match=fragment):
        classifier.classify_files(**arguments)


def test_classify_files_takes_a_generator_and_nothing(classifier):
    assert classifier.classify_files(iter([])) == []
    top = classifier.classify_files((p for p in [CAT, CAT]), top_k=1001)
    assert len(top) == 2 and len(top[0][1]) == 1001


@pytest.mark.parametrize('kwargs, fragment', [
    ({'data': None}, 'data must be a path'),
    ({'data': ''}, 'data must be a path'),
    ({'batch_size': 1.5}, 'batch_size must be a whole number'),
    ({'batch_size': 0}, 'at least 1'),
    ({'max_images': True}, 'max_images must be a whole number'),
    ({'shard': 0}, 'give shard K and num_shards N together'),
    ({'shard': 2, 'num_shards': 2}, '0 <= K < N'),
])
def test_evaluate_checks_its_arguments_before_loading(kwargs, fragment):
    arguments = dict({'checkpoint': 'no/such/checkpoint', 'data': 'x'},
                     **kwargs)
    with pytest.raises(errors.InputError, match=fragment):
        evaluation.evaluate(**arguments)


def _classifier(**kwargs):
    return inference.Classifier(**dict({'cache_dir': '/nonexistent'}, **kwargs))


def _export(**kwargs):
    return export.export(**dict({'output': 'm.pb', 'format': 'frozen',
                                 'checkpoint': 'no/such/checkpoint'},
                                **kwargs))


def _build(**kwargs):
    return dataset_build.build(**dict({'input_dir': 'in', 'output_dir': 'out'},
                                      **kwargs))


def _train(**kwargs):
    return training.train(**dict({'train_dir': 'run', 'data': 'in'}, **kwargs))


@pytest.mark.parametrize('entry,kwargs,fragment', [
    (_classifier, {'image_size': 0}, 'image_size must be a whole number'),
    (_classifier, {'image_size': 2.5}, 'image_size must be a whole number'),
    (_classifier, {'image_size': 100000}, r'in 32\.\.2048'),
    (_classifier, {'image_size': 'abc'}, 'image_size must be'),
    (_classifier, {'checkpoint': 123}, 'checkpoint must be a path'),
    (_classifier, {'model': 7}, 'model must be a network or catalogue name'),
    (_export, {'image_size': -1}, 'image_size must be'),
    (_export, {'output': None}, 'output must be a path'),
    (_export, {'representative_data': 3}, 'representative_data must be'),
    (_build, {'input_dir': None}, 'input_dir must be a path'),
    (_build, {'output_dir': b'out'}, 'output_dir must be a path'),
    (_build, {'shards': 0}, 'shards must be a whole number'),
    (_build, {'workers': 1.5}, 'workers must be a whole number'),
    (_build, {'validation_fraction': 'half'}, 'validation fraction'),
    (_train, {'data': None}, 'data must be a path'),
    (_train, {'train_dir': 5}, 'train_dir must be a path'),
])
def test_every_entry_point_checks_its_arguments(entry, kwargs, fragment,
                                                tmp_path, monkeypatch):
    """Classifier, export, data build and train: a wrong type or range is an
    InputError naming the argument, before anything is loaded or written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.InputError, match=fragment):
        entry(**kwargs)
    assert not os.listdir(tmp_path)


def test_merge_checks_its_arguments():
    with pytest.raises(errors.InputError, match='not one result'):
        evaluation.merge({'images': 1})
    with pytest.raises(errors.InputError, match='must be a dict'):
        evaluation.merge(['result.json'])
    with pytest.raises(errors.InputError, match='nothing to merge'):
        evaluation.merge([])


# ------------------------------------------------------- 3: auto's memory

def test_auto_keeps_only_the_runtime_it_chose(tmp_path, monkeypatch):
    spec, prefix = small_models.calibrated_checkpoint(str(tmp_path))
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix)
    closed, loaded = [], []
    for name, cls in runtimes.CLASSES.items():  # pylint: disable=protected-access
        original_close, original_init = cls.close, cls.__init__

        def close(self, _original=original_close, _name=name):
            closed.append(_name)
            _original(self)

        def init(self, *args, _original=original_init, _name=name, **kw):
            loaded.append(_name)
            _original(self, *args, **kw)
        monkeypatch.setattr(cls, 'close', close)
        monkeypatch.setattr(cls, '__init__', init)
    images = small_models.smooth_images(4, spec.image_size, seed=3)
    with runtimes.load(graph_def, 'auto', cache_dir=str(tmp_path)) as auto:
        auto.run(images)
        chosen = auto.choices[4]
        assert list(auto.loaded) == [chosen]
        assert sorted(closed) == sorted(n for n in loaded if n != chosen)
        assert set(loaded) == set(runtimes.installed())
        # never more than two candidates at once: each closed before the
        # next but one is loaded
        assert len(loaded) - len(closed) == 1
    assert sorted(closed) == sorted(loaded)


# ------------------------------------------------------------ 10: --top-k

def test_cli_top_k_above_the_class_count_is_refused(cli, one_line_error,
                                                    small_checkpoint):
    result = cli('classify', '--checkpoint', small_checkpoint, '--runtime',
                 'tensorflow', '--image-size', '128', '--top-k', '100000', CAT)
    one_line_error(result, '--top-k 100000', '1001 classes', status=2)
    result = cli('classify', '--checkpoint', small_checkpoint, '--runtime',
                 'tensorflow', '--image-size', '128', '--top-k', '1001', CAT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('\n  ') == 1001


# --------------------------------------------------- 11: stdin, 10,000 files

def _stdin(monkeypatch, data):
    monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO(data)))


def test_cli_classify_reads_one_image_from_stdin(cli, small_checkpoint,
                                                 cat_bytes, monkeypatch):
    _stdin(monkeypatch, cat_bytes)
    piped = cli('classify', '--checkpoint', small_checkpoint, '--runtime',
                'tensorflow', '--image-size', '128', '-', CAT)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    first = lines.index('-')
    second = lines.index(CAT)
    assert lines[first + 1:first + 6] == lines[second + 1:second + 6]


@pytest.mark.parametrize('data, args, fragment', [
    (b'', ['-'], 'stdin is empty'),
    (b'x', ['-', '-'], 'can be given once'),
    (b'not an image', ['-'], 'cannot decode image -'),
])
def test_cli_classify_stdin_faults_are_one_line(cli, one_line_error,
                                                small_checkpoint, monkeypatch,
                                                data, args, fragment):
    _stdin(monkeypatch, data)
    result = cli('classify', '--checkpoint', small_checkpoint, '--runtime',
                 'tensorflow', '--image-size', '128', *args)
    one_line_error(result, fragment, status=1 if 'decode' in fragment else 2)


def _open_fds():
    return len(os.listdir('/proc/self/fd'))


@pytest.mark.reads_no_shared
@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='Linux only')
def test_classify_of_10000_files_streams(classifier, tmp_path):
    count = 10000
    folder = tmp_path / 'many'
    folder.mkdir()
    source = folder / 'source.jpg'
    source.write_bytes(read_image_file(CAT))
    for index in range(count):
        os.link(source, folder / ('%05d.jpg' % index))
    taken = []

    def paths():
        for index in range(count):
            taken.append(index)
            yield str(folder / ('%05d.jpg' % index))

    start = _open_fds()
    seen = peak = 0
    results = classifier.iter_classify_files(paths(), top_k=1, batch_size=64)
    for seen, (_, top) in enumerate(results, 1):
        # the generator is consumed one batch ahead at most: streamed
        assert len(taken) <= seen + 64
        if seen % 500 == 0:
            peak = max(peak, _open_fds())
        assert len(top) == 1
    assert seen == count
    assert peak - start <= 2 and _open_fds() - start <= 2


@pytest.mark.reads_no_shared
def test_cli_classify_of_10000_files(small_checkpoint, tmp_path, cli):
    """`slimnets classify` given 10,000 paths on its command line: one
    result per image, in order, rc 0 (the paths are streamed in batches)."""
    count = 10000
    folder = tmp_path / 'many'
    folder.mkdir()
    source = folder / 'source.jpg'
    source.write_bytes(read_image_file(CAT))
    paths = []
    for index in range(count):
        paths.append(str(folder / ('%05d.jpg' % index)))
        os.link(source, paths[-1])
    completed = cli('classify', *paths, '--checkpoint', small_checkpoint,
                    '--image-size', '64', '--runtime', 'tensorflow',
                    '--top-k', '1')
    assert completed.returncode == 0, completed.stderr[-2000:]
    named = [line for line in completed.stdout.splitlines()
             if line.startswith(str(folder))]
    assert named == paths


# --------------------------------------------------- 11: wrong shapes

def test_checkpoint_with_right_names_and_wrong_shapes(tmp_path, cli,
                                                      one_line_error):
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 64, 64, 3])
        nets_factory.get_network_fn('mobilenet_v1', 1001)(
            images, depth_multiplier=0.25)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.op.name: sess.run(v) for v in tf.global_variables()}
    name = 'MobilenetV1/Conv2d_3_pointwise/weights'
    assert values[name].shape == (1, 1, 32, 32)
    values[name] = np.zeros([1, 1, 16, 48], np.float32)
    with tf.Graph().as_default():
        variables = [tf.Variable(v, name=k) for k, v in values.items()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(variables).save(sess, prefix,
                                           write_meta_graph=False)
    result = cli('classify', '--checkpoint', prefix, '--runtime',
                 'tensorflow', '--image-size', '128', CAT)
    one_line_error(result, name, '[1, 1, 32, 32]', '[1, 1, 16, 48]',
                   'nothing was assigned')
    assert 'is None' not in result.stderr


# ------------------------------------------- 11: close, fork, 50 times

def test_a_closed_classifier_says_so(small_checkpoint, cat_bytes):
    closed = inference.Classifier(small_checkpoint, runtime='tensorflow',
                                  image_size=128, progress=False)
    closed.close()
    closed.close()   # twice is harmless
    for call in (lambda: closed.predict([cat_bytes]),
                 lambda: closed.predict_images(
                     np.zeros([1, 128, 128, 3], np.float32)),
                 lambda: closed.classify_files([CAT])):
        with pytest.raises(errors.ClosedError,
                           match='this Classifier is closed; create a new '
                                 'one'):
            call()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_a_classifier_in_a_forked_child_says_so(classifier, cat_bytes):
    expected = classifier.predict([cat_bytes])
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: no TensorFlow call, only the check
        try:
            try:
                classifier.predict([cat_bytes])
                message = 'no error'
            except errors.ClosedError as error:
                message = str(error)
            classifier.close()   # marks the child's copy closed only
            os.write(writer, message.encode())
        finally:
            os._exit(0)  # pylint: disable=protected-access
    try:
        os.close(writer)
        with os.fdopen(reader, 'rb') as pipe:
            message = pipe.read().decode()
    finally:
        os.waitpid(pid, 0)
    assert 'forked process' in message and 'spawn' in message, message
    # the parent's Classifier still works
    np.testing.assert_allclose(classifier.predict([cat_bytes]), expected)


def _rss_mb():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS'):
                return int(line.split()[1]) / 1024.0
    return 0.0


# Measured on the 2-core development machine (v1 0.25 at 128 px, runtime
# tensorflow): after 3 warm-up rounds, 50 more leave the same thread, task
# and descriptor counts (7, 16, 11) and RSS 7.4 MB higher; the bound is
# about 8 times that.
RSS_GROWTH_BOUND_MB = 60


@pytest.mark.reads_no_shared
@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='Linux only')
def test_created_and_closed_50_times_nothing_grows(small_checkpoint,
                                                   cat_bytes):
    def once():
        with inference.Classifier(small_checkpoint, runtime='tensorflow',
                                  image_size=128, progress=False) as made:
            made.predict([cat_bytes])

    for _ in range(3):   # TensorFlow's process-wide pools start here
        once()
    runtimes.release_memory()
    threads = threading.active_count()
    tasks = len(os.listdir('/proc/self/task'))
    fds = _open_fds()
    rss = _rss_mb()
    for _ in range(50):
        once()
    runtimes.release_memory()
    growth = _rss_mb() - rss
    print('50 Classifiers: threads %d -> %d, tasks %d -> %d, fds %d -> %d, '
          'RSS +%.1f MB' % (threads, threading.active_count(), tasks,
                            len(os.listdir('/proc/self/task')), fds,
                            _open_fds(), growth))
    assert threading.active_count() == threads
    assert len(os.listdir('/proc/self/task')) <= tasks
    assert _open_fds() <= fds
    assert growth < RSS_GROWTH_BOUND_MB
