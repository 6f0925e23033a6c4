"""Peak memory of the main job: `slimnets classify` and `slimnets eval`.

Each case runs in a fresh process and reports that process's peak resident
set size (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` read by a small
parent).  The cases (the ones issue 25 asks about):

  classify 300 / 3,000 generated JPEGs, with `--runtime auto`: on the first
           run (an empty cache: `auto` loads and times every installed
           runtime, then keeps only the one it chose) and again once the
           choice is cached;
  eval     10,000 generated JPEGs in one class folder (cached choice).

The model is Google's MobileNet v2 1.0_224 when
../shared/fixtures/pretrained/mobilenet_v2/1.0_224/model.ckpt is there
(the default-size model), else a generated v1 0.25 checkpoint at 128 px
(`--checkpoint` names another).  Images are small (they are resized to the
model's size anyway).  Run by hand:

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --classify 10 1000 --eval 10000

Prints one row per case and writes benchmarks/results/memory.json.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAINED = os.path.join(HERE, '..', '..', 'shared', 'fixtures',
                          'pretrained', 'mobilenet_v2', '1.0_224',
                          'model.ckpt')
RESULTS = os.path.join(HERE, 'results', 'memory.json')


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


def make_images(folder, count, distinct=16):
    """`count` small JPEGs in folder/n02123159 (`distinct` different ones,
    repeated); their paths."""
    import tensorflow as tf2
    classes = os.path.join(folder, 'n02123159')
    os.makedirs(classes, exist_ok=True)
    rng = np.random.RandomState(0)
    encoded = []
    for _ in range(distinct):
        coarse = rng.randint(0, 255, (1, 6, 6, 3)).astype(np.float32)
        pixels = tf2.image.resize(coarse, (120, 160))[0]
        encoded.append(tf2.io.encode_jpeg(
            tf2.cast(pixels, tf2.uint8), quality=85).numpy())
    paths = []
    for index in range(count):
        path = os.path.join(classes, '%05d.jpg' % index)
        with open(path, 'wb') as handle:
            handle.write(encoded[index % distinct])
        paths.append(path)
    return paths


def peak_of(args, cache):
    """(peak RSS MB, seconds) of `python -m slimnets ARGS` in a fresh
    process whose checkpoint cache (and so `auto`'s memory) is `cache`."""
    code = ('import resource, subprocess, sys\n'
            'subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n'
            'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n')
    env = dict(os.environ, SLIMNETS_CACHE=cache)
    start = time.time()
    completed = subprocess.run(
        [sys.executable, '-c', code, sys.executable, '-m', 'slimnets'] + args,
        capture_output=True, text=True, env=env)
    if completed.returncode:
        raise SystemExit('slimnets %s failed:\n%s' % (
            ' '.join(args[:3]), completed.stderr[-3000:]))
    return int(completed.stdout.split()[-1]) / 1024.0, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', help='default: the shared v2 1.0_224 '
                        'when present, else a generated v1 0.25 at 128 px')
    parser.add_argument('--classify', type=int, nargs='*', default=[300, 3000],
                        help='image counts for classify (default 300 3000)')
    parser.add_argument('--eval', type=int, nargs='*', default=[10000],
                        help='image counts for eval (default 10000)')
    parser.add_argument('--output', default=RESULTS)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as work:
        prefix = args.checkpoint or (
            PRETRAINED if os.path.exists(PRETRAINED + '.index')
            else make_checkpoint(work))
        print('model: %s' % prefix)
        print('%-10s %7s %-7s %12s %8s' % ('command', 'images', 'cache',
                                            'peak RSS MB', 'seconds'))

        def measure(command, count, state, command_args, cache):
            peak, seconds = peak_of(command_args, cache)
            rows.append({'command': command, 'images': count,
                         'auto_choice': state, 'peak_rss_mb': round(peak, 1),
                         'seconds': round(seconds, 1)})
            print('%-10s %7d %-7s %12.0f %8.1f' % (command, count, state, peak,
                                                   seconds))
            sys.stdout.flush()

        for count in args.classify:
            paths = make_images(os.path.join(work, 'c%d' % count), count)
            cache = os.path.join(work, 'cache%d' % count)
            for state in ('first', 'cached'):   # the first run fills cache
                measure('classify', count, state,
                        ['classify', '--checkpoint', prefix, '--top-k', '1']
                        + paths, cache)
        for count in args.eval:
            data = os.path.join(work, 'e%d' % count)
            make_images(data, count)
            cache = os.path.join(work, 'cache_eval')
            for state in ('first', 'cached'):
                measure('eval', count, state,
                        ['eval', '--checkpoint', prefix, '--data', data,
                         '--no-progress'], cache)
            shutil.rmtree(data)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w') as handle:
        json.dump({'model': 'generated v1 0.25 at 128 px'
                   if prefix.startswith(work) else os.path.abspath(prefix),
                   'machine': '%s x%d' % (platform.processor() or
                                          platform.machine(), os.cpu_count()),
                   'rows': rows}, handle, indent=1)
    print('wrote %s' % args.output)


if __name__ == '__main__':
    main()
