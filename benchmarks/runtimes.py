"""Inference speed of every runtime slimnets offers, against Keras Applications.

One run, on this machine: for MobileNet v1 1.0_224, v2 1.0_224, v3-large
and v3-small (trained-looking batch-norm statistics, folded), at batch 1
and 16, timed in turn (A B C ... A B C ...), the median of --runs runs after
warm-up, of:

  default      slimnets' default path, `Classifier`'s: runtime 'auto' (the
               fastest installed runtime for the batch size, measured once);
  tensorflow   the folded graph in a TensorFlow session (fixed callable);
  tflite       the same graph in TFLite (LiteRT if installed; XNNPACK);
  onnxruntime  the same graph through tf2onnx in ONNX Runtime;
  openvino     the same graph through OpenVINO (CPU, float32);
  keras        the same architecture from `keras.applications` (weights=None,
               same input size) called inside a `tf.function`.

Runtimes that are not installed are left out.  Prints images/s and each
runtime's speed relative to slimnets' TensorFlow path, writes
runtimes.json and runtimes.png (--output-dir).  Each network is measured
in its own process.  Run:  .venv/bin/python benchmarks/runtimes.py
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position

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


def measure_network(name, runs, batch_iterations):
    """Everything for one network; runs in its own process."""
    from slimnets import runtimes  # pylint: disable=import-outside-toplevel
    factory_name, constructor, kwargs, _ = bench.NETWORKS[name]
    folder = tempfile.mkdtemp(prefix='slimnets-bench-')
    graph_def = _folded_graph(factory_name, folder)
    runners, loaded = {}, {}
    for label in LABELS[1:-1]:
        if runtimes.is_installed(label):
            start = time.perf_counter()
            loaded[label] = runtimes.load(graph_def, label)
            runners[label] = loaded[label].run
            print('%s: %s loaded in %.1f s' % (name, label,
                                              time.perf_counter() - start),
                  file=sys.stderr)
    auto = runtimes.load(graph_def, 'auto', cache_dir=folder)
    runners = dict([('default', auto.run)] + list(runners.items()))
    runners['keras'], _ = bench._keras_runner(constructor, kwargs)  # pylint: disable=protected-access
    results = {'network': name, 'batches': {}}
    for batch_size, outputs, times in bench.time_in_turn(
            runners, runs, batch_iterations):
        timing = {label: {'median_s': float(np.median(t)),
                          'images_per_s': batch_size / float(np.median(t))}
                  for label, t in times.items()}
        timing['default_choice'] = auto.choice(batch_size)
        timing['max_abs_vs_tensorflow'] = {
            label: float(np.max(np.abs(outputs[label] -
                                       outputs['tensorflow'])))
            for label in runners if label != 'keras'}
        results['batches'][str(batch_size)] = timing
    return results


def _table(results):
    labels = [label for label in LABELS
              if label in results['networks'][0]['batches']['1']]
    lines = ['images/s (and, in brackets, speed relative to slimnets\' '
             'TensorFlow path)', '',
             '%-28s %5s ' % ('network', 'batch') +
             ' '.join('%16s' % label for label in labels) + '  default runs']
    for result in results['networks']:
        for batch_size in BATCH_SIZES:
            timing = result['batches'][str(batch_size)]
            base = timing['tensorflow']['images_per_s']
            cells = ['%8.1f (%4.2f)' % (timing[label]['images_per_s'],
                                        timing[label]['images_per_s'] / base)
                     for label in labels]
            lines.append('%-28s %5d ' % (result['network'], batch_size) +
                         ' '.join('%16s' % c for c in cells) +
                         '  ' + timing['default_choice'])
    lines += ['', 'largest |probabilities - tensorflow|:']
    for result in results['networks']:
        for batch_size in BATCH_SIZES:
            differences = result['batches'][str(batch_size)][
                'max_abs_vs_tensorflow']
            lines.append('%-28s %5d  %s' % (
                result['network'], batch_size, ', '.join(
                    '%s %.1e' % item for item in sorted(differences.items())
                    if item[0] != 'tensorflow')))
    return '\n'.join(lines)


def main():
    parser = bench.argument_parser(__doc__.split('\n')[0], runs=12,
                                   batch_iterations=5)
    args = parser.parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.worker:
        print(json.dumps(measure_network(args.worker, args.runs,
                                         args.batch_iterations)))
        return
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    results = {'tensorflow': tf.__version__, 'cpu_count': os.cpu_count(),
               'runs': args.runs, 'networks': []}
    results['networks'] = bench.measure_each(os.path.abspath(__file__), args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, 'runtimes.json'), 'w') as handle:
        json.dump(results, handle, indent=1)
    plot = bench.plot_images_per_second(
        results, [label for label in LABELS
                  if label in results['networks'][0]['batches']['1']],
        os.path.join(args.output_dir, 'runtimes.png'),
        'MobileNets at 224x224 by runtime')
    print(_table(results))
    print('\nwrote %s%s' % (os.path.join(args.output_dir, 'runtimes.json'),
                            ' and ' + plot if plot else ''))


if __name__ == '__main__':
    main()
