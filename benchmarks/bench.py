"""Inference speed: slimnets against Keras Applications and the machine.

One run, on this machine and TensorFlow:

1. the machine's ceiling: the best of 25 fp32 2048x2048 matrix multiplies
   (GFLOP/s);
2. for MobileNet v1 1.0_224, v2 1.0_224, v3-large and v3-small, at batch 1
   and 16, timed in turn (A B C A B C ...), the median of --runs runs after
   warm-up, of:
     slim     slimnets' graph with variables, in a Session (what a user
              building the network and restoring a checkpoint runs),
     frozen   slimnets' inference graph (`slimnets.optimize`: frozen, batch
              norm folded, conv + bias + ReLU6 for the CPU kernels to fuse),
     frozen_xla  the same graph compiled by XLA (FrozenModel(jit_compile=True)),
     keras    the same architecture from `keras.applications` (weights=None,
              same input size) called inside a `tf.function`;
   images/s, the ratio to Keras, and the achieved GFLOP/s (published MACs x 2
   x images/s) as a share of the matmul rate;
3. per network: graph build time, checkpoint restore time and peak memory
   (each network is measured in its own process).

Writes results.json and images_per_second.png (--output-dir) and prints a
table.  Run:  .venv/bin/python benchmarks/bench.py
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

NETWORKS = {
    # name: (factory name, keras.applications constructor, keras kwargs,
    #        published MACs in millions)
    'mobilenet_v1_1.0_224': ('mobilenet_v1', 'MobileNet', {}, 569),
    'mobilenet_v2_1.0_224': ('mobilenet_v2', 'MobileNetV2', {}, 300),
    'mobilenet_v3_large_1.0_224': ('mobilenet_v3_large', 'MobileNetV3Large',
                                   {'include_preprocessing': False}, 217),
    'mobilenet_v3_small_1.0_224': ('mobilenet_v3_small', 'MobileNetV3Small',
                                   {'include_preprocessing': False}, 66),
}
BATCH_SIZES = (1, 16)
IMAGE_SIZE = 224


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_gflops(repeats=25, size=2048):
    """Best-of-`repeats` fp32 matmul rate, in GFLOP/s."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    multiply = tf.function(lambda x, y: tf.matmul(x, y))
    multiply(a, b).numpy()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        multiply(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def _realistic_statistics(session):
    """Gives batch norm trained-looking values.

    Freshly initialized batch norm (beta 0, mean 0) folds into all-zero
    biases, which Grappler deletes, and the graph then no longer has the
    conv + bias + activation pattern a real checkpoint has: benchmarking it
    would time another graph.
    """
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
    rng = np.random.RandomState(0)
    for variable in tf.global_variables():
        name = variable.op.name.rsplit('/', 1)[-1]
        shape = variable.shape.as_list()
        if name in ('beta', 'moving_mean', 'biases'):
            value = rng.normal(0, 0.1, shape)
        elif name in ('gamma', 'moving_variance'):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        session.run(variable.initializer,
                    {variable.initializer.inputs[1]: value.astype(np.float32)})


def _slim_runners(factory_name):
    """Builds the slim graph, saves and restores a checkpoint, freezes it.

    Returns:
      ({'slim': fn(batch), 'frozen': fn(batch)}, measurements dict).
    """
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import inference  # pylint: disable=import-outside-toplevel
    from slimnets import optimize  # pylint: disable=import-outside-toplevel

    spec = inference.ModelSpec(factory_name, {}, IMAGE_SIZE, 1001)
    measured = {}
    graph = tf.Graph()
    with graph.as_default():
        start = time.perf_counter()
        images = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        logits, _ = inference.build_network(spec, images)
        probabilities = tf.nn.softmax(logits)
        measured['build_s'] = time.perf_counter() - start
        saver = tf.train.Saver()
    session = tf.Session(graph=graph)
    folder = tempfile.mkdtemp(prefix='slimnets-bench-')
    with graph.as_default():
        session.run(tf.global_variables_initializer())
        _realistic_statistics(session)
        prefix = saver.save(session, os.path.join(folder, 'model.ckpt'),
                            write_meta_graph=False)
        start = time.perf_counter()
        saver.restore(session, prefix)
        measured['restore_s'] = time.perf_counter() - start
    start = time.perf_counter()
    frozen, report = optimize.frozen_inference_graph(spec, prefix)
    measured['freeze_s'] = time.perf_counter() - start
    measured['folded_batch_norms'] = report.folded
    frozen_model = optimize.FrozenModel(frozen)
    jit_model = optimize.FrozenModel(frozen, jit_compile=True)

    def run_slim(batch):
        return session.run(probabilities, {images: batch})

    return {'slim': run_slim, 'frozen': frozen_model.run,
            'frozen_xla': jit_model.run}, measured


def _keras_runner(constructor, kwargs):
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    model = getattr(keras.applications, constructor)(
        weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), **kwargs)
    build_s = time.perf_counter() - start
    call = tf.function(lambda x: model(x, training=False))

    def run_keras(batch):
        return call(tf.constant(batch)).numpy()

    return run_keras, build_s


def time_in_turn(runners, runs, batch_iterations):
    """Times `runners` ({label: run(images) -> outputs}) in turn (A B C A B
    C ...), so that a change in the machine's load falls on all alike.

    For each of BATCH_SIZES, a fixed random batch [N, IMAGE_SIZE,
    IMAGE_SIZE, 3] in [-1, 1]; three warm-up calls per runner (graph
    tracing, `auto`'s measurement), then `runs` rounds (batch 1:
    `batch_iterations` calls per timing).

    Yields:
      (batch size, {label: last outputs}, {label: [seconds per call]}).
    """
    rng = np.random.RandomState(0)
    for batch_size in BATCH_SIZES:
        batch = rng.uniform(-1, 1, [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3]
                            ).astype(np.float32)
        iterations = batch_iterations if batch_size == 1 else 1
        outputs = {}
        for label, run in runners.items():
            for _ in range(3):
                outputs[label] = run(batch)
        times = {label: [] for label in runners}
        for _ in range(runs):
            for label, run in runners.items():
                start = time.perf_counter()
                for _ in range(iterations):
                    run(batch)
                times[label].append((time.perf_counter() - start) / iterations)
        yield batch_size, outputs, times


def measure_network(name, runs, batch_iterations):
    """Everything for one network; runs in its own process."""
    factory_name, constructor, kwargs, macs = NETWORKS[name]
    runners, measured = _slim_runners(factory_name)
    measured['peak_rss_mb_slimnets'] = peak_rss_mb()
    runners['keras'], measured['keras_build_s'] = _keras_runner(constructor,
                                                                kwargs)
    results = {'network': name, 'published_macs_millions': macs,
               'build': measured, 'batches': {}}
    for batch_size, outputs, times in time_in_turn(runners, runs,
                                                   batch_iterations):
        results['batches'][str(batch_size)] = {
            label: {'median_s': float(np.median(t)),
                    'images_per_s': batch_size / float(np.median(t)),
                    'runs': len(t)}
            for label, t in times.items()}
        for label in ('frozen', 'frozen_xla'):
            results['batches'][str(batch_size)][label + '_vs_slim_max_abs'] = \
                float(np.max(np.abs(outputs[label] - outputs['slim'])))
    results['peak_rss_mb_total'] = peak_rss_mb()
    return results


def _worker(args):
    print(json.dumps(measure_network(args.worker, args.runs,
                                     args.batch_iterations)))


def plot_images_per_second(results, labels, path, title):
    """A bar chart of images/s, one panel per batch size, one bar per label
    and network; None (and a line saying why) without matplotlib."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use('Agg')
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return None
    figure, axes = pyplot.subplots(1, len(BATCH_SIZES), figsize=(13, 4.5))
    width = 0.8 / len(labels)
    for axis, batch_size in zip(axes, BATCH_SIZES):
        names = [r['network'].replace('mobilenet_', '').replace('_1.0_224', '')
                 for r in results['networks']]
        positions = np.arange(len(names))
        for offset, label in enumerate(labels):
            values = [r['batches'][str(batch_size)][label]['images_per_s']
                      for r in results['networks']]
            axis.bar(positions + (offset - (len(labels) - 1) / 2.0) * width,
                     values, width, label=label)
        axis.set_xticks(positions)
        axis.set_xticklabels(names)
        axis.set_title('batch %d' % batch_size)
        axis.set_ylabel('images / s')
        axis.legend(fontsize=8)
    figure.suptitle('%s, TensorFlow %s, %d cores' % (
        title, results['tensorflow'], os.cpu_count()))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def argument_parser(description, runs, batch_iterations):
    """The options every benchmark here shares (--runs, --batch-iterations,
    --networks, --output-dir and the hidden --worker)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--runs', type=int, default=runs,
                        help='timed runs per variant and batch size')
    parser.add_argument('--batch-iterations', type=int,
                        default=batch_iterations,
                        help='forward passes per timed run at batch 1')
    parser.add_argument('--networks', nargs='+', default=list(NETWORKS),
                        choices=list(NETWORKS))
    parser.add_argument('--output-dir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser


def _table(results):
    ceiling = results['matmul_gflops']
    lines = ['matmul ceiling: %.1f GFLOP/s (best of 25 fp32 2048x2048)'
             % ceiling, '',
             '%-28s %5s %8s %8s %8s %8s %7s %7s %8s %7s' % (
                 'network', 'batch', 'slim/s', 'frozen/s', 'xla/s', 'keras/s',
                 'x keras', 'x slim', 'GFLOP/s', 'ceiling'),
             '(x keras, x slim, GFLOP/s and ceiling share: the faster of '
             'frozen and frozen_xla)']
    for result in results['networks']:
        for batch_size in BATCH_SIZES:
            timing = result['batches'][str(batch_size)]
            best = max(timing['frozen']['images_per_s'],
                       timing['frozen_xla']['images_per_s'])
            gflops = result['published_macs_millions'] * 2 * best / 1e3
            lines.append('%-28s %5d %8.1f %8.1f %8.1f %8.1f %7.2f %7.2f %8.1f '
                         '%6.0f%%' % (
                             result['network'], batch_size,
                             timing['slim']['images_per_s'],
                             timing['frozen']['images_per_s'],
                             timing['frozen_xla']['images_per_s'],
                             timing['keras']['images_per_s'],
                             best / timing['keras']['images_per_s'],
                             best / timing['slim']['images_per_s'], gflops,
                             100 * gflops / ceiling))
    lines += ['', '%-28s %8s %9s %8s %11s %12s' % (
        'network', 'build_s', 'restore_s', 'freeze_s', 'keras_build',
        'peak_rss_MB')]
    for result in results['networks']:
        build = result['build']
        lines.append('%-28s %8.2f %9.3f %8.2f %11.2f %12.0f' % (
            result['network'], build['build_s'], build['restore_s'],
            build['freeze_s'], build['keras_build_s'],
            build['peak_rss_mb_slimnets']))
    return '\n'.join(lines)


def measure_each(script, args, extra_args=()):
    """Runs `script --worker NAME` (and `extra_args`) for each of
    `args.networks` in a fresh process (so each network's memory and
    threads are its own); returns the JSON each worker printed last."""
    measured = []
    for name in args.networks:
        print('measuring %s ...' % name, file=sys.stderr)
        completed = subprocess.run(
            [sys.executable, script, '--worker', name, '--runs',
             str(args.runs), '--batch-iterations', str(args.batch_iterations)]
            + list(extra_args),
            capture_output=True, text=True, check=False)
        if completed.returncode:
            sys.exit('measuring %s failed:\n%s' % (name,
                                                   completed.stderr[-3000:]))
        measured.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return measured


def main():
    parser = argument_parser(__doc__.split('\n')[0], runs=12,
                             batch_iterations=5)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    results = {'tensorflow': tf.__version__, 'cpu_count': os.cpu_count(),
               'runs': args.runs, 'matmul_gflops': matmul_gflops(),
               'networks': []}
    results['networks'] = measure_each(os.path.abspath(__file__), args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, 'results.json'), 'w') as handle:
        json.dump(results, handle, indent=1)
    plot = plot_images_per_second(
        results, ('slim', 'frozen', 'frozen_xla', 'keras'),
        os.path.join(args.output_dir, 'images_per_second.png'),
        'MobileNets at 224x224')
    print(_table(results))
    print('\nwrote %s%s' % (os.path.join(args.output_dir, 'results.json'),
                            ' and ' + plot if plot else ''))


if __name__ == '__main__':
    main()
