"""Training step throughput: `slimnets train` against Keras `fit`.

One run, on this machine: --images generated camera-like JPEGs in
--classes class folders, written as TFRecords by `slimnets data build`;
then, for MobileNet v1 1.0 and v2 1.0 (--networks), batch --batch-size at
--image-size, momentum SGD (learning rate 0.01, momentum 0.9, fixed, no
weight decay), from scratch, each in its own process:

  slim    `slimnets.training.train` (what `slimnets train` runs: the
          TFRecords streamed through `datasets.training_dataset`, Inception
          train preprocessing, batch-norm updates), step times from its
          per-step log lines (log_every_n_steps=1);
  keras   `keras.applications.MobileNet` / `MobileNetV2` (weights=None,
          the data's classes) `compile(SGD(0.01, momentum=0.9))` and `fit`
          on the same TFRecords (tf.data: parse, decode, random crop and
          flip, resize, [-1, 1], batch, prefetch), step times from a
          callback.

Images/s from the median step after --warmup steps (min/median/max over
--steps steps), peak memory (ru_maxrss of the process).  --profile also
traces --profile-steps slim steps (tf.compat.v1 RunMetadata, FULL_TRACE)
in the graph `training.build_train_graph` builds and aggregates the op
times by op type: the top ops and their shares of the summed op time.
Writes training.json (--output-dir) and prints a table.
Run:  .venv/bin/python benchmarks/training.py [--profile]  (or run.py)
"""

import argparse
import collections
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import harness  # noqa: E402  pylint: disable=wrong-import-position
import main_job  # noqa: E402  pylint: disable=wrong-import-position

NETWORKS = collections.OrderedDict([
    # registry name: keras.applications constructor
    ('mobilenet_v1', 'MobileNet'),
    ('mobilenet_v2', 'MobileNetV2'),
])
LEARNING_RATE = 0.01
MOMENTUM = 0.9


def make_records(scratch, images, classes, seed=0):
    """Class folders of JPEGs (class0, ...) written as TFRecords by the
    `slimnets data build` command line; returns the records folder."""
    records = os.path.join(scratch, 'records_%d_%d' % (images, classes))
    if os.path.exists(os.path.join(records, 'labels.txt')):
        return records
    photos = os.path.join(scratch, 'photos_%d_%d' % (images, classes))
    main_job.make_images(photos, images, seed, classes=classes,
                         names=['class%d' % i for i in range(classes)])
    os.remove(os.path.join(photos, 'manifest.json'))
    subprocess.run([sys.executable, '-m', 'slimnets', 'data', 'build',
                    '--input', photos, '--output', records, '--shards', '2',
                    '--validation-fraction', '0', '--no-progress'],
                   check=True, capture_output=True)
    return records


class _StepTimes(logging.Handler):
    """Records the time of each 'step N: loss' line of slimnets.training."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times = []

    def emit(self, record):
        if record.getMessage().startswith('step '):
            self.times.append(time.perf_counter())


def _slim(args):
    from slimnets import training  # pylint: disable=import-outside-toplevel
    handler = _StepTimes()
    logger = logging.getLogger('slimnets.training')
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    train_dir = tempfile.mkdtemp(prefix='slimnets-train-bench-')
    total = args.warmup + args.steps
    start = time.perf_counter()
    training.train(train_dir, args.records, model=args.worker_network,
                   progress=False, batch_size=args.batch_size,
                   image_size=args.image_size, max_steps=total,
                   optimizer='momentum', momentum=MOMENTUM,
                   learning_rate=LEARNING_RATE,
                   learning_rate_decay_type='fixed', weight_decay=0.0,
                   save_every_steps=total + 1, log_every_n_steps=1, seed=0)
    wall = time.perf_counter() - start
    return handler.times, wall


def _keras_dataset(records, image_size, batch_size):
    """The TFRecords as a Keras user feeds them to fit."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = tf.io.gfile.glob(os.path.join(records, 'train-*'))
    features = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
                'image/class/label': tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        image = tf.io.decode_jpeg(example['image/encoded'], channels=3)
        shape = tf.shape(image)
        side = tf.minimum(shape[0], shape[1])
        image = tf.image.random_crop(image, [side, side, 3])
        image = tf.image.random_flip_left_right(image)
        image = tf.image.resize(image, [image_size, image_size])
        return image / 127.5 - 1.0, example['image/class/label']

    dataset = tf.data.TFRecordDataset(files).repeat().shuffle(1000, seed=0)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)


def _keras(args):
    import keras  # pylint: disable=import-outside-toplevel

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    with open(os.path.join(args.records, 'labels.txt')) as handle:
        classes = len([line for line in handle if line.strip()])
    start = time.perf_counter()
    model = getattr(keras.applications, NETWORKS[args.worker_network])(
        weights=None, classes=classes,
        input_shape=(args.image_size, args.image_size, 3))
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE,
                                                 momentum=MOMENTUM),
                  loss='sparse_categorical_crossentropy')
    callback = StepTimes()
    model.fit(_keras_dataset(args.records, args.image_size, args.batch_size),
              steps_per_epoch=args.warmup + args.steps, epochs=1,
              callbacks=[callback], verbose=0)
    return callback.times, time.perf_counter() - start


def op_type_profile(step_stats_list, op_types, top=15):
    """Aggregates op times of traced steps by op type.

    Args:
      step_stats_list: StepStats protos (RunMetadata.step_stats), one per
        traced step.
      op_types: {node name: op type} of the graph.
    Returns:
      dict: total_op_ms per step (summed over ops: ops that run in
      parallel both count), and top: [{op, ms_per_step, share, count}],
      largest first.
    """
    totals = collections.Counter()
    counts = collections.Counter()
    for step_stats in step_stats_list:
        for device in step_stats.dev_stats:
            for node in device.node_stats:
                name = node.node_name.split(':')[0]
                kind = op_types.get(name) or (
                    node.timeline_label.split('(')[0].split('=')[-1].strip()
                    or name)
                totals[kind] += node.op_end_rel_micros
                counts[kind] += 1
    steps = max(1, len(step_stats_list))
    total = float(sum(totals.values())) or 1.0
    return {'total_op_ms_per_step': total / steps / 1e3,
            'steps': len(step_stats_list),
            'top': [{'op': kind, 'ms_per_step': micros / steps / 1e3,
                     'share': micros / total, 'count': counts[kind] // steps}
                    for kind, micros in totals.most_common(top)]}


def _profile(args):
    """Traces slim training steps (the graph training.train builds)."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import datasets  # pylint: disable=import-outside-toplevel
    from slimnets import inference  # pylint: disable=import-outside-toplevel
    from slimnets import training  # pylint: disable=import-outside-toplevel
    from slimnets.deployment import model_deploy  # pylint: disable=import-outside-toplevel
    from slimnets.train_config import DEFAULTS  # pylint: disable=import-outside-toplevel
    source = datasets.training_source(args.records)
    config = DEFAULTS._replace(
        batch_size=args.batch_size, image_size=args.image_size,
        optimizer='momentum', momentum=MOMENTUM, learning_rate=LEARNING_RATE,
        learning_rate_decay_type='fixed', weight_decay=0.0, seed=0)
    spec = inference.ModelSpec(args.worker_network, {}, args.image_size,
                               len(source.class_names))
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        batches = tf.data.make_one_shot_iterator(datasets.training_dataset(
            source, args.image_size, args.batch_size, 0))
        parts = training.build_train_graph(
            spec, config, batches.get_next, model_deploy.DeploymentConfig())
        op_types = {op.name: op.type for op in graph.get_operations()}
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            for _ in range(args.warmup):
                session.run(parts.train_op)
            options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
            traced, seconds = [], []
            for _ in range(args.profile_steps):
                metadata = tf.RunMetadata()
                start = time.perf_counter()
                session.run(parts.train_op, options=options,
                            run_metadata=metadata)
                seconds.append(time.perf_counter() - start)
                traced.append(metadata.step_stats)
    profile = op_type_profile(traced, op_types)
    profile['traced_step_s_median'] = float(np.median(seconds))
    return profile


def run_worker(args):
    harness.apply_threads(args.threads)
    if args.worker == 'profile':
        result = {'profile': _profile(args)}
    else:
        times, wall = (_slim if args.worker == 'slim' else _keras)(args)
        steps = np.diff(times)[args.warmup - 1:] if args.warmup else \
            np.diff(times)
        result = {'step_s': [float(s) for s in steps], 'wall_s': wall,
                  'logged_steps': len(times)}
    result['peak_rss_mb'] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def summarize(measured, batch_size):
    """Per network: cells (images/s stats over steps, peak memory) and the
    per-step speed ratio slim / keras (median of each side; min/max from
    the fastest and slowest steps)."""
    for network in measured.values():
        for kind in ('slim', 'keras'):
            raw = network[kind]
            cell = harness.rate_stats(raw['step_s'], batch_size)
            cell.update({'peak_rss_mb': raw['peak_rss_mb'],
                         'wall_s': raw['wall_s']})
            network[kind + '_cell'] = cell
        slim, keras = network['slim_cell'], network['keras_cell']
        network['slim_vs_keras'] = {
            'median': slim['images_per_s'] / keras['images_per_s'],
            'min': slim['images_per_s_min'] / keras['images_per_s_max'],
            'max': slim['images_per_s_max'] / keras['images_per_s_min']}
        network['goal_at_least_1.2x_keras'] = \
            network['slim_vs_keras']['median'] >= 1.2
    return measured


def table(result):
    options = result['options']
    lines = ['training steps, batch %d at %dx%d, momentum SGD, %d thread(s); '
             'images/s of the median step (min-max) after %d warm-up steps' % (
                 options['batch_size'], options['image_size'],
                 options['image_size'], result['threads'], options['warmup']),
             '%-14s %20s %8s %20s %8s %14s' % (
                 'network', 'slim images/s', 'slim MB', 'keras images/s',
                 'keras MB', 'slim/keras')]
    for name, network in result['networks'].items():
        slim, keras = network['slim_cell'], network['keras_cell']
        lines.append('%-14s %20s %8.0f %20s %8.0f %14s' % (
            name, '%.1f (%.1f-%.1f)' % (slim['images_per_s'],
                                        slim['images_per_s_min'],
                                        slim['images_per_s_max']),
            slim['peak_rss_mb'],
            '%.1f (%.1f-%.1f)' % (keras['images_per_s'],
                                  keras['images_per_s_min'],
                                  keras['images_per_s_max']),
            keras['peak_rss_mb'], '%.2f' % network['slim_vs_keras']['median']))
        profile = network.get('profile')
        if profile:
            lines.append('  slim step profile (%d traced steps, %.0f ms of op '
                         'time per step): ' % (profile['steps'],
                                               profile['total_op_ms_per_step'])
                         + ', '.join('%s %.0f%%' % (top['op'],
                                                    100 * top['share'])
                                     for top in profile['top'][:8]))
    return '\n'.join(lines)


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--networks', nargs='+', default=list(NETWORKS),
                        choices=list(NETWORKS))
    parser.add_argument('--images', type=int, default=640)
    parser.add_argument('--classes', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--profile-steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=bench.default_threads())
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 48 images, v1 at 96x96, batch 8, '
                             '2 + 3 steps')
    parser.add_argument('--scratch', help='where the images and records live '
                        '(default: a temporary folder)')
    parser.add_argument('--output-dir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--worker-network', help=argparse.SUPPRESS)
    parser.add_argument('--records', help=argparse.SUPPRESS)
    return parser


def main():
    args = argument_parser().parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.quick:
        args.images, args.image_size, args.batch_size = 48, 96, 8
        args.warmup, args.steps, args.profile_steps = 2, 3, 2
        args.networks = args.networks[:1]
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    result = harness.header('training', {
        key: getattr(args, key) for key in (
            'networks', 'images', 'classes', 'batch_size', 'image_size',
            'warmup', 'steps', 'profile', 'profile_steps')}, args.threads,
        args.quick)
    result['options'].update({'optimizer': 'momentum SGD',
                              'learning_rate': LEARNING_RATE,
                              'momentum': MOMENTUM, 'weight_decay': 0.0})
    result['preprocessing'] = {
        'slim': 'Inception train preprocessing (distorted bounding-box crop, '
                'flip, colour distortion), as slimnets train runs it',
        'keras': 'random square crop, flip, resize, [-1, 1]'}
    scratch = args.scratch or tempfile.mkdtemp(prefix='slimnets-training-')
    records = make_records(scratch, args.images, args.classes)
    env = bench.worker_env(args.threads)
    result['worker_environment'] = harness.environment(env)
    common = ['--records', records, '--batch-size', str(args.batch_size),
              '--image-size', str(args.image_size), '--warmup',
              str(args.warmup), '--steps', str(args.steps),
              '--profile-steps', str(args.profile_steps), '--threads',
              str(args.threads)]
    measured = collections.OrderedDict()
    for index, name in enumerate(args.networks):
        measured[name] = {}
        kinds = harness.rotation(['slim', 'keras'], index)
        for kind in kinds + (['profile'] if args.profile else []):
            print('%s: %s ...' % (name, kind), file=sys.stderr)
            completed = subprocess.run(
                [sys.executable, os.path.abspath(__file__), '--worker', kind,
                 '--worker-network', name] + common, env=env,
                capture_output=True, text=True, check=False)
            output = harness.worker_json(completed, '%s %s' % (name, kind))
            if kind == 'profile':
                measured[name]['profile'] = output['profile']
            else:
                measured[name][kind] = output
    result['networks'] = summarize(measured, args.batch_size)
    harness.finish(result)
    path = harness.write_json(os.path.join(args.output_dir, 'training.json'),
                              result)
    print(table(result))
    print('wrote %s' % path)


if __name__ == '__main__':
    main()
