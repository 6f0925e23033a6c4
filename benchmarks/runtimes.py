"""Inference speed of every runtime slimnets offers, against Keras Applications.

One run, on this machine: for MobileNet v1 1.0_224, v2 1.0_224, v3-large
and v3-small (trained-looking batch-norm statistics, folded), at batch 1
and 16, timed in turn with the order rotating every round, --runs rounds
after warm-up, every runtime on the same --threads threads (recorded), of:

  default      slimnets' default path, `Classifier`'s: runtime 'auto' (the
               fastest installed runtime for the batch size, measured once);
  tensorflow   the folded graph in a TensorFlow session (fixed callable);
  tflite       the same graph in TFLite (LiteRT if installed; XNNPACK);
  onnxruntime  the same graph through tf2onnx in ONNX Runtime;
  openvino     the same graph through OpenVINO (CPU, float32);
  keras        the same architecture from `keras.applications` (weights=None,
               same input size) called inside a `tf.function`.

Runtimes that are not installed are left out.  Each cell: runs,
min/median/max, images/s, GFLOP/s from the published MACs and its
fraction of the ceiling; per round, the default path's speed relative to
the fastest peer (by median) and to TensorFlow (median, min, max).  Prints
a table, writes runtimes.json and runtimes.png (--output-dir).  Each
network is measured in its own process.
Run:  .venv/bin/python benchmarks/runtimes.py  (or benchmarks/run.py)
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import harness  # noqa: E402  pylint: disable=wrong-import-position

BATCH_SIZES = bench.BATCH_SIZES
IMAGE_SIZE = bench.IMAGE_SIZE
LABELS = ('default', 'tensorflow', 'tflite', 'onnxruntime', 'openvino',
          'keras')


def _folded_graph(factory_name, folder):
    """A checkpoint with trained-looking statistics, folded."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import inference  # pylint: disable=import-outside-toplevel
    from slimnets import optimize  # pylint: disable=import-outside-toplevel
    spec = inference.ModelSpec(factory_name, {}, IMAGE_SIZE, 1001)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        inference.build_network(spec, images)
        saver = tf.train.Saver()
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            bench._realistic_statistics(session)  # pylint: disable=protected-access
            prefix = saver.save(session, os.path.join(folder, 'model.ckpt'),
                                write_meta_graph=False)
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix)
    return graph_def


def measure_network(name, runs, batch_iterations, threads,
                    batch_sizes=BATCH_SIZES):
    """Everything for one network; runs in its own process."""
    thread_settings = harness.apply_threads(threads)
    from slimnets import runtimes  # pylint: disable=import-outside-toplevel
    factory_name, constructor, kwargs = bench.network_entry(name)
    folder = tempfile.mkdtemp(prefix='slimnets-bench-')
    graph_def = _folded_graph(factory_name, folder)
    runners, loaded = {}, {}
    for label in LABELS[1:-1]:
        if runtimes.is_installed(label):
            start = time.perf_counter()
            loaded[label] = runtimes.load(graph_def, label,
                                          num_threads=threads)
            runners[label] = loaded[label].run
            print('%s: %s loaded in %.1f s' % (name, label,
                                              time.perf_counter() - start),
                  file=sys.stderr)
    auto = runtimes.load(graph_def, 'auto', cache_dir=folder,
                         num_threads=threads)
    runners = dict([('default', auto.run)] + list(runners.items()))
    runners['keras'], _ = bench._keras_runner(constructor, kwargs)  # pylint: disable=protected-access
    results = {'network': name, 'registry_name': factory_name,
               'published_macs_millions': bench.published_macs(name),
               'threads': dict(thread_settings, all_runners=threads, **{
                   label: getattr(runtime, 'num_threads', None)
                   for label, runtime in loaded.items()}),
               'batches': {}}
    for batch_size, outputs, times in bench.time_in_turn(
            runners, runs, batch_iterations, batch_sizes):
        results['batches'][str(batch_size)] = {
            'times_s': times,
            'default_choice': auto.choice(batch_size),
            'described': {label: runtime.describe(batch_size)
                          for label, runtime in loaded.items()},
            'max_abs_vs_tensorflow': {
                label: float(np.max(np.abs(outputs[label] -
                                           outputs['tensorflow'])))
                for label in runners if label != 'keras'}}
    return results


def summarize(network, ceiling):
    """Adds cells (with GFLOP/s, checked against the ceiling) and per-round
    ratios to each batch of a worker's result."""
    for batch_size, batch in network['batches'].items():
        times = batch['times_s']
        cells = {label: harness.add_gflops(
            harness.rate_stats(t, int(batch_size)),
            network['published_macs_millions'], ceiling)
            for label, t in times.items()}
        harness.check_cells({'%s %s b%s' % (network['network'], label,
                                            batch_size): cell
                             for label, cell in cells.items()}, ceiling)
        peers = [label for label in times if label not in ('default', 'keras')]
        fastest = min(peers, key=lambda label: cells[label]['median_s'])
        batch['cells'] = cells
        batch['fastest_peer'] = fastest
        batch['speed_vs_tensorflow'] = {
            label: harness.ratio_stats(times['tensorflow'], t)
            for label, t in times.items()}
        batch['default_vs_fastest_peer'] = harness.ratio_stats(
            times[fastest], times['default'])
        batch['default_vs_keras'] = harness.ratio_stats(
            times['keras'], times['default'])


def table(result):
    """images/s (median, and in brackets the speed relative to slimnets'
    TensorFlow path, per round), one block per thread count."""
    lines = []
    for one_pass in result['passes']:
        networks = one_pass['networks']
        labels = [label for label in LABELS
                  if label in networks[0]['batches']['1']['cells']]
        lines += ['%d thread(s) for every runtime; images/s (median of %d '
                  'rounds), in brackets relative to tensorflow' % (
                      one_pass['threads'], result['options']['runs']),
                  '%-28s %5s ' % ('network', 'batch') +
                  ' '.join('%16s' % label for label in labels) +
                  '  default runs  default/fastest peer (min-max)']
        for network in networks:
            for batch_size, batch in sorted(network['batches'].items(),
                                            key=lambda item: int(item[0])):
                cells = ['%8.1f (%4.2f)' % (
                    batch['cells'][label]['images_per_s'],
                    batch['speed_vs_tensorflow'][label]['median'])
                    for label in labels]
                spread = batch['default_vs_fastest_peer']
                lines.append('%-28s %5s ' % (network['network'], batch_size) +
                             ' '.join('%16s' % c for c in cells) +
                             '  %-12s %.2f (%.2f-%.2f) vs %s' % (
                                 batch['default_choice'], spread['median'],
                                 spread['min'], spread['max'],
                                 batch['fastest_peer']))
        lines.append('')
    return '\n'.join(lines)


def main():
    parser = bench.argument_parser(__doc__.split('\n')[0], runs=12,
                                   batch_iterations=5)
    args = bench.apply_quick(parser.parse_args())
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.worker:
        print(json.dumps(measure_network(args.worker, args.runs,
                                         args.batch_iterations, args.threads[0],
                                         args.batch_sizes)))
        return
    result = bench.run_passes('runtimes', os.path.abspath(__file__), args,
                              summarize)
    path = harness.write_json(os.path.join(args.output_dir, 'runtimes.json'),
                              result)
    networks = result['passes'][0]['networks']
    plot = bench.plot_images_per_second(
        networks, [label for label in LABELS
                   if label in networks[0]['batches']['1']['cells']],
        args.batch_sizes, os.path.join(args.output_dir, 'runtimes.png'),
        'MobileNets at 224x224 by runtime, %d thread(s)' % args.threads[0])
    print(table(result))
    print('wrote %s%s' % (path, ' and ' + plot if plot else ''))


if __name__ == '__main__':
    main()
