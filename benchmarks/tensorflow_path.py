"""slimnets' TensorFlow path against TFLite/XNNPACK, before and after its CPU rewrite.

One run, on this machine: for MobileNet v1 1.0_224, v2 1.0_224, v3-large
and v3-small (trained-looking batch-norm statistics, folded), at batch 1
and 16, timed in turn (A B C D A B C D ...), --runs rounds after warm-up:

  tflite       the folded graph in TFLite (LiteRT if installed; XNNPACK);
  tensorflow   slimnets' TensorFlow runtime: the folded graph rewritten by
               `optimize.rewrite_for_tensorflow_cpu` (pointwise
               convolutions as fused MatMuls, global pools as Means,
               hard-swish fused into its convolution), fixed callable;
  unrewritten  the folded graph as it is, same session and callable (the
               TensorFlow runtime before the rewrite);
  default      `Classifier`'s default runtime, 'auto';
  one_thread   (--one-thread-session) the rewritten graph in a session with
               its own one-thread intra-op pool (TF_OVERRIDE_GLOBAL_THREADPOOL=1
               set before TensorFlow starts) run in the caller's thread
               (RunOptions.inter_op_thread_pool = -1): no thread hand-offs.

Each cell is the median over rounds of (time / TFLite's time in the same
round), so that a change in the machine's load falls on both alike; the
median milliseconds are printed too.  --intra-op-threads sets TensorFlow's
(process-wide) intra-op thread count first; TFLite keeps its default.
Writes tensorflow_path.json (--output-dir).
Run:  .venv/bin/python benchmarks/tensorflow_path.py
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
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

    from slimnets import optimize  # pylint: disable=import-outside-toplevel
    rewritten, _ = optimize.rewrite_for_tensorflow_cpu(graph_def)
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


def measure_network(name, runs, batch_iterations, intra_op_threads,
                    one_thread=False):
    """Everything for one network; runs in its own process."""
    if one_thread:  # read once, when TensorFlow makes its first device
        os.environ['TF_OVERRIDE_GLOBAL_THREADPOOL'] = '1'
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    from slimnets import runtimes  # pylint: disable=import-outside-toplevel
    factory_name = bench.NETWORKS[name][0]
    folder = tempfile.mkdtemp(prefix='slimnets-bench-')
    graph_def = runtime_benchmark._folded_graph(factory_name, folder)  # pylint: disable=protected-access
    tensorflow = runtimes.load(graph_def, 'tensorflow')
    auto = runtimes.load(graph_def, 'auto', cache_dir=folder)
    runners = {'tflite': runtimes.load(graph_def, 'tflite').run,
               'tensorflow': tensorflow.run,
               'unrewritten': _unrewritten(graph_def),
               'default': auto.run}
    if one_thread:
        runners['one_thread'] = _one_thread(graph_def)
    results = {'network': name, 'rewrite': tensorflow.rewrite._asdict(),
               'batches': {}}
    for batch_size, outputs, times in bench.time_in_turn(
            runners, runs, batch_iterations):
        lite = np.array(times['tflite'])
        results['batches'][str(batch_size)] = {
            'median_ms': {label: 1e3 * float(np.median(t))
                          for label, t in times.items()},
            'time_vs_tflite': {label: float(np.median(np.array(t) / lite))
                               for label, t in times.items()},
            'default_choice': auto.choice(batch_size),
            'max_abs_vs_unrewritten': float(max(np.max(np.abs(
                outputs[label] - outputs['unrewritten']))
                for label in ('tensorflow', 'one_thread') if label in outputs))}
    return results


def _table(results):
    labels = [label for label in LABELS[1:]
              if label in results['networks'][0]['batches']['1']['median_ms']]
    lines = ['time relative to TFLite in the same round (median of %d '
             'rounds; below 1 is faster than TFLite), median ms in brackets'
             % results['runs'], '',
             '%-28s %5s ' % ('network', 'batch') +
             ' '.join('%18s' % label for label in labels) +
             '  default runs']
    for result in results['networks']:
        for batch_size in BATCH_SIZES:
            cell = result['batches'][str(batch_size)]
            lines.append('%-28s %5d ' % (result['network'], batch_size) + ' '.join(
                '%18s' % ('%.2f (%.2f ms)' % (cell['time_vs_tflite'][label],
                                              cell['median_ms'][label]))
                for label in labels) + '  ' + cell['default_choice'])
    lines += ['', 'TFLite median ms: ' + ', '.join(
        '%s b%d %.2f' % (r['network'].replace('mobilenet_', ''), b,
                         r['batches'][str(b)]['median_ms']['tflite'])
        for r in results['networks'] for b in BATCH_SIZES),
        'rewrites: ' + ', '.join('%s %s' % (
            r['network'].replace('mobilenet_', ''), r['rewrite'])
            for r in results['networks']),
        'largest |rewritten - unrewritten| on probabilities: %.1e' % max(
            r['batches'][str(b)]['max_abs_vs_unrewritten']
            for r in results['networks'] for b in BATCH_SIZES)]
    return '\n'.join(lines)


def main():
    parser = bench.argument_parser(__doc__.split('\n')[0], runs=15,
                                   batch_iterations=10)
    parser.add_argument('--intra-op-threads', type=int, default=0,
                        help="TensorFlow's intra-op threads (0: its default)")
    parser.add_argument('--one-thread-session', action='store_true',
                        help='also time the one_thread runner (see above)')
    args = parser.parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.worker:
        print(json.dumps(measure_network(args.worker, args.runs,
                                         args.batch_iterations,
                                         args.intra_op_threads,
                                         args.one_thread_session)))
        return
    results = {'cpu_count': os.cpu_count(), 'runs': args.runs,
               'intra_op_threads': args.intra_op_threads,
               'one_thread_session': args.one_thread_session, 'networks': []}
    results['networks'] = bench.measure_each(
        os.path.abspath(__file__), args,
        ['--intra-op-threads', str(args.intra_op_threads)] +
        (['--one-thread-session'] if args.one_thread_session else []))
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, 'tensorflow_path.json')
    with open(path, 'w') as handle:
        json.dump(results, handle, indent=1)
    print(_table(results))
    print('\nwrote %s' % path)


if __name__ == '__main__':
    main()
