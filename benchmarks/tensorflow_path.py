"""slimnets' TensorFlow path against TFLite/XNNPACK, before and after its CPU rewrite.

One run, on this machine: for MobileNet v1 1.0_224, v2 1.0_224, v3-large
and v3-small (trained-looking batch-norm statistics, folded), at batch 1
and 16, timed in turn (A B C D A B C D ...), --runs rounds after warm-up:

  tflite       the folded graph in TFLite (LiteRT if installed; XNNPACK);
  tensorflow   slimnets' TensorFlow runtime: the folded graph rewritten by
               `runtimes.rewrite_for_tensorflow_cpu` (pointwise
               convolutions as fused MatMuls, global pools as Means,
               hard-swish fused into its convolution), fixed callable;
  unrewritten  the folded graph as it is, same session and callable (the
               TensorFlow runtime before the rewrite);
  default      `Classifier`'s default runtime, 'auto';
  one_thread   (--one-thread-session) the rewritten graph in a session with
               its own one-thread intra-op pool (TF_OVERRIDE_GLOBAL_THREADPOOL=1
               set before TensorFlow starts) run in the caller's thread
               (RunOptions.inter_op_thread_pool = -1): no thread hand-offs.

The order rotates every round.  Each cell is the median (and min, max)
over rounds of (time / TFLite's time in the same round), so that a change
in the machine's load falls on both alike; the median milliseconds are
printed too.  Every runner runs on --threads threads (TensorFlow's
process-wide pools and the runtimes' num_threads; one_thread on one).
Writes tensorflow_path.json (--output-dir).
Run:  .venv/bin/python benchmarks/tensorflow_path.py  (or benchmarks/run.py)
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import harness  # noqa: E402  pylint: disable=wrong-import-position
import runtimes as runtime_benchmark  # noqa: E402  pylint: disable=wrong-import-position

BATCH_SIZES = bench.BATCH_SIZES
IMAGE_SIZE = bench.IMAGE_SIZE
LABELS = ('tflite', 'tensorflow', 'unrewritten', 'default', 'one_thread')


def _unrewritten(graph_def):
    """The folded graph in a session with a fixed callable, not rewritten."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
    graph.finalize()
    session = tf.Session(graph=graph)
    return session.make_callable(graph.get_tensor_by_name('probabilities:0'),
                                 [graph.get_tensor_by_name('input:0')])


def _one_thread(graph_def):
    """The rewritten graph with a one-thread intra-op pool of its own (which
    needs TF_OVERRIDE_GLOBAL_THREADPOOL=1 before TensorFlow's first device),
    called in the caller's thread."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import runtimes  # pylint: disable=import-outside-toplevel

    rewritten, _ = runtimes.rewrite_for_tensorflow_cpu(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(rewritten, name='')
    graph.finalize()
    session = tf.Session(graph=graph, config=tf.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1,
        use_per_session_threads=True))
    call = session.make_callable(
        graph.get_tensor_by_name('probabilities:0'),
        [graph.get_tensor_by_name('input:0')], accept_options=True)
    options = tf.RunOptions(inter_op_thread_pool=-1)
    return lambda images: call(images, options=options)


def measure_network(name, runs, batch_iterations, threads, one_thread=False,
                    batch_sizes=BATCH_SIZES):
    """Everything for one network; runs in its own process (whose
    TF_OVERRIDE_GLOBAL_THREADPOOL the parent set: 1 with one_thread)."""
    thread_settings = harness.apply_threads(threads)
    from slimnets import runtimes  # pylint: disable=import-outside-toplevel
    factory_name = bench.network_entry(name)[0]
    folder = tempfile.mkdtemp(prefix='slimnets-bench-')
    graph_def = runtime_benchmark._folded_graph(factory_name, folder)  # pylint: disable=protected-access
    tensorflow = runtimes.load(graph_def, 'tensorflow', num_threads=threads)
    auto = runtimes.load(graph_def, 'auto', cache_dir=folder,
                         num_threads=threads)
    runners = {'tflite': runtimes.load(graph_def, 'tflite',
                                       num_threads=threads).run,
               'tensorflow': tensorflow.run,
               'unrewritten': _unrewritten(graph_def),
               'default': auto.run}
    if one_thread:
        runners['one_thread'] = _one_thread(graph_def)
    results = {'network': name, 'registry_name': factory_name,
               'published_macs_millions': bench.published_macs(name),
               'threads': dict(thread_settings, all_runners=threads,
                               one_thread=1 if one_thread else None),
               'rewrite': tensorflow.rewrite._asdict(), 'batches': {}}
    for batch_size, outputs, times in bench.time_in_turn(
            runners, runs, batch_iterations, batch_sizes):
        results['batches'][str(batch_size)] = {
            'times_s': times,
            'default_choice': auto.choice(batch_size),
            'max_abs_vs_unrewritten': float(max(np.max(np.abs(
                outputs[label] - outputs['unrewritten']))
                for label in ('tensorflow', 'one_thread') if label in outputs))}
    return results


def summarize(network, ceiling):
    """Cells (checked against the ceiling), median ms and per-round time
    relative to TFLite (median, min, max) for each batch."""
    for batch_size, batch in network['batches'].items():
        times = batch['times_s']
        cells = {label: harness.add_gflops(
            harness.rate_stats(t, int(batch_size)),
            network['published_macs_millions'], ceiling)
            for label, t in times.items()}
        harness.check_cells({'%s %s b%s' % (network['network'], label,
                                            batch_size): cell
                             for label, cell in cells.items()}, ceiling)
        batch['cells'] = cells
        batch['median_ms'] = {label: 1e3 * cell['median_s']
                              for label, cell in cells.items()}
        batch['time_vs_tflite'] = {
            label: harness.ratio_stats(t, times['tflite'])
            for label, t in times.items()}


def table(result):
    """Time relative to TFLite per round, one block per thread count."""
    lines = []
    for one_pass in result['passes']:
        networks = one_pass['networks']
        labels = [label for label in LABELS[1:]
                  if label in networks[0]['batches']['1']['cells']]
        lines += ['%d thread(s); time relative to TFLite in the same round '
                  '(median of %d rounds, min-max; below 1 is faster than '
                  'TFLite)' % (one_pass['threads'], result['options']['runs']),
                  '%-28s %5s ' % ('network', 'batch') +
                  ' '.join('%22s' % label for label in labels) +
                  '  default runs']
        for network in networks:
            for batch_size, batch in sorted(network['batches'].items(),
                                            key=lambda item: int(item[0])):
                lines.append('%-28s %5s ' % (network['network'], batch_size) +
                             ' '.join('%22s' % ('%.2f (%.2f-%.2f)' % (
                                 batch['time_vs_tflite'][label]['median'],
                                 batch['time_vs_tflite'][label]['min'],
                                 batch['time_vs_tflite'][label]['max']))
                                 for label in labels) +
                             '  ' + batch['default_choice'])
        lines += ['TFLite median ms: ' + ', '.join(
            '%s b%s %.2f' % (n['network'].replace('mobilenet_', ''), b,
                             n['batches'][b]['median_ms']['tflite'])
            for n in networks for b in sorted(n['batches'], key=int)),
            'largest |rewritten - unrewritten| on probabilities: %.1e' % max(
                batch['max_abs_vs_unrewritten'] for n in networks
                for batch in n['batches'].values()), '']
    return '\n'.join(lines)


def main():
    parser = bench.argument_parser(__doc__.split('\n')[0], runs=15,
                                   batch_iterations=10)
    parser.add_argument('--one-thread-session', action='store_true',
                        help='also time the one_thread runner (see above)')
    args = bench.apply_quick(parser.parse_args())
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.worker:
        print(json.dumps(measure_network(args.worker, args.runs,
                                         args.batch_iterations,
                                         args.threads[0],
                                         args.one_thread_session,
                                         args.batch_sizes)))
        return
    result = bench.run_passes(
        'tensorflow_path', os.path.abspath(__file__), args, summarize,
        ['--one-thread-session'] if args.one_thread_session else [],
        {'TF_OVERRIDE_GLOBAL_THREADPOOL':
         '1' if args.one_thread_session else '0'})
    result['one_thread_session'] = args.one_thread_session
    path = harness.write_json(
        os.path.join(args.output_dir, 'tensorflow_path.json'), result)
    print(table(result))
    print('wrote %s' % path)


if __name__ == '__main__':
    main()
