"""The main job end to end: classify and evaluate a folder of JPEGs.

One run, on this machine, over --images generated JPEGs (camera-like
sizes from 500x375 to 1024x768, landscape and portrait, deterministic for
--seed; in 10 ImageNet-synset class folders), at batch --batch-size and
224x224, MobileNet v2 1.0 (a checkpoint with trained-looking batch-norm
statistics, made here: the speed does not depend on the weights):

  classify      `Classifier(...).classify_files(paths)`: what `slimnets
                classify` runs (read, decode, central crop, resize, the
                network through the default runtime);
  eval          `evaluation.evaluate(...)`: what `slimnets eval` runs (a
                tf.data pipeline decoding in parallel, then the network);
  keras         the same work the way a Keras user writes it:
                `keras.utils.image_dataset_from_directory` (decode, resize,
                batch) scaled to [-1, 1], then
                `keras.applications.MobileNetV2(weights=None).predict`;
  network       slimnets' network alone (the classify variant's runtime) on
                batches already in memory;
  keras_network the Keras model alone (`predict_on_batch`) on batches
                already in memory.

Each variant runs in its own process (peak memory: its ru_maxrss), one
after another, --rounds rounds with the order rotating; images/s is timed
after the setup (graph build, restore, the runtime's choice) except
`wall_s`, the whole of a run (for eval, the end of building evaluate's
Classifier is noted by a subclass in the worker).  Writes main_job.json
(--output-dir) and prints a table.
Run:  .venv/bin/python benchmarks/main_job.py  (or benchmarks/run.py)
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import harness  # noqa: E402  pylint: disable=wrong-import-position

VARIANTS = ('classify', 'eval', 'keras', 'network', 'keras_network')
NETWORK = 'mobilenet_v2'
KERAS_MODEL = 'MobileNetV2'
IMAGE_SIZE = 224
CLASSES = 10
# (width, height) bounds of the generated photos, 4:3 like a camera's.
SMALLEST = (500, 375)
LARGEST = (1024, 768)


def image_sizes(count, seed=0):
    """[(width, height)] of `count` camera-like photos: 4:3, long side
    from 500 to 1024 px, one in four portrait."""
    rng = np.random.RandomState(seed)
    sizes = []
    for index in range(count):
        width = int(rng.randint(SMALLEST[0], LARGEST[0] + 1))
        height = int(round(width * 3 / 4.0))
        sizes.append((height, width) if index % 4 == 3 else (width, height))
    return sizes


def make_images(folder, count, seed=0, classes=CLASSES, names=None):
    """Writes `count` JPEGs (quality 90) into `classes` class folders of
    `folder` (named `names`, default ImageNet synsets), deterministically;
    reuses a complete folder of the same count and seed.  Returns the
    sorted list of paths."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from slimnets import labels  # pylint: disable=import-outside-toplevel
    manifest = os.path.join(folder, 'manifest.json')
    wanted = {'count': count, 'seed': seed}
    if os.path.exists(manifest):
        with open(manifest) as handle:
            if json.load(handle) == wanted:
                return list_images(folder)
    synsets = names or labels.imagenet_synsets()[1:classes + 1]
    rng = np.random.RandomState(seed)
    for synset in synsets:
        os.makedirs(os.path.join(folder, synset), exist_ok=True)
    for index, (width, height) in enumerate(image_sizes(count, seed)):
        # Smooth colour fields plus sensor-like noise: JPEGs of a
        # photo-like size (100-300 kB at these sizes), not flat ones.
        coarse = rng.uniform(0, 255, (1, 6, 8, 3)).astype(np.float32)
        pixels = tf.image.resize(coarse, (height, width))[0].numpy()
        pixels += rng.normal(0, 12, pixels.shape)
        data = tf.io.encode_jpeg(np.clip(pixels, 0, 255).astype(np.uint8),
                                 quality=90).numpy()
        path = os.path.join(folder, synsets[index % len(synsets)],
                            'img_%05d.jpg' % index)
        with open(path, 'wb') as handle:
            handle.write(data)
    harness.write_json(manifest, wanted)
    return list_images(folder)


def list_images(folder):
    return sorted(os.path.join(root, name)
                  for root, _, names in os.walk(folder)
                  for name in names if name.endswith('.jpg'))


def make_checkpoint(folder, network=NETWORK):
    """A checkpoint of `network` at IMAGE_SIZE, 1001 classes, with
    trained-looking batch-norm statistics; returns its prefix."""
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import inference  # pylint: disable=import-outside-toplevel
    prefix = os.path.join(folder, 'model.ckpt')
    if os.path.exists(prefix + '.index'):
        return prefix
    spec = inference.ModelSpec(network, {}, IMAGE_SIZE, 1001)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        inference.build_network(spec, images)
        saver = tf.train.Saver()
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            bench._realistic_statistics(session)  # pylint: disable=protected-access
            return saver.save(session, prefix, write_meta_graph=False)


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _classifier(args):
    from slimnets import inference  # pylint: disable=import-outside-toplevel
    return inference.Classifier(args.checkpoint, NETWORK,
                                image_size=IMAGE_SIZE, cache_dir=args.scratch,
                                progress=False, num_threads=args.threads)


def run_variant(variant, args):
    """One variant in this process: {images, setup_s, run_s, wall_s,
    images_per_s, peak_rss_mb, runtime}."""
    started = time.perf_counter()
    paths = list_images(args.images_dir)
    count = len(paths)
    measured = {'variant': variant, 'images': count}
    if variant in ('classify', 'network'):
        classifier = _classifier(args)
        measured['runtime'] = classifier.runtime.describe(args.batch_size)
        measured['setup_s'] = time.perf_counter() - started
        start = time.perf_counter()
        if variant == 'classify':
            rows = classifier.classify_files(paths, top_k=5,
                                             batch_size=args.batch_size)
            assert len(rows) == count
        else:
            batch = np.random.RandomState(0).uniform(
                -1, 1, [args.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3]
            ).astype(np.float32)
            for first in range(0, count, args.batch_size):
                classifier.runtime.run(batch[:min(args.batch_size,
                                                  count - first)])
        measured['run_s'] = time.perf_counter() - start
        classifier.close()
    elif variant == 'eval':
        from slimnets.inference import evaluation  # pylint: disable=import-outside-toplevel
        built = []

        class TimedClassifier(evaluation.Classifier):
            """Notes when evaluate's Classifier is built: the rest of
            evaluate is reading, decoding and the network."""

            def __init__(self, *a, **k):
                k.setdefault('num_threads', args.threads)
                super().__init__(*a, **k)
                built.append(time.perf_counter())

        evaluation.Classifier = TimedClassifier   # this worker process only
        result = evaluation.evaluate(
            args.checkpoint, args.images_dir, model=NETWORK,
            batch_size=args.batch_size, progress=False,
            cache_dir=args.scratch, image_size=IMAGE_SIZE)
        done = time.perf_counter()
        assert result['images'] == count, result
        measured.update({'runtime': result['runtime'],
                         'setup_s': built[0] - started,
                         'run_s': done - built[0]})
    elif variant in ('keras', 'keras_network'):
        import keras  # pylint: disable=import-outside-toplevel
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        model = getattr(keras.applications, KERAS_MODEL)(
            weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
        batch = np.random.RandomState(0).uniform(
            -1, 1, [args.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3]
        ).astype(np.float32)
        model.predict_on_batch(batch)
        if variant == 'keras':
            dataset = keras.utils.image_dataset_from_directory(
                args.images_dir, labels='inferred',
                image_size=(IMAGE_SIZE, IMAGE_SIZE),
                batch_size=args.batch_size, shuffle=False, verbose=False)
            dataset = dataset.map(lambda x, y: x / 127.5 - 1.0).prefetch(
                tf.data.AUTOTUNE)
            model.predict(dataset.take(1), verbose=0)
            measured['setup_s'] = time.perf_counter() - started
            start = time.perf_counter()
            predictions = model.predict(dataset, verbose=0)
            assert len(predictions) == count
        else:
            measured['setup_s'] = time.perf_counter() - started
            start = time.perf_counter()
            for first in range(0, count, args.batch_size):
                model.predict_on_batch(batch[:min(args.batch_size,
                                                  count - first)])
        measured['run_s'] = time.perf_counter() - start
        measured['runtime'] = 'keras %s (TensorFlow backend)' % keras.__version__
    else:
        raise ValueError('unknown variant %r' % variant)
    measured.setdefault('wall_s', time.perf_counter() - started)
    if measured['run_s'] <= 0:
        raise RuntimeError('%s: no time left after the setup' % variant)
    measured['timed_images'] = count
    measured['images_per_s'] = count / measured['run_s']
    measured['peak_rss_mb'] = _peak_rss_mb()
    return measured


def summarize(rounds):
    """Per variant: stats over rounds of images/s, setup and peak memory;
    the ratios the issue's goals name (per round, median/min/max)."""
    variants = {}
    for variant in rounds[0]:
        runs = [r[variant] for r in rounds]
        seconds = [run['run_s'] for run in runs]
        cell = harness.rate_stats(seconds, runs[0]['timed_images'])
        cell.update({'setup_s_median': float(np.median(
            [run['setup_s'] for run in runs])),
            'wall_s_median': float(np.median([run['wall_s'] for run in runs])),
            'peak_rss_mb': max(run['peak_rss_mb'] for run in runs),
            'runtime': runs[0]['runtime'], 'images': runs[0]['images']})
        variants[variant] = cell

    def speed(variant):
        return [r[variant]['images_per_s'] for r in rounds]

    ratios = {}
    for job in ('classify', 'eval'):
        if job not in variants:
            continue
        for other in ('keras', 'network'):
            if other in variants:
                # images/s ratio = time ratio inverted; per round.
                ratios['%s_vs_%s' % (job, other)] = harness.ratio_stats(
                    speed(job), speed(other))
    goals = {}
    for job in ('classify', 'eval'):
        if '%s_vs_keras' % job in ratios:
            goals['%s_at_least_1.5x_keras' % job] = \
                ratios['%s_vs_keras' % job]['median'] >= 1.5
        if '%s_vs_network' % job in ratios:
            goals['%s_within_15pct_of_network' % job] = \
                ratios['%s_vs_network' % job]['median'] >= 0.85
    return {'variants': variants, 'ratios': ratios, 'goals': goals}


def table(result):
    lines = ['%d images (%dx%d to %dx%d JPEG), batch %d, %dx%d, %s; '
             '%d thread(s), %d round(s)' % (
                 result['options']['images'], SMALLEST[0], SMALLEST[1],
                 LARGEST[0], LARGEST[1], result['options']['batch_size'],
                 IMAGE_SIZE, IMAGE_SIZE, NETWORK, result['threads'],
                 result['options']['rounds']),
             '%-14s %9s %17s %8s %8s %9s  %s' % (
                 'variant', 'images/s', 'min-max', 'setup_s', 'wall_s',
                 'peak_MB', 'runs on')]
    for variant, cell in result['variants'].items():
        lines.append('%-14s %9.1f %17s %8.1f %8.1f %9.0f  %s' % (
            variant, cell['images_per_s'], '%.1f-%.1f' % (
                cell['images_per_s_min'], cell['images_per_s_max']),
            cell['setup_s_median'], cell['wall_s_median'],
            cell['peak_rss_mb'], cell['runtime']))
    for name, ratio in result['ratios'].items():
        lines.append('%-22s %.2f (%.2f-%.2f)' % (name, ratio['median'],
                                                 ratio['min'], ratio['max']))
    lines.append('goals: ' + ', '.join('%s %s' % (k, 'met' if v else 'NOT met')
                                       for k, v in result['goals'].items()))
    return '\n'.join(lines)


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS),
                        choices=VARIANTS)
    parser.add_argument('--threads', type=int, default=bench.default_threads())
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 40 images, 1 round')
    parser.add_argument('--scratch', help='where the images, checkpoint and '
                        'runtime choices live (default: a temporary folder)')
    parser.add_argument('--output-dir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
    parser.add_argument('--images-dir', help=argparse.SUPPRESS)
    return parser


def main():
    args = argument_parser().parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.quick:
        args.images, args.rounds = min(args.images, 40), 1
    if args.worker:
        harness.apply_threads(args.threads)
        print(json.dumps(run_variant(args.worker, args)))
        return
    result = harness.header('main_job', {
        'images': args.images, 'seed': args.seed,
        'batch_size': args.batch_size, 'rounds': args.rounds,
        'network': NETWORK, 'keras_model': KERAS_MODEL,
        'image_size': IMAGE_SIZE}, args.threads, args.quick)
    scratch = args.scratch or tempfile.mkdtemp(prefix='slimnets-main-job-')
    images_dir = os.path.join(scratch, 'images_%d_%d' % (args.images,
                                                         args.seed))
    start = time.perf_counter()
    paths = make_images(images_dir, args.images, args.seed)
    result['images_generated_s'] = time.perf_counter() - start
    result['jpeg_megabytes'] = sum(os.path.getsize(p) for p in paths) / 1e6
    checkpoint = make_checkpoint(scratch)
    common = ['--checkpoint', checkpoint, '--images-dir', images_dir,
              '--scratch', scratch, '--batch-size', str(args.batch_size),
              '--threads', str(args.threads)]
    env = bench.worker_env(args.threads)
    result['worker_environment'] = harness.environment(env)
    result['threads_note'] = (
        "TensorFlow's pools, the BLAS and the Classifier's runtime "
        '(num_threads) on --threads')
    # The default runtime's one-off choices (every batch size a pass over
    # the folder meets, the last partial batch too), so no round pays.
    subprocess.run([sys.executable, os.path.abspath(__file__), '--worker',
                    'classify'] + common, env=env, capture_output=True,
                   check=True)
    rounds = []
    for round_index in range(args.rounds):
        measured = {}
        for variant in harness.rotation(args.variants, round_index):
            print('round %d: %s ...' % (round_index + 1, variant),
                  file=sys.stderr)
            completed = subprocess.run(
                [sys.executable, os.path.abspath(__file__), '--worker',
                 variant] + common, env=env, capture_output=True, text=True,
                check=False)
            measured[variant] = harness.worker_json(completed, variant)
        rounds.append({v: measured[v] for v in args.variants})
    result.update(summarize(rounds))
    result['rounds'] = rounds
    harness.finish(result)
    path = harness.write_json(os.path.join(args.output_dir, 'main_job.json'),
                              result)
    print(table(result))
    print('wrote %s' % path)


if __name__ == '__main__':
    main()
