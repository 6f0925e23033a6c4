"""Inference speed: slimnets against Keras Applications and the machine.

One run, on this machine and TensorFlow, at --threads threads (every
runner in the worker process: TensorFlow's pools, oneDNN, numpy's BLAS):

1. the machine's ceiling (`harness.ceiling`: fp32 2048x2048 matmuls through
   numpy's BLAS and TensorFlow, and the FMA peak from clock and vector
   width), unless --ceiling-file gives the one `run.py` measured;
2. for MobileNet v1 1.0_224, v2 1.0_224, v3-large and v3-small, at batch 1
   and 16, timed in turn with the order rotating every round (A B C, B C
   A, ...), --runs rounds after warm-up, of:
     slim     slimnets' graph with variables, in a Session (what a user
              building the network and restoring a checkpoint runs),
     frozen   slimnets' inference graph (`slimnets.optimize`: frozen, batch
              norm folded, conv + bias + ReLU6 for the CPU kernels to fuse),
     frozen_xla  the same graph with XLA auto-clustering
              (FrozenModel(jit_compile=True), TF_XLA_FLAGS=
              --tf_xla_cpu_global_jit); kept only when the run metadata
              shows XLA cluster ops (_XlaCompile/_XlaRun/XlaLaunch), else
              dropped and recorded as not compiled,
     keras    the same architecture from `keras.applications` (weights=None,
              same input size) called inside a `tf.function`;
   each cell: runs, min/median/max seconds, images/s, achieved GFLOP/s
   (published MACs from slimnets.registry x 2 x images/s) and its fraction
   of the ceiling (a cell above the ceiling fails the run); the ratios to
   Keras and slim per round (median, min, max);
3. per network: graph build time, checkpoint restore time and peak memory
   (each network is measured in its own process).

Writes speed.json and images_per_second.png (--output-dir) and prints a
table.  Run:  .venv/bin/python benchmarks/bench.py  (or benchmarks/run.py)
"""

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  pylint: disable=wrong-import-position

NETWORKS = collections.OrderedDict([
    # name: (slimnets.registry name (its published MACs are the ones used),
    #        keras.applications constructor, keras kwargs)
    ('mobilenet_v1_1.0_224', ('mobilenet_v1', 'MobileNet', {})),
    ('mobilenet_v2_1.0_224', ('mobilenet_v2', 'MobileNetV2', {})),
    ('mobilenet_v3_large_1.0_224', ('mobilenet_v3_large', 'MobileNetV3Large',
                                    {'include_preprocessing': False})),
    ('mobilenet_v3_small_1.0_224', ('mobilenet_v3_small', 'MobileNetV3Small',
                                    {'include_preprocessing': False})),
])
# --quick: the smallest published network (41 M MACs), not in the tables.
QUICK_NETWORK = 'mobilenet_v1_0.25_224'
EXTRA_NETWORKS = {
    QUICK_NETWORK: ('mobilenet_v1_025', 'MobileNet', {'alpha': 0.25}),
}
BATCH_SIZES = (1, 16)
IMAGE_SIZE = 224
XLA_CLUSTER_OPS = ('_XlaCompile', '_XlaRun', 'XlaLaunch', '_XlaMerge')
XLA_FLAGS = '--tf_xla_cpu_global_jit'


def network_entry(name):
    """(registry name, keras constructor, keras kwargs) of a benchmark
    network name."""
    return NETWORKS[name] if name in NETWORKS else EXTRA_NETWORKS[name]


def published_macs(name):
    """Published MACs (millions) of a benchmark network: the registry's."""
    return harness.published_macs(network_entry(name)[0])


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    from slimnets import runtimes  # pylint: disable=import-outside-toplevel

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
    frozen_model = runtimes.TensorFlowRuntime(frozen, rewrite=False)
    jit_model = runtimes.TensorFlowRuntime(frozen, rewrite=False, jit_compile=True)

    def run_slim(batch):
        return session.run(probabilities, {images: batch})

    measured['models'] = {'frozen': frozen_model, 'frozen_xla': jit_model}
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


def time_in_turn(runners, runs, batch_iterations, batch_sizes=BATCH_SIZES):
    """Times `runners` ({label: run(images) -> outputs}) in turn, the order
    rotating every round (A B C, B C A, C A B, ...: `harness.rotation`), so
    that a change in the machine's load falls on all alike and no runner
    always follows the same neighbour.

    For each of `batch_sizes`, a fixed random batch [N, IMAGE_SIZE,
    IMAGE_SIZE, 3] in [-1, 1]; three warm-up calls per runner (graph
    tracing, `auto`'s measurement), then `runs` rounds (batch 1:
    `batch_iterations` calls per timing).

    Yields:
      (batch size, {label: last outputs}, {label: [seconds per call, one
      per round, in round order]}).
    """
    rng = np.random.RandomState(0)
    for batch_size in batch_sizes:
        batch = rng.uniform(-1, 1, [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3]
                            ).astype(np.float32)
        iterations = batch_iterations if batch_size == 1 else 1
        outputs = {}
        for label, run in runners.items():
            for _ in range(3):
                outputs[label] = run(batch)
        times = {label: [] for label in runners}
        for round_index in range(runs):
            for label in harness.rotation(runners, round_index):
                run = runners[label]
                start = time.perf_counter()
                for _ in range(iterations):
                    run(batch)
                times[label].append((time.perf_counter() - start) / iterations)
        yield batch_size, outputs, times


def xla_cluster_ops(session, fetch, feed):
    """{op: count} of XLA cluster ops in one traced run of `session`: in the
    partition graphs that ran and in the step stats (no XLA: {})."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE,
                            output_partition_graphs=True)
    metadata = tf.RunMetadata()
    session.run(fetch, feed, options=options, run_metadata=metadata)
    counts = collections.Counter()
    for graph in metadata.partition_graphs:
        for node in graph.node:
            if node.op in XLA_CLUSTER_OPS:
                counts[node.op] += 1
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            if any(op in node.timeline_label for op in XLA_CLUSTER_OPS):
                counts['step_stats'] += 1
    return dict(counts)


def _xla_proof(models):
    """XLA cluster ops of the frozen and frozen_xla sessions on one image."""
    probe = np.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3], np.float32)
    proof = {}
    for label, model in models.items():
        proof[label] = xla_cluster_ops(model.session,
                                       model.outputs['probabilities'],
                                       {model.input: probe})
    return {'flags': os.environ.get('TF_XLA_FLAGS'),
            'cluster_ops': proof,
            'compiled': bool(proof.get('frozen_xla')) and
            not proof.get('frozen')}


def measure_network(name, runs, batch_iterations, threads,
                    batch_sizes=BATCH_SIZES):
    """Everything for one network; runs in its own process."""
    thread_settings = harness.apply_threads(threads)
    factory_name, constructor, kwargs = network_entry(name)
    runners, measured = _slim_runners(factory_name)
    xla = _xla_proof(measured.pop('models'))
    if not xla['compiled']:
        del runners['frozen_xla']   # not XLA: no column
    measured['peak_rss_mb_slimnets'] = peak_rss_mb()
    runners['keras'], measured['keras_build_s'] = _keras_runner(constructor,
                                                                kwargs)
    results = {'network': name, 'registry_name': factory_name,
               'published_macs_millions': published_macs(name),
               'threads': dict(thread_settings, all_runners=threads),
               'xla': xla, 'build': measured, 'batches': {}}
    for batch_size, outputs, times in time_in_turn(runners, runs,
                                                   batch_iterations,
                                                   batch_sizes):
        cell = {'times_s': times, 'max_abs_vs_slim': {
            label: float(np.max(np.abs(outputs[label] - outputs['slim'])))
            for label in runners if label not in ('slim', 'keras')}}
        results['batches'][str(batch_size)] = cell
    results['peak_rss_mb_total'] = peak_rss_mb()
    return results


def summarize(network, batch_size, ceiling):
    """Cells (harness.rate_stats + GFLOP/s and ceiling fractions) and
    per-round ratios of one network's batch, from its times; checks the
    ceiling (harness.CeilingExceeded)."""
    raw = network['batches'][str(batch_size)]
    times = raw['times_s']
    cells = {label: harness.add_gflops(
        harness.rate_stats(t, batch_size),
        network['published_macs_millions'], ceiling)
        for label, t in times.items()}
    harness.check_cells({'%s %s b%d' % (network['network'], label, batch_size):
                         cell for label, cell in cells.items()}, ceiling)
    ratios = {}
    for label in times:
        if label not in ('slim', 'keras'):
            ratios['%s_vs_keras' % label] = harness.ratio_stats(
                times['keras'], times[label])
            ratios['%s_vs_slim' % label] = harness.ratio_stats(
                times['slim'], times[label])
    return {'cells': cells, 'speedup': ratios,
            'max_abs_vs_slim': raw['max_abs_vs_slim']}


def _worker(args):
    print(json.dumps(measure_network(args.worker, args.runs,
                                     args.batch_iterations, args.threads[0],
                                     args.batch_sizes)))


def plot_images_per_second(networks, labels, batch_sizes, path, title):
    """A bar chart of median images/s, one panel per batch size, one bar
    per label and network ({'network', 'batches': {b: {'cells': ...}}});
    None (and a line saying why) without matplotlib."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use('Agg')
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return None
    figure, axes = pyplot.subplots(1, len(batch_sizes), figsize=(13, 4.5),
                                   squeeze=False)
    width = 0.8 / len(labels)
    for axis, batch_size in zip(axes[0], batch_sizes):
        names = [r['network'].replace('mobilenet_', '').replace('_1.0_224', '')
                 for r in networks]
        positions = np.arange(len(names))
        for offset, label in enumerate(labels):
            values = [r['batches'][str(batch_size)]['cells'].get(
                label, {}).get('images_per_s', 0) for r in networks]
            axis.bar(positions + (offset - (len(labels) - 1) / 2.0) * width,
                     values, width, label=label)
        axis.set_xticks(positions)
        axis.set_xticklabels(names)
        axis.set_title('batch %d' % batch_size)
        axis.set_ylabel('images / s')
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def default_threads():
    """All the cores this process may use."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def argument_parser(description, runs, batch_iterations):
    """The options every benchmark here shares (--runs, --batch-iterations,
    --networks, --threads, --batch-sizes, --quick, --ceiling-file,
    --output-dir and the hidden --worker)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--runs', type=int, default=runs,
                        help='timed rounds per batch size')
    parser.add_argument('--batch-iterations', type=int,
                        default=batch_iterations,
                        help='forward passes per timed run at batch 1')
    parser.add_argument('--networks', nargs='+', default=list(NETWORKS),
                        choices=list(NETWORKS) + list(EXTRA_NETWORKS))
    parser.add_argument('--batch-sizes', nargs='+', type=int,
                        default=list(BATCH_SIZES))
    parser.add_argument('--threads', nargs='+', type=int,
                        default=[default_threads()],
                        help='thread counts, one pass each (every runtime '
                             'runs on the same count); default all cores')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 2 rounds of %s, not for '
                             'publishing' % QUICK_NETWORK)
    parser.add_argument('--ceiling-file',
                        help="run.py's ceiling.json (else measured here)")
    parser.add_argument('--output-dir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser


def apply_quick(args):
    """--quick: the smallest network, 2 rounds, 1 iteration."""
    if args.quick:
        args.networks = [QUICK_NETWORK]
        args.runs = min(args.runs, 2)
        args.batch_iterations = 1
    return args


def worker_env(threads, extra=None):
    """A worker's environment: `threads` everywhere
    (harness.thread_env), TF_OVERRIDE_GLOBAL_THREADPOOL=1 as the command
    line sets it (unless set), plus `extra`."""
    env = harness.thread_env(threads)
    env.setdefault('TF_OVERRIDE_GLOBAL_THREADPOOL', '1')
    env.update(extra or {})
    return env


def measure_each(script, args, threads, extra_args=(), extra_env=None):
    """Runs `script --worker NAME` (and `extra_args`) for each of
    `args.networks` in a fresh process on `threads` threads (so each
    network's memory and threads are its own); returns the JSON each
    worker printed last."""
    measured = []
    for name in args.networks:
        print('measuring %s on %d thread(s) ...' % (name, threads),
              file=sys.stderr)
        completed = subprocess.run(
            [sys.executable, script, '--worker', name, '--runs',
             str(args.runs), '--batch-iterations', str(args.batch_iterations),
             '--threads', str(threads), '--batch-sizes'] +
            [str(b) for b in args.batch_sizes] + list(extra_args),
            env=worker_env(threads, extra_env),
            capture_output=True, text=True, check=False)
        measured.append(harness.worker_json(completed, 'measuring %s' % name))
    return measured


def run_passes(kind, script, args, summarize_network, extra_args=(),
               extra_env=None):
    """One pass per --threads value: the ceiling for it, every network in
    its own worker, each network summarized (`summarize_network(network,
    ceiling)`, which checks the ceiling).  Returns the result file's dict
    (harness.header/finish: machine, versions, load before and after)."""
    result = harness.header(kind, {
        'runs': args.runs, 'batch_iterations': args.batch_iterations,
        'networks': args.networks, 'batch_sizes': args.batch_sizes},
        args.threads, args.quick)
    result['passes'] = []
    for threads in args.threads:
        ceiling = harness.load_ceiling(args.ceiling_file, threads,
                                       3 if args.quick else 25)
        networks = measure_each(script, args, threads, extra_args, extra_env)
        for network in networks:
            summarize_network(network, ceiling)
        result['passes'].append({
            'threads': threads, 'ceiling': ceiling,
            'worker_environment': harness.environment(
                worker_env(threads, extra_env)),
            'load_after': harness.load_average(), 'networks': networks})
    return harness.finish(result)


def _summarize_speed(network, ceiling):
    for batch_size in list(network['batches']):
        network['batches'][batch_size].update(
            summarize(network, int(batch_size), ceiling))


def table(result):
    """The speed table of a result, one block per thread count."""
    lines = []
    for one_pass in result['passes']:
        ceiling = one_pass['ceiling']
        peak = ceiling.get('fma_peak')
        lines += ['%d thread(s); ceiling %.1f GFLOP/s (fp32 %dx%d matmul: numpy '
                  '%.1f, TensorFlow %.1f)%s' % (
                      one_pass['threads'], ceiling['gflops'],
                      ceiling['matmul_size'], ceiling['matmul_size'],
                      ceiling['numpy_gflops'], ceiling['tensorflow_gflops'],
                      '; FMA peak %.1f' % peak['gflops'] if peak else ''),
                  '%-28s %5s %13s %13s %13s %13s %6s %6s %7s %5s' % (
                      'network', 'batch', 'slim/s', 'frozen/s', 'xla/s',
                      'keras/s', 'xkeras', 'xslim', 'GFLOP/s', 'ceil')]
        for network in one_pass['networks']:
            for batch_size, batch in sorted(network['batches'].items(),
                                            key=lambda item: int(item[0])):
                cells = batch['cells']

                def rate(label, cells=cells):
                    if label not in cells:
                        return '%13s' % '-'
                    cell = cells[label]
                    return '%13s' % ('%.1f %.0f-%.0f' % (
                        cell['images_per_s'], cell['images_per_s_min'],
                        cell['images_per_s_max']))
                frozen = cells['frozen']
                lines.append('%-28s %5s %s %s %s %s %6.2f %6.2f %7.1f %4.0f%%' % (
                    network['network'], batch_size, rate('slim'),
                    rate('frozen'), rate('frozen_xla'), rate('keras'),
                    batch['speedup']['frozen_vs_keras']['median'],
                    batch['speedup']['frozen_vs_slim']['median'],
                    frozen['gflops'], 100 * frozen['ceiling_fraction']))
        lines.append('')
    return '\n'.join(lines)


def main():
    parser = argument_parser(__doc__.split('\n')[0], runs=12,
                             batch_iterations=5)
    args = apply_quick(parser.parse_args())
    if args.worker:
        _worker(args)
        return
    result = run_passes('speed', os.path.abspath(__file__), args,
                        _summarize_speed, extra_env={'TF_XLA_FLAGS': XLA_FLAGS})
    path = harness.write_json(os.path.join(args.output_dir, 'speed.json'),
                              result)
    plot = plot_images_per_second(
        result['passes'][0]['networks'],
        ('slim', 'frozen', 'frozen_xla', 'keras'), args.batch_sizes,
        os.path.join(args.output_dir, 'images_per_second.png'),
        'MobileNets at 224x224, %d thread(s)' % args.threads[0])
    print(table(result))
    print('wrote %s%s' % (path, ' and ' + plot if plot else ''))


if __name__ == '__main__':
    main()
