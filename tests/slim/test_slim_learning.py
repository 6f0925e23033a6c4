"""A classic TF-Slim pipeline end to end, on `slimnets.slim` alone.

TFRecords -> `slim.dataset.Dataset` + `DatasetDataProvider` (through
`tfexample_decoder`) -> `tf.train.batch` -> `slim.learning.create_train_op` +
`slim.learning.train` -> `slim.evaluation.evaluate_once` /
`evaluation_loop` with `slim.metrics.streaming_accuracy`, in graph mode
*without* `disable_eager_execution()` (the Supervisor's threads must not
run eagerly).  Also `slim.model_analyzer`.
"""

import contextlib
import io
import os
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import slim

NUM_TRAIN = 48
NUM_EVAL = 32
SIZE = 8
BATCH = 8
STEPS = 25
MARKER = 7.0


def make_images(count, seed):
    """Two classes a linear model separates: dark (0) and bright (1) images.

    Returns:
      (uint8 images [count, SIZE, SIZE, 3], int64 labels [count]).
    """
    rng = np.random.RandomState(seed)
    labels = np.arange(count) % 2
    base = np.where(labels[:, None, None, None] == 1, 170, 40)
    images = base + rng.randint(0, 60, [count, SIZE, SIZE, 3])
    return images.astype(np.uint8), labels.astype(np.int64)


def write_records(path, images, labels, image_format):
    encode = tf.io.encode_png if image_format == 'png' else tf.io.encode_jpeg
    with tf.io.TFRecordWriter(path) as writer:
        for image, label in zip(images, labels):
            feature = {
                'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[encode(image).numpy()])),
                'image/format': tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[image_format.encode()])),
                'image/class/label': tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


def get_split(path, num_samples, shape=None):
    """A research/slim `datasets/flowers.py`-style reader for one split."""
    keys_to_features = {
        'image/encoded': tf.FixedLenFeature((), tf.string, default_value=''),
        'image/format': tf.FixedLenFeature((), tf.string, default_value='png'),
        'image/class/label': tf.FixedLenFeature(
            [], tf.int64, default_value=tf.zeros([], dtype=tf.int64)),
    }
    items_to_handlers = {
        'image': slim.tfexample_decoder.Image(shape=shape),
        'label': slim.tfexample_decoder.Tensor('image/class/label'),
    }
    decoder = slim.tfexample_decoder.TFExampleDecoder(keys_to_features,
                                                      items_to_handlers)
    return slim.dataset.Dataset(
        data_sources=path, reader=tf.TFRecordReader, decoder=decoder,
        num_samples=num_samples, num_classes=2,
        items_to_descriptions={'image': 'A colour image.',
                               'label': '0 dark, 1 bright.'},
        labels_to_names={0: 'dark', 1: 'bright'})


def inputs(dataset, shuffle):
    """Batches of ([BATCH, SIZE, SIZE, 3] float images in [-0.5, 0.5], labels)."""
    provider = slim.dataset_data_provider.DatasetDataProvider(
        dataset, num_readers=1, shuffle=shuffle, common_queue_capacity=64,
        common_queue_min=8)
    image, label = provider.get(['image', 'label'])
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0 - 0.5,
                            [SIZE, SIZE])
    image.set_shape([SIZE, SIZE, 3])
    return tf.train.batch([image, label], batch_size=BATCH, num_threads=1,
                          capacity=4 * BATCH)


def model(images):
    """[N, SIZE, SIZE, 3] -> logits [N, 2]."""
    net = slim.conv2d(images, 4, [3, 3], scope='conv')
    net = slim.flatten(net)
    return slim.fully_connected(net, 2, activation_fn=None, scope='logits')


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp('records')
    train_images, train_labels = make_images(NUM_TRAIN, seed=0)
    eval_images, eval_labels = make_images(NUM_EVAL, seed=1)
    paths = {'train': str(folder / 'train.tfrecord'),
             'eval': str(folder / 'eval.tfrecord')}
    write_records(paths['train'], train_images, train_labels, 'png')
    # JPEG in the eval split: Image() then takes the is_jpeg branch.
    write_records(paths['eval'], eval_images, eval_labels, 'jpeg')
    return paths


def train(records, logdir, number_of_steps, init_calls):
    """Builds the training graph in `with tf.Graph().as_default():` and runs
    `slim.learning.train`; returns its final loss."""
    with tf.Graph().as_default():
        images, labels = inputs(get_split(records['train'], NUM_TRAIN,
                                          shape=[SIZE, SIZE, 3]),
                                shuffle=True)
        logits = model(images)
        marker = tf.get_variable('marker', [], trainable=False,
                                 initializer=tf.zeros_initializer())
        tf.losses.sparse_softmax_cross_entropy(labels, logits)
        train_op = slim.learning.create_train_op(
            tf.losses.get_total_loss(), tf.train.GradientDescentOptimizer(0.1),
            clip_gradient_norm=10.0,
            gradient_multipliers={'logits/biases': 2.0})

        def init_fn(sess):
            init_calls.append(sess)
            marker.load(MARKER, sess)

        return slim.learning.train(
            train_op, logdir, number_of_steps=number_of_steps,
            init_fn=init_fn, save_interval_secs=3600, save_summaries_secs=3600,
            log_every_n_steps=100)


@pytest.fixture(scope='module')
def trained(records, tmp_path_factory):
    """Trains 1 step, then resumes to STEPS; returns (logdir, first loss,
    final loss, init_fn calls)."""
    assert tf.executing_eagerly()  # the suite never disables eager mode
    logdir = str(tmp_path_factory.mktemp('train'))
    init_calls = []
    first_loss = train(records, logdir, 1, init_calls)
    final_loss = train(records, logdir, STEPS, init_calls)
    return logdir, first_loss, final_loss, len(init_calls)


def test_train_runs_saves_and_resumes(trained):
    logdir, first_loss, final_loss, init_calls = trained
    # init_fn runs only when the session starts from scratch, not on resume.
    assert init_calls == 1
    checkpoint = tf.train.latest_checkpoint(logdir)
    assert checkpoint.endswith('model.ckpt-%d' % STEPS)
    reader = tf.train.load_checkpoint(checkpoint)
    assert reader.get_tensor('global_step') == STEPS
    assert reader.get_tensor('marker') == MARKER
    assert final_loss < 0.5 * first_loss


def evaluate_numpy(checkpoint, images, labels):
    """Accuracy of the checkpoint on uint8 `images`, without slim's data stack."""
    with tf.Graph().as_default():
        batch = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        predictions = tf.argmax(model(batch), 1)
        with tf.Session() as sess:
            tf.train.Saver(slim.get_model_variables()).restore(sess, checkpoint)
            got = sess.run(predictions, {batch: images / 255.0 - 0.5})
    return float(np.mean(got == labels))


def build_eval_graph(records):
    images, labels = inputs(get_split(records['eval'], NUM_EVAL),
                            shuffle=False)
    predictions = tf.argmax(model(images), 1)
    names_to_values, names_to_updates = slim.metrics.aggregate_metric_map({
        'accuracy': slim.metrics.streaming_accuracy(predictions, labels),
        'recall': slim.metrics.streaming_recall(
            tf.cast(predictions, tf.bool), tf.cast(labels, tf.bool)),
    })
    return names_to_values, names_to_updates


def test_evaluate_once_with_streaming_accuracy(records, trained, tmp_path):
    logdir = trained[0]
    checkpoint = tf.train.latest_checkpoint(logdir)
    with tf.Graph().as_default():
        values, updates = build_eval_graph(records)
        results = slim.evaluation.evaluate_once(
            '', checkpoint, str(tmp_path), num_evals=NUM_EVAL // BATCH,
            eval_op=list(updates.values()), final_op=values)
    # One pass over the eval split, in order: the same accuracy as the model
    # computed directly on the decoded JPEGs.
    eval_images, eval_labels = make_images(NUM_EVAL, seed=1)
    with tf.Graph().as_default(), tf.Session() as sess:
        decoded = sess.run([tf.image.decode_jpeg(tf.io.encode_jpeg(image))
                            for image in eval_images])
    expected = evaluate_numpy(checkpoint, np.stack(decoded), eval_labels)
    assert results['accuracy'] == pytest.approx(expected, abs=1e-6)
    assert results['accuracy'] >= 0.9
    assert 0.0 <= results['recall'] <= 1.0


def test_evaluation_loop_reads_the_latest_checkpoint(records, trained,
                                                     tmp_path):
    logdir = trained[0]
    with tf.Graph().as_default():
        values, updates = build_eval_graph(records)
        results = slim.evaluation.evaluation_loop(
            '', logdir, str(tmp_path), num_evals=NUM_EVAL // BATCH,
            eval_op=list(updates.values()), final_op=values,
            eval_interval_secs=0, max_number_of_evaluations=1)
    assert results['accuracy'] >= 0.9
    assert any(name.startswith('events.') for name in os.listdir(tmp_path))


def test_model_analyzer_counts_mobilenet():
    with tf.Graph().as_default() as graph:
        mobilenet_v1.mobilenet_v1(tf.placeholder(tf.float32, [1, 64, 64, 3]),
                                  num_classes=11, depth_multiplier=0.25)
        variables = tf.model_variables()
        expected_size = sum(int(np.prod(v.shape.as_list())) for v in variables)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            size, size_bytes = slim.model_analyzer.analyze_vars(
                variables, print_info=True)
            op_size = slim.model_analyzer.analyze_ops(graph, print_info=True)
        expected_ops = sum(
            (o.shape.num_elements() or 0) for op in graph.get_operations()
            for o in op.outputs)
    assert size == expected_size
    assert size_bytes == 4 * expected_size
    assert op_size == expected_ops
    lines = printed.getvalue().splitlines()
    assert 'MobilenetV1/Conv2d_0/weights:0 (float32 3x3x3x8) [216, bytes: 864]' \
        in lines
    assert 'Total size of variables: %d' % expected_size in lines


def test_supervisor_threads_save_and_summarize_while_training(records,
                                                              tmp_path):
    """The checkpoint and summary threads run (in graph mode) during train."""
    logdir = str(tmp_path / 'train')

    def slow_train_step(sess, train_op, global_step, train_step_kwargs):
        time.sleep(0.15)
        return slim.learning.train_step(sess, train_op, global_step,
                                        train_step_kwargs)

    with tf.Graph().as_default():
        images, labels = inputs(get_split(records['train'], NUM_TRAIN,
                                          shape=[SIZE, SIZE, 3]),
                                shuffle=True)
        tf.losses.sparse_softmax_cross_entropy(labels, model(images))
        total_loss = tf.losses.get_total_loss()
        tf.summary.scalar('training_loss', total_loss)
        train_op = slim.learning.create_train_op(
            total_loss, tf.train.GradientDescentOptimizer(0.1))
        slim.learning.train(train_op, logdir, number_of_steps=16,
                            train_step_fn=slow_train_step,
                            save_interval_secs=1, save_summaries_secs=1,
                            log_every_n_steps=100)
    state = tf.train.get_checkpoint_state(logdir)
    steps = sorted(int(path.rsplit('-', 1)[1])
                   for path in state.all_model_checkpoint_paths)
    # At least one checkpoint written by the timer thread before the end.
    assert steps[-1] == 16 and len(steps) >= 2 and steps[0] < 16
    tags = set()
    for name in os.listdir(logdir):
        if name.startswith('events.'):
            for event in tf.train.summary_iterator(os.path.join(logdir, name)):
                tags.update(value.tag for value in event.summary.value)
    assert 'training_loss' in tags
    assert 'global_step/sec' in tags


SYNC_STEPS = 12
SYNC_LIMIT_SECONDS = 60  # tf.train.Supervisor's grace period is 120 s


def test_train_with_sync_replicas_optimizer_ends(records, tmp_path):
    """`train(..., sync_optimizer=...)` with one replica trains and returns.

    The chief queue runner waits in its accumulators for gradients that no
    longer come once training stops; without the repair `train` blocked in
    `Supervisor.stop` for 120 s, then raised.  The training runs in a thread
    so that a hang fails this test instead of blocking the suite.
    """
    logdir = str(tmp_path / 'train')
    outcome = {}

    def run():
        with tf.Graph().as_default():
            images, labels = inputs(get_split(records['train'], NUM_TRAIN,
                                              shape=[SIZE, SIZE, 3]),
                                    shuffle=True)
            tf.losses.sparse_softmax_cross_entropy(labels, model(images))
            optimizer = tf.train.SyncReplicasOptimizer(
                tf.train.GradientDescentOptimizer(0.1),
                replicas_to_aggregate=1, total_num_replicas=1)
            train_op = slim.learning.create_train_op(
                tf.losses.get_total_loss(), optimizer)
            start = time.time()
            try:
                outcome['loss'] = slim.learning.train(
                    train_op, logdir, number_of_steps=SYNC_STEPS,
                    sync_optimizer=optimizer, save_interval_secs=3600,
                    save_summaries_secs=3600, log_every_n_steps=100)
            except Exception as error:  # pylint: disable=broad-except
                outcome['error'] = error
            outcome['seconds'] = time.time() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SYNC_LIMIT_SECONDS)
    assert not thread.is_alive(), 'train with sync_optimizer hung'
    assert 'error' not in outcome, outcome.get('error')
    print('sync_optimizer training: %d steps in %.1f s'
          % (SYNC_STEPS, outcome['seconds']))
    checkpoint = tf.train.latest_checkpoint(logdir)
    assert checkpoint.endswith('model.ckpt-%d' % SYNC_STEPS)
    reader = tf.train.load_checkpoint(checkpoint)
    assert reader.get_tensor('global_step') == SYNC_STEPS
    assert np.isfinite(outcome['loss'])
