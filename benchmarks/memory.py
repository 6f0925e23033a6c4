"""Peak memory of `slimnets classify` and `slimnets eval` against the number
of images: streaming in batches keeps it flat.

For each count, a fresh process classifies (and evaluates) that many small
generated PNGs with a generated v1 0.25 checkpoint at 128 pixels (no
download), and the peak resident set size of that process is reported
(`resource.getrusage(RUSAGE_CHILDREN)`).  Run by hand:

    .venv/bin/python benchmarks/memory.py --counts 10 1000 10000

Prints one row per (command, count) and the ratio of the largest to the
smallest peak.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def make_checkpoint(folder):
    import tensorflow.compat.v1 as tf

    from slimnets import mobilenet_v1
    from slimnets import slim
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 128, 128, 3])
        with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                is_training=False)):
            mobilenet_v1.mobilenet_v1(images, num_classes=1001,
                                      depth_multiplier=0.25, is_training=False)
        saver = tf.train.Saver()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return saver.save(sess, os.path.join(folder, 'model.ckpt'),
                              write_meta_graph=False)


def make_images(folder, count):
    import tensorflow as tf2
    classes = os.path.join(folder, 'n02123159')
    os.makedirs(classes, exist_ok=True)
    rng = np.random.RandomState(0)
    png = tf2.io.encode_png(rng.randint(0, 255, (160, 160, 3), np.uint8)).numpy()
    paths = []
    for index in range(count):
        path = os.path.join(classes, '%05d.png' % index)
        with open(path, 'wb') as handle:
            handle.write(png)
        paths.append(path)
    return paths


def peak_of(args):
    """Peak RSS (MB) of `python -m slimnets ARGS` in a fresh process."""
    code = ('import resource, subprocess, sys\n'
            'subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n'
            'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n')
    completed = subprocess.run(
        [sys.executable, '-c', code, sys.executable, '-m', 'slimnets'] + args,
        capture_output=True, text=True, check=True)
    return int(completed.stdout.split()[-1]) / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--counts', type=int, nargs='+',
                        default=[10, 1000, 10000])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        prefix = make_checkpoint(work)
        print('%-10s %8s %12s' % ('command', 'images', 'peak RSS MB'))
        peaks = {}
        for count in args.counts:
            data = os.path.join(work, 'data%d' % count)
            paths = make_images(data, count)
            for command, command_args in (
                    ('classify', ['classify', '--checkpoint', prefix,
                                  '--top-k', '1'] + paths),
                    ('eval', ['eval', '--checkpoint', prefix, '--data', data,
                              '--no-progress'])):
                peak = peak_of(command_args)
                peaks.setdefault(command, []).append(peak)
                print('%-10s %8d %12.0f' % (command, count, peak))
        for command, values in peaks.items():
            print('%s: largest / smallest peak = %.2f' % (
                command, max(values) / min(values)))


if __name__ == '__main__':
    main()
