"""Input pipeline: throughput against the network, memory against size.

Run by hand (not in the tests):

    .venv/bin/python benchmarks/input_pipeline.py [--records 1000,100000]

1. Throughput.  Writes --train-records JPEG records (--image-px square, in
   4 shards) and measures, each after warm-up:
     pipeline   images/s of `slimnets.datasets.training_dataset` alone
                (interleave, parallel decode, Inception train
                preprocessing to --image-size, batching);
     synthetic  images/s of the network's training step (--network,
                --depth-multiplier, batch --batch-size, SGD with momentum and
                batch-norm updates) on a batch held in a variable;
     fed        images/s of the same step fed by the pipeline;
   and prints fed / synthetic: the share of the network's training
   throughput the pipeline delivers.
2. Memory.  For each --records count, writes that many small records and,
   in a fresh process each, measures peak RSS (ru_maxrss) of
     stream     one full pass of `evaluation_dataset` (decode and eval
                preprocessing of every record);
     in-memory  `evaluation_examples` (every record held in Python: what
                eval and train did before streaming).
   Peak RSS is the process's VmHWM (Linux; ru_maxrss elsewhere).

Prints a table and writes input_pipeline.json under --output-dir.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _encoded_pool(size, count=64, seed=0):
    import tensorflow as tf2
    rng = np.random.RandomState(seed)
    pool = []
    for _ in range(count):
        base = rng.randint(0, 255, (1, 1, 3))
        pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255)
        pool.append(tf2.io.encode_jpeg(pixels.astype(np.uint8),
                                       quality=90).numpy())
    return pool


def write_records(folder, count, image_px, shards=4, classes=10):
    """`count` records of JPEGs cycled from a pool, in `shards` files."""
    import tensorflow as tf2
    pool = _encoded_pool(image_px)
    os.makedirs(folder, exist_ok=True)
    bounds = [count * i // shards for i in range(shards + 1)]
    for shard in range(shards):
        path = os.path.join(folder, 'train-%05d-of-%05d' % (shard, shards))
        with tf2.io.TFRecordWriter(path) as writer:
            for index in range(bounds[shard], bounds[shard + 1]):
                feature = {
                    'image/encoded': tf2.train.Feature(bytes_list=tf2.train.
                                                       BytesList(value=[
                                                           pool[index % len(
                                                               pool)]])),
                    'image/class/label': tf2.train.Feature(
                        int64_list=tf2.train.Int64List(value=[
                            index % classes]))}
                writer.write(tf2.train.Example(features=tf2.train.Features(
                    feature=feature)).SerializeToString())
    with open(os.path.join(folder, 'labels.txt'), 'w') as handle:
        handle.write(''.join('%d:class%d\n' % (i, i) for i in range(classes)))
    return folder


def _timed(sess, fetch, steps, warmup=3):
    for _ in range(warmup):
        sess.run(fetch)
    start = time.perf_counter()
    for _ in range(steps):
        sess.run(fetch)
    return time.perf_counter() - start


def throughput(folder, args):
    import tensorflow.compat.v1 as tf

    from slimnets import datasets
    from slimnets import nets_factory

    source = datasets.training_source(folder)
    batch, size = args.batch_size, args.image_size
    results = {}
    with tf.Graph().as_default():
        images, labels = tf.data.make_one_shot_iterator(
            datasets.training_dataset(source, size, batch)).get_next()
        with tf.Session() as sess:
            seconds = _timed(sess, [images, labels], args.steps * 2)
    results['pipeline'] = batch * args.steps * 2 / seconds

    def step(images, labels):
        network = nets_factory.get_network_fn(
            args.network, len(source.class_names), is_training=True)
        logits, _ = network(images, depth_multiplier=args.depth_multiplier)
        loss = tf.losses.softmax_cross_entropy(
            tf.one_hot(labels, len(source.class_names)), logits)
        with tf.control_dependencies(tf.get_collection(
                tf.GraphKeys.UPDATE_OPS)):
            return tf.train.MomentumOptimizer(0.01, 0.9).minimize(loss)

    for mode in ('synthetic', 'fed'):
        with tf.Graph().as_default():
            if mode == 'synthetic':
                held = tf.Variable(tf.random.uniform([batch, size, size, 3],
                                                     -1, 1), trainable=False)
                train_op = step(held.read_value(), tf.zeros([batch], tf.int64))
            else:
                images, labels = tf.data.make_one_shot_iterator(
                    datasets.training_dataset(source, size, batch)).get_next()
                train_op = step(images, labels)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                seconds = _timed(sess, train_op, args.steps)
        results[mode] = batch * args.steps / seconds
    results['fed_over_synthetic'] = results['fed'] / results['synthetic']
    return results


def memory_child(folder, mode, image_size):
    """Runs in a fresh process: one pass, then prints peak RSS (MiB)."""
    from slimnets import datasets
    if mode == 'stream':
        import tensorflow.compat.v1 as tf
        source = datasets.evaluation_source(folder, 10)
        count = 0
        with tf.Graph().as_default():
            for images, _ in datasets.iterate(datasets.evaluation_dataset(
                    source, image_size, 64)):
                count += len(images)
    else:
        count = len(datasets.evaluation_examples(folder, 10))
    print(json.dumps({'images': count, 'peak_rss_mib': _peak_rss_mib()}))


def _peak_rss_mib():
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's
    peak over fork and exec)."""
    try:
        with open('/proc/self/status') as handle:
            for line in handle:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(folder, args):
    results = {}
    for mode in ('stream', 'in-memory'):
        completed = subprocess.run(
            [sys.executable, __file__, '--memory-child', folder, mode,
             str(args.memory_image_size)],
            capture_output=True, text=True, check=True)
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', default='1000,100000',
                        help='record counts for the memory runs')
    parser.add_argument('--train-records', type=int, default=2000)
    parser.add_argument('--image-px', type=int, default=64,
                        help='stored JPEG size')
    parser.add_argument('--memory-image-px', type=int, default=32)
    parser.add_argument('--memory-image-size', type=int, default=64)
    parser.add_argument('--network', default='mobilenet_v1')
    parser.add_argument('--depth-multiplier', type=float, default=1.0)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--output-dir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--memory-child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        folder, mode, size = args.memory_child
        memory_child(folder, mode, int(size))
        return
    report = {'cpus': os.cpu_count(), 'network': '%s %g at %d, batch %d' % (
        args.network, args.depth_multiplier, args.image_size,
        args.batch_size)}
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_records(os.path.join(scratch, 'train'),
                               args.train_records, args.image_px)
        report['throughput'] = throughput(folder, args)
        report['memory'] = {}
        for count in [int(c) for c in args.records.split(',')]:
            folder = write_records(os.path.join(scratch, 'm%d' % count),
                                   count, args.memory_image_px)
            report['memory'][count] = memory(folder, args)
    speed = report['throughput']
    print('network: %s (%d CPUs)' % (report['network'], report['cpus']))
    print('images/s: pipeline alone %.1f, training step on a held batch '
          '%.1f, training step fed by the pipeline %.1f (%.0f%%)' % (
              speed['pipeline'], speed['synthetic'], speed['fed'],
              100 * speed['fed_over_synthetic']))
    print('%10s %18s %18s' % ('records', 'stream peak MiB', 'in-memory MiB'))
    for count, row in report['memory'].items():
        print('%10d %18.0f %18.0f' % (count, row['stream']['peak_rss_mib'],
                                      row['in-memory']['peak_rss_mib']))
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, 'input_pipeline.json'),
              'w') as handle:
        json.dump(report, handle, indent=1)


if __name__ == '__main__':
    main()
