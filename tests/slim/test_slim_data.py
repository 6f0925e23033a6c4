"""`slimnets.slim`'s data stack and the other tf_slim modules it re-exports,
on the code paths TensorFlow 2.21 broke (moved `cond`, `case`, `stack`,
`Tensor`, `IndexedSlices`, `variable_scope.variable`)."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim

from slimnets import slim
from slimnets.errors import CheckpointError
from slimnets.slim import tf_compat

import reference

REPO_ROOT = reference.REPO_ROOT

# Every public name of `import tf_slim as slim` (tf-slim 1.1.0).
TF_SLIM_MODULES = (
    'data', 'data_decoder', 'data_provider', 'dataset',
    'dataset_data_provider', 'evaluation', 'learning', 'losses', 'metrics',
    'model_analyzer', 'parallel_reader', 'prefetch_queue', 'queues',
    'summaries', 'tfexample_decoder', 'train_eval', 'training')


def test_every_public_tf_slim_name_is_reachable():
    public = {name for name in dir(tf_slim) if not name.startswith('_')}
    missing = sorted(name for name in public if not hasattr(slim, name))
    assert missing == []
    for name in TF_SLIM_MODULES:
        assert getattr(slim, name) is getattr(tf_slim, name), name
        assert name in slim.__all__
    # Every tf_slim module reachable from `tf_slim` is the same one here.
    for name in public:
        value = getattr(tf_slim, name)
        if inspect.ismodule(value) and value.__name__.startswith('tf_slim'):
            assert getattr(slim, name) is value, name


def test_moved_names_are_supplied_once():
    from tf_slim.data import tfexample_decoder  # pylint: disable=import-outside-toplevel
    stand_in = tfexample_decoder.control_flow_ops
    assert isinstance(stand_in, tf_compat.ModuleWithMovedNames)
    assert stand_in.cond is tf.cond and stand_in.case is tf.case
    # Everything else still comes from the original module.
    assert stand_in.no_op is stand_in.__dict__['_original'].no_op
    assert slim.repair_tf_slim_modules() is False
    assert tf_compat.repair_loaded_tf_slim_modules() == {}
    assert tfexample_decoder.control_flow_ops is stand_in


def example(**features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        value = np.asarray(value).ravel()
        if value.dtype.kind == 'f':
            return tf.train.Feature(float_list=tf.train.FloatList(value=value))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value))
    return tf.train.Example(features=tf.train.Features(feature={
        key.replace('__', '/'): feature(v) for key, v in features.items()
    })).SerializeToString()


def decode(serialized, keys_to_features, items_to_handlers, items=None):
    with tf.Graph().as_default():
        decoder = slim.tfexample_decoder.TFExampleDecoder(keys_to_features,
                                                          items_to_handlers)
        outputs = decoder.decode(tf.constant(serialized), items)
        with tf.Session() as sess:
            return sess.run(outputs)


IMAGE = (np.arange(4 * 5 * 3).reshape([4, 5, 3]) * 3 % 256).astype(np.uint8)
IMAGE_KEYS = {
    'image/encoded': tf.FixedLenFeature((), tf.string, default_value=''),
    'image/format': tf.FixedLenFeature((), tf.string, default_value='jpeg'),
}


@pytest.mark.parametrize('image_format', ['png', 'jpeg', 'raw', 'RAW'])
def test_image_handler_decodes_each_format(image_format):
    if image_format == 'png':
        encoded = tf.io.encode_png(IMAGE).numpy()
    elif image_format == 'jpeg':
        encoded = tf.io.encode_jpeg(IMAGE, quality=100).numpy()
    else:
        encoded = IMAGE.tobytes()
    shape = [4, 5, 3] if image_format.lower() == 'raw' else None
    [image] = decode(
        example(image__encoded=encoded, image__format=image_format.encode()),
        IMAGE_KEYS, {'image': slim.tfexample_decoder.Image(shape=shape)})
    assert image.shape == (4, 5, 3)
    if image_format == 'jpeg':
        assert np.abs(image.astype(int) - IMAGE).max() <= 8
    else:
        np.testing.assert_array_equal(image, IMAGE)


def test_repeated_images_and_dct_method():
    encoded = tf.io.encode_jpeg(IMAGE, quality=100).numpy()
    serialized = tf.train.Example(features=tf.train.Features(feature={
        'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[encoded, encoded])),
        'image/format': tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b'jpeg'])),
    })).SerializeToString()
    keys = dict(IMAGE_KEYS)
    keys['image/encoded'] = tf.FixedLenSequenceFeature((), tf.string,
                                                       allow_missing=True)
    [images] = decode(serialized, keys, {'image': slim.tfexample_decoder.Image(
        repeated=True, dct_method='INTEGER_ACCURATE')})
    assert images.shape == (2, 4, 5, 3)


def test_backup_handler_bounding_box_and_callback():
    keys = {
        'image/object/bbox/ymin': tf.VarLenFeature(tf.float32),
        'image/object/bbox/xmin': tf.VarLenFeature(tf.float32),
        'image/object/bbox/ymax': tf.VarLenFeature(tf.float32),
        'image/object/bbox/xmax': tf.VarLenFeature(tf.float32),
        'label': tf.VarLenFeature(tf.int64),
        'fallback': tf.FixedLenFeature([1], tf.int64, default_value=[-1]),
    }
    handlers = {
        'boxes': slim.tfexample_decoder.BoundingBox(
            ['ymin', 'xmin', 'ymax', 'xmax'], 'image/object/bbox/'),
        'label': slim.tfexample_decoder.BackupHandler(
            slim.tfexample_decoder.Tensor('label'),
            slim.tfexample_decoder.Tensor('fallback')),
        'count': slim.tfexample_decoder.ItemHandlerCallback(
            ['label'], lambda tensors: tf.size(tensors['label'])),
    }
    with_labels = example(image__object__bbox__ymin=[0.1, 0.2],
                          image__object__bbox__xmin=[0.3, 0.4],
                          image__object__bbox__ymax=[0.5, 0.6],
                          image__object__bbox__xmax=[0.7, 0.8],
                          label=[3, 4], fallback=[9])
    boxes, label, count = decode(with_labels, keys, handlers,
                                 ['boxes', 'label', 'count'])
    np.testing.assert_allclose(boxes, [[0.1, 0.3, 0.5, 0.7],
                                       [0.2, 0.4, 0.6, 0.8]])
    np.testing.assert_array_equal(label, [3, 4])
    assert count == 2
    without_labels = example(image__object__bbox__ymin=[0.1],
                             image__object__bbox__xmin=[0.3],
                             image__object__bbox__ymax=[0.5],
                             image__object__bbox__xmax=[0.7], fallback=[9])
    _, label, count = decode(without_labels, keys, handlers,
                             ['boxes', 'label', 'count'])
    np.testing.assert_array_equal(label, [9])
    assert count == 0


def write_numbered_records(folder, files, per_file):
    paths = []
    for index in range(files):
        path = os.path.join(folder, 'part-%d.tfrecord' % index)
        with tf.io.TFRecordWriter(path) as writer:
            for item in range(per_file):
                writer.write(example(value=[index * 100 + item]))
        paths.append(path)
    return paths


def test_parallel_and_single_pass_read_prefetch_queue_and_queue_runners(
        tmp_path):
    paths = write_numbered_records(str(tmp_path), files=3, per_file=4)
    expected = sorted(f * 100 + i for f in range(3) for i in range(4))
    keys = {'value': tf.FixedLenFeature([1], tf.int64)}
    with tf.Graph().as_default():
        _, serialized = slim.parallel_reader.single_pass_read(
            os.path.join(str(tmp_path), 'part-*.tfrecord'), tf.TFRecordReader)
        value = tf.parse_single_example(serialized, keys)['value']
        batch = tf.train.batch([value], batch_size=1, num_threads=1)
        prefetched = slim.prefetch_queue.prefetch_queue([batch], capacity=2)
        out = prefetched.dequeue()
        values = []
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            with slim.queues.QueueRunners(sess):
                try:
                    while True:
                        values.append(int(sess.run(out)[0, 0]))
                except tf.errors.OutOfRangeError:
                    pass
    assert sorted(values) == expected
    assert sorted(slim.parallel_reader.get_data_files(
        os.path.join(str(tmp_path), 'part-*'))) == sorted(paths)

    with tf.Graph().as_default():
        _, serialized = slim.parallel_reader.parallel_read(
            paths, tf.TFRecordReader, num_epochs=1, num_readers=2,
            shuffle=False)
        value = tf.parse_single_example(serialized, keys)['value']
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            values = []
            with slim.queues.QueueRunners(sess):
                try:
                    while True:
                        values.append(int(sess.run(value)[0]))
                except tf.errors.OutOfRangeError:
                    pass
    assert sorted(values) == expected


def test_metrics_on_moved_cond_and_stack_paths():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1], np.bool_)
    scores = np.array([0.1, 0.9, 0.6, 0.4, 0.3, 0.2, 0.8, 0.7], np.float32)
    with tf.Graph().as_default():
        auc, auc_update = slim.metrics.streaming_auc(
            scores, labels, num_thresholds=1000)
        precision, precision_update = slim.metrics.streaming_precision_at_thresholds(
            scores, labels, thresholds=[0.5])
        concat, concat_update = slim.metrics.streaming_concat(
            tf.constant(scores[:3]))
        counter = slim.local_variable(tf.constant(3.0), name='counter')
        local_names = [v.op.name for v in tf.local_variables()]
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            sess.run([auc_update, precision_update])
            sess.run(concat_update)
            sess.run(concat_update)
            got_auc, got_precision, got_concat, got_counter = sess.run(
                [auc, precision, concat, counter])
    positive = scores[labels]
    negative = scores[~labels]
    exact_auc = np.mean(positive[:, None] > negative[None, :])
    assert got_auc == pytest.approx(exact_auc, abs=2e-3)
    assert got_precision[0] == pytest.approx(
        np.mean(labels[scores > 0.5]), abs=1e-6)
    np.testing.assert_array_equal(got_concat, np.tile(scores[:3], 2))
    assert got_counter == 3.0
    assert 'counter' in local_names


def test_create_train_op_multiplies_and_clips_sparse_gradients():
    """Embedding lookups give IndexedSlices gradients (`ops.IndexedSlices`)."""
    with tf.Graph().as_default():
        scaled = tf.get_variable('scaled', initializer=tf.ones([4, 2]))
        clipped = tf.get_variable('clipped', initializer=tf.ones([4, 2]))
        rows = [1, 1, 3]
        scaled_op = slim.learning.create_train_op(
            tf.reduce_sum(tf.nn.embedding_lookup(scaled, rows)) * 100.0,
            tf.train.GradientDescentOptimizer(0.01), variables_to_train=[scaled],
            clip_gradient_norm=1000.0, gradient_multipliers={scaled: 0.5},
            summarize_gradients=True)
        clipped_op = slim.learning.create_train_op(
            tf.reduce_sum(tf.nn.embedding_lookup(clipped, rows)) * 100.0,
            tf.train.GradientDescentOptimizer(1.0),
            variables_to_train=[clipped], clip_gradient_norm=1.0,
            global_step=None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run([scaled_op, clipped_op])
            got_scaled, got_clipped = sess.run([scaled, clipped])
    # The gradient is 100 per looked-up row (row 1 twice): halved, not clipped
    # (norm 50 * sqrt(6) < 1000) for `scaled`; clipped to norm 1 over the
    # slices' values (100 * sqrt(6)) for `clipped`.
    expected_scaled = np.ones([4, 2], np.float32)
    expected_scaled[1] -= 0.01 * 0.5 * 200.0
    expected_scaled[3] -= 0.01 * 0.5 * 100.0
    np.testing.assert_allclose(got_scaled, expected_scaled, rtol=1e-5)
    expected_clipped = np.ones([4, 2], np.float32)
    expected_clipped[1] -= 2.0 / np.sqrt(6.0)
    expected_clipped[3] -= 1.0 / np.sqrt(6.0)
    np.testing.assert_allclose(got_clipped, expected_clipped, rtol=1e-5)


def test_repair_tf_slim_covers_plain_tf_slim_imports():
    """`import tf_slim as slim` code gets the same repairs (fresh process)."""
    script = r'''
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tf_slim.ops import arg_scope as arg_scope_lib
with tf.Graph().as_default():
    try:
        slim.tfexample_decoder.Image().tensors_to_item(
            {'image/encoded': tf.constant(b''), 'image/format': tf.constant(b'png')})
    except AttributeError as error:
        print('BROKEN', error)
from slimnets.slim import repair_tf_slim
from slimnets.slim.arg_scope_stack import ThreadLocalArgStack
assert repair_tf_slim() is True
assert repair_tf_slim() is False
assert isinstance(arg_scope_lib._ARGSTACK, ThreadLocalArgStack)
with tf.Graph().as_default():
    image = slim.tfexample_decoder.Image().tensors_to_item(
        {'image/encoded': tf.constant(b''), 'image/format': tf.constant(b'png')})
    assert image.shape.as_list() == [None, None, 3]
    slim.batch_norm(tf.zeros([2, 3, 3, 4]))
print('OK')
'''
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split()
    assert 'BROKEN' in lines and lines[-1] == 'OK'


def test_assign_from_checkpoint_restores_partitioned_variables(tmp_path):
    full = np.arange(14, dtype=np.float32).reshape([7, 2])
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        tf.get_variable('table', initializer=full)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix)
    with tf.Graph().as_default():
        table = tf.get_variable(
            'table', [7, 2], partitioner=tf.fixed_size_partitioner(3),
            initializer=tf.zeros_initializer())
        parts = slim.get_variables('table')
        assert len(parts) == 3
        assign, feed = slim.assign_from_checkpoint(prefix, parts)
        by_name, by_name_feed = slim.assign_from_checkpoint(
            prefix, {'table': parts})
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(assign, feed)
            np.testing.assert_array_equal(sess.run(tf.convert_to_tensor(table)),
                                          full)
            sess.run(tf.global_variables_initializer())
            sess.run(by_name, by_name_feed)
            np.testing.assert_array_equal(sess.run(tf.convert_to_tensor(table)),
                                          full)
        missing = tf.get_variable('missing', [1])
        with pytest.raises(CheckpointError, match=r'missing variable \[missing\]'):
            slim.assign_from_checkpoint(prefix, [missing])
        _, feed = slim.assign_from_checkpoint(prefix, [missing],
                                              ignore_missing_vars=True)
        assert feed == {}
    assert issubclass(CheckpointError, ValueError)
