"""The `slimnets` command line (`python -m slimnets` does the same).

Subcommands (each a thin layer over the Python API named in its help):
  classify  top-k ImageNet classes of images         (slimnets.inference)
  eval      top-1 / top-5 over labelled images        (slimnets.inference)
  inspect   what a checkpoint holds and which network (slimnets.checkpoints)
  list      the catalogue of published checkpoints    (slimnets.checkpoints)
  fetch     download a catalogue checkpoint           (slimnets.checkpoints)
  export    frozen, SavedModel, TFLite, ONNX, OpenVINO, Keras (slimnets.export)
  train     fine-tune a checkpoint on new classes     (slimnets.training)
  data      build TFRecord shards from class folders  (slimnets.dataset_build)
  doctor    check this installation offline
Errors are one line on stderr and exit status 1 (2 for a usage error).
"""

import argparse
import json
import logging
import os
import re
import sys
import time

# Only modules that do not import TensorFlow are imported here, so that
# `slimnets --help` and `slimnets CMD --help` answer at once; each command
# imports the (TensorFlow) modules it uses when it runs.
from slimnets import cluster
from slimnets import fileio
from slimnets import graph_format
from slimnets import images as image_files
from slimnets import registry
from slimnets import tflog
from slimnets import train_config
from slimnets.errors import SlimnetsError
from slimnets.errors import UsageError

# ---------------------------------------------------------------- arguments
# Every numeric option is range-checked where it is parsed: a bad value is a
# usage error (one line, exit status 2) before any work starts.

MIN_IMAGE_SIZE = 32      # the networks downsample by 32
MAX_IMAGE_SIZE = 2048


def _number(kind, low=None, high=None, low_open=False, what='a number'):
    """An argparse type: `kind` within [low, high] (or (low, high])."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not %s' % (text, what)) \
                from None
        if value != value or (low is not None and (
                value < low or (low_open and value == low))) or (
                high is not None and value > high):
            bounds = ('> %s' % low if low_open else '>= %s' % low) \
                if high is None else '%s %s..%s' % (
                    'in (' if low_open else 'in', low, high)
            raise argparse.ArgumentTypeError('%s must be %s' % (text, bounds))
        return value
    parse.__name__ = what
    return parse


positive_int = _number(int, 1, what='a whole number >= 1')
non_negative_int = _number(int, 0, what='a whole number >= 0')
positive_float = _number(float, 0.0, low_open=True, what='a number > 0')
fraction = _number(float, 0.0, 1.0, low_open=True, what='a number in (0, 1]')
image_size = _number(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE,
                     what='an image size in pixels')
export_batch_size = _number(int, 1, graph_format.MAX_BATCH_SIZE,
                            what='a batch size')


def writable_file(text):
    """An output file path whose folder exists and is writable."""
    writable_place(text)
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError('%s is a folder, not a file' % text)
    return text


def writable_place(text):
    """An output file or folder path whose parent folder exists and is
    writable (the output itself may exist; it is replaced atomically)."""
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(
            'cannot write %s: the folder %s does not exist' % (text, parent))
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(
            'cannot write %s: the folder %s is not writable' % (text, parent))
    return text


def url(text):
    """An http(s) or file URL."""
    if not re.match(r'^(https?|file)://\S+$', text):
        raise argparse.ArgumentTypeError(
            '%r is not a URL (expected http://, https:// or file://...)' % text)
    return text


non_negative_float = _number(float, 0.0, what='a number >= 0')
unit_interval = _number(float, 0.0, 1.0, what='a number in 0..1')


def validation_fraction(text):
    """A number in [0, 1)."""
    value = unit_interval(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError('%s must be below 1 (the train split '
                                         'would be empty)' % text)
    return value

# The type (and so the valid range) of each fine-tuning option; the rest
# are positive numbers.
_TRAIN_OPTION_TYPES = {
    'optimizer': str, 'learning_rate_decay_type': str,
    'batch_size': positive_int, 'max_steps': positive_int,
    'save_every_steps': positive_int, 'log_every_n_steps': positive_int,
    'image_size': image_size, 'seed': non_negative_int,
    'weight_decay': non_negative_float, 'label_smoothing': unit_interval,
    'learning_rate_decay_factor': fraction, 'moving_average_decay': fraction,
    'batch_norm_decay': fraction, 'momentum': unit_interval,
    'rmsprop_momentum': unit_interval, 'rmsprop_decay': fraction,
    'adam_beta1': unit_interval, 'adam_beta2': unit_interval,
    'adadelta_rho': fraction, 'end_learning_rate': non_negative_float,
    'quantize_delay': int,  # negative: no quantization (the reference's -1)
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))


class CommandError(SlimnetsError):
    """A user-facing failure: printed as one line, exit status 1."""


def _versions():
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_slim  # pylint: disable=import-outside-toplevel

    import slimnets  # pylint: disable=import-outside-toplevel
    return [('slimnets', slimnets.__version__), ('tensorflow', tf.__version__),
            ('keras', getattr(tf.keras, '__version__', 'unknown')),
            ('tf-slim', getattr(tf_slim, '__version__', '1.1.0')),
            ('numpy', np.__version__), ('python', sys.version.split()[0])]


def network_report(name, image_size=None, timing_runs=5):
    """Builds factory network `name` (1001 classes) and measures it.

    Returns:
      A dict: name, image size, parameters, MACs, variables, endpoints,
      build seconds and milliseconds per image (batch 1, median of
      `timing_runs`).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import analysis  # pylint: disable=import-outside-toplevel
    from slimnets import nets_factory  # pylint: disable=import-outside-toplevel

    network_fn = nets_factory.get_network_fn(name, 1001)
    size = image_size or network_fn.default_image_size
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [1, size, size, 3])
        start = time.perf_counter()
        logits, end_points = network_fn(images)
        build_seconds = time.perf_counter() - start
        report = {
            'network': name, 'image_size': size,
            'params': analysis.count_parameters(tf.trainable_variables()),
            'macs': analysis.count_macs(graph),
            'variables': len(tf.global_variables()),
            'endpoints': len(end_points), 'build_s': build_seconds,
        }
        batch = np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(logits, {images: batch})  # warm-up
            times = []
            for _ in range(timing_runs):
                start = time.perf_counter()
                sess.run(logits, {images: batch})
                times.append(time.perf_counter() - start)
    report['ms_per_image'] = 1000 * float(np.median(times))
    return report


def _published_check(report):
    from slimnets import analysis  # pylint: disable=import-outside-toplevel
    if report['image_size'] != 224:
        return '-'
    verdict, published, deviation = analysis.check_published_params(
        report['network'], report['params'])
    if published is None:
        return verdict
    return '%s (%.2fM, %+.1f%%)' % (verdict, published, 100 * deviation)


def command_doctor(args):
    """Prints versions, the tf_slim repair status and the network table."""
    from slimnets import nets_factory  # pylint: disable=import-outside-toplevel
    from slimnets import slim  # pylint: disable=import-outside-toplevel

    names = args.networks or sorted(nets_factory.networks_map)
    unknown = [n for n in names if n not in nets_factory.networks_map]
    if unknown:
        raise CommandError('unknown network %s; choose from %s'
                           % (', '.join(unknown),
                              ', '.join(sorted(nets_factory.networks_map))))
    print('Versions')
    for package, version in _versions():
        print('  %-11s %s' % (package, version))
    broken, reason = slim.tf_slim_is_broken()
    print('tf_slim.batch_norm on this TensorFlow: %s'
          % ('BROKEN (%s)' % reason.splitlines()[0] if broken else 'works'))
    print('slimnets.slim.batch_norm: %s' % _slim_batch_norm_status())

    header = '%-32s %5s %9s %9s %5s %5s %8s %9s  %s' % (
        'network', 'size', 'params', 'MACs', 'vars', 'eps', 'build_s',
        'ms/image', 'published params')
    print(header)
    print('-' * len(header))
    failures = 0
    for name in names:
        try:
            report = network_report(name, args.image_size)
        except Exception as error:  # pylint: disable=broad-except
            failures += 1
            print('%-32s FAILED: %s' % (name, error))
            continue
        print('%-32s %5d %8.3fM %8.1fM %5d %5d %8.2f %9.1f  %s' % (
            name, report['image_size'], report['params'] / 1e6,
            report['macs'] / 1e6, report['variables'], report['endpoints'],
            report['build_s'], report['ms_per_image'],
            _published_check(report)))
    from slimnets import analysis  # pylint: disable=import-outside-toplevel
    for name in names:
        if name in analysis.KNOWN_DIFFERENCES:
            print('known: %s: %s' % (name, analysis.KNOWN_DIFFERENCES[name]))
    if failures:
        raise CommandError('%d network(s) failed to build or run' % failures)
    print('All %d networks built and ran.' % len(names))


def _slim_batch_norm_status():
    """Builds and runs slimnets' batch_norm once; 'works' or the error."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

    from slimnets import slim  # pylint: disable=import-outside-toplevel
    with tf.Graph().as_default():
        try:
            outputs = slim.batch_norm(tf.constant([[1.0], [3.0]]),
                                      is_training=True)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                value = sess.run(outputs)
        except Exception as error:  # pylint: disable=broad-except
            return 'BROKEN (%s)' % error
    return 'works' if np.allclose(value.ravel(), [-1, 1], atol=1e-3) else (
        'WRONG RESULT %s' % value.ravel())


def command_classify(args):
    from slimnets import inference  # pylint: disable=import-outside-toplevel
    read = _stdin_reader(args.images)
    for path in args.images:
        if path != '-' and not os.path.isfile(path):
            inference.read_image_file(path)  # fails before the model loads
    with inference.Classifier(args.checkpoint, args.model, args.image_size,
                              cache_dir=args.cache_dir,
                              max_pixels=args.max_pixels,
                              runtime=args.runtime,
                              force_image_size=args.force_image_size
                              ) as classifier:
        spec = classifier.spec
        print('%s %s at %dx%d, %s' % (
            spec.network, _format_kwargs(spec.kwargs), spec.image_size,
            spec.image_size, 'moving-average weights'
            if classifier.restore_plan.moving_average else 'weights'))
        print('model: %s' % classifier.model_name)
        if args.top_k > spec.num_classes:
            raise UsageError('--top-k %d is more than the %d classes of this '
                             'model; give at most %d' % (
                                 args.top_k, spec.num_classes,
                                 spec.num_classes))
        runtime = classifier.runtime.describe(len(args.images))
        print('runtime: %s' % runtime)
        results = []
        for path, top in classifier.iter_classify_files(args.images,
                                                        args.top_k, read=read):
            print(path)
            for index, label, probability in top:
                print('  %5d  %-40s %.4f' % (index, label[:40], probability))
            sys.stdout.flush()
            if args.json:
                results.append({'image': path, 'top': [
                    {'index': index, 'label': label,
                     'probability': probability}
                    for index, label, probability in top]})
        if args.json:
            fileio.write_bytes(args.json, (json.dumps({
                'model': classifier.model_name, 'network': spec.network,
                'network_kwargs': spec.kwargs, 'image_size': spec.image_size,
                'checkpoint': classifier.checkpoint, 'runtime': runtime,
                'images': results}, indent=1) + '\n').encode('utf-8'))
            print('written: %s' % args.json)


def _stdin_reader(paths):
    """`read(path) -> bytes` for classify: '-' is the one image piped to
    stdin (read once), anything else a file."""
    if paths.count('-') > 1:
        raise UsageError("'-' (the image on stdin) can be given once")
    data = None
    if '-' in paths:
        stdin = sys.stdin.buffer if hasattr(sys.stdin, 'buffer') else None
        if stdin is None or sys.stdin.isatty():
            raise UsageError("'-' reads one image from stdin: pipe or "
                             "redirect one in (slimnets classify - < cat.jpg)")
        data = stdin.read(image_files.MAX_STDIN_BYTES + 1)
        if not data:
            raise UsageError("'-': stdin is empty; pipe an image in "
                             "(slimnets classify - < cat.jpg)")
        if len(data) > image_files.MAX_STDIN_BYTES:
            raise UsageError("'-': stdin holds more than %d bytes; that is "
                             'not one image file' % image_files.MAX_STDIN_BYTES)

    def read(path):
        if path == '-':
            return data
        return image_files.read_image_file(path)
    return read


def _format_kwargs(kwargs):
    return '(%s)' % ', '.join('%s=%s' % item for item in sorted(kwargs.items()))


def _read_results(paths):
    results = []
    for path in paths:
        try:
            with open(path) as handle:
                results.append(json.load(handle))
        except (OSError, ValueError) as error:
            raise CommandError('cannot read the eval result %s: %s' % (
                path, getattr(error, 'strerror', None) or error)) from None
    return results


def command_eval(args):
    if args.merge:
        if args.data or args.shard is not None or args.num_shards is not None:
            args.usage_error('--merge combines results: give no --data, '
                             '--shard or --num-shards with it')
        from slimnets import evaluation  # pylint: disable=import-outside-toplevel
        result = evaluation.merge(_read_results(args.merge))
    else:
        if not args.data:
            args.usage_error('the following arguments are required: --data '
                             '(or --merge A.json B.json ...)')
        if (args.shard is None) != (args.num_shards is None) or (
                args.shard is not None and args.shard >= args.num_shards):
            args.usage_error('give --shard K and --num-shards N together, '
                             'with K < N')
        from slimnets import inference  # pylint: disable=import-outside-toplevel
        result = inference.evaluate(args.checkpoint, args.data, args.model,
                                    batch_size=args.batch_size,
                                    max_images=args.max_images,
                                    image_size=args.image_size,
                                    max_pixels=args.max_pixels,
                                    progress=not args.no_progress,
                                    cache_dir=args.cache_dir,
                                    shard=args.shard,
                                    num_shards=args.num_shards,
                                    split=args.split, runtime=args.runtime,
                                    force_image_size=args.force_image_size)
    if result.get('model'):
        print('%-12s %s' % ('model', result['model']))
    print('%-12s %s %s' % ('network', result['network'],
                           _format_kwargs(result['network_kwargs'])))
    print('%-12s %s' % ('checkpoint', result['checkpoint']))
    if result.get('num_shards'):
        print('%-12s %d of %d' % ('shard', result['shard'],
                                  result['num_shards']))
    if result.get('merged_shards'):
        print('%-12s %d shards' % ('merged', result['merged_shards']))
    print('%-12s %d' % ('images', result['images']))
    print('%-12s %.4f' % ('top-1', result['top1']))
    print('%-12s %.4f' % ('top-5', result['top5']))
    print('%-12s %s' % ('runtime', result.get('runtime')))
    if args.json:
        fileio.write_bytes(args.json, (json.dumps(result, indent=1) + '\n')
                           .encode('utf-8'))
        print('%-12s %s' % ('written', args.json))


def command_inspect(args):
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    info = checkpoints.inspect(args.checkpoint, cache_dir=args.cache_dir)
    print(checkpoints.format_info(info))
    if args.model:
        import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

        from slimnets import inference  # pylint: disable=import-outside-toplevel
        spec, _ = inference.model_spec(args.model)
        spec = spec._replace(
            num_classes=info.identity.num_classes or spec.num_classes)
        with tf.Graph().as_default():
            inference.build_network(spec, tf.placeholder(
                tf.float32, [1, spec.image_size, spec.image_size, 3]))
            print()
            print('against %s %s:' % (spec.network,
                                      _format_kwargs(spec.kwargs)))
            print(checkpoints.format_diff(checkpoints.diff(info.checkpoint)))


def command_list(args):
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    print('%-38s %-7s %5s %5s %-8s %7s %7s %6s %6s  %-14s %s' % (
        'name', 'family', 'depth', 'size', 'weights', 'MACs(M)', 'params',
        'top-1', 'top-5', 'sources', 'cached'))
    for item in checkpoints.catalogue():
        if args.family and item.family != args.family:
            continue
        cached = checkpoints.cached_checkpoint(item.name, args.cache_dir)
        print('%-38s %-7s %5s %5d %-8s %7s %7s %6s %6s  %-14s %s' % (
            item.name, item.family, item.network_kwargs['depth_multiplier'],
            item.input_size, item.weights.split()[0][:8],
            _number(item.macs_millions), _number(item.params_millions),
            _number(item.top1), _number(item.top5),
            checkpoints.source_summary(item), 'yes' if cached else '-'))
        if args.sources:
            for fmt, check, url in checkpoints.available_sources(item):
                print('    %-12s %-6s %s' % (fmt, check, url))


def _number(value):
    return '-' if value is None else ('%g' % value)


def command_fetch(args):
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    prefix = checkpoints.fetch(args.name, cache_dir=args.cache_dir,
                               url=args.url, progress=not args.no_progress)
    print(prefix)


def _command_export_integer(args):
    from slimnets import quantized_tflite  # pylint: disable=import-outside-toplevel
    report = quantized_tflite.export_tflite(
        args.output, args.checkpoint, model=args.model,
        image_size=args.image_size,
        inference_type=args.inference_type or 'uint8',
        cache_dir=args.cache_dir, force_image_size=args.force_image_size)
    spec = report.spec
    print('exported %s %s at %dx%d to %s (integer TFLite, %s, %d bytes)' % (
        spec.network, _format_kwargs(spec.kwargs), spec.image_size,
        spec.image_size, report.path, report.inference_type,
        report.size_bytes))
    print('self-check on %d probe images against the fake-quant eval graph: '
          '%.2f%% of outputs within one quantization step (max %.1f steps), '
          'same top-1 on %.0f%%' % (report.probe_images,
                                    100 * report.within_one_step,
                                    report.max_step_difference,
                                    100 * report.top1_agreement))


def command_export(args):
    from slimnets import export  # pylint: disable=import-outside-toplevel
    from slimnets import models  # pylint: disable=import-outside-toplevel
    from slimnets import quantized_tflite  # pylint: disable=import-outside-toplevel
    args.checkpoint = models.weights_for(args.checkpoint, args.model)
    export.check_output(args.format, args.output)  # before any work
    if args.format == 'tflite' and not args.quantization and (
            args.inference_type or quantized_tflite.is_qat_checkpoint(
                args.checkpoint, args.cache_dir)):
        return _command_export_integer(args)
    report = export.export(
        args.output, args.format, args.checkpoint, model=args.model,
        image_size=args.image_size, batch_size=args.batch_size,
        quantization=args.quantization,
        representative_data=args.representative_data,
        cache_dir=args.cache_dir, trainable=args.trainable,
        force_image_size=args.force_image_size)
    spec = report.spec
    print('exported %s %s at %dx%d to %s (%s%s)' % (
        spec.network, _format_kwargs(spec.kwargs), spec.image_size,
        spec.image_size, report.path, report.format,
        ', %s' % report.quantization if report.quantization else
        ', opset %d' % export.ONNX_OPSET if report.format == 'onnx' else ''))
    if args.trainable:
        print('trainable: batch norm unfolded, the arg scope\'s weight decay '
              'and dropout; keras.saving.load_model opens it without slimnets')
    else:
        print('batch norms folded: %d' % report.folded_batch_norms)
    print('self-check on %d probe images: max |probabilities - source| = '
          '%.3g, same top-1 on %.0f%%' % (report.probe_images,
                                          report.max_abs_difference,
                                          100 * report.top1_agreement))


def _cluster_role(args):
    """This process's place in a cluster (flags, else TF_CONFIG; None for
    one process) and the gradients one synchronous step aggregates."""
    role = cluster.resolve(args.ps_hosts, args.worker_hosts, args.job_name,
                           args.task_index)
    return role, cluster.replicas_to_aggregate(role, args.sync_replicas,
                                               args.replicas_to_aggregate)


def command_train(args):
    role, replicas = _cluster_role(args)   # usage errors before TensorFlow
    if role is not None and role.is_ps:
        from slimnets import distributed  # pylint: disable=import-outside-toplevel
        finished = distributed.serve(role)
        print('%s: all %d workers are done (%s)' % (
            role.describe(), len(finished),
            ', '.join(str(i) for i in finished)))
        return
    from slimnets import models  # pylint: disable=import-outside-toplevel
    from slimnets import training  # pylint: disable=import-outside-toplevel
    if args.checkpoint is None and args.model is None and not os.path.isfile(
            os.path.join(args.train_dir, 'checkpoint')):
        print('no --checkpoint or --model: fine-tuning starts from the '
              'weights of %s' % models.weights_name(models.DEFAULT_MODEL))
    options = {name: getattr(args, name) for name in train_config.TrainConfig._fields
               if getattr(args, name, None) is not None}
    options['fine_tune_batch_norm'] = not args.freeze_batch_norm
    exclude = args.checkpoint_exclude_scopes.split(',') \
        if args.checkpoint_exclude_scopes else None
    trainable = args.trainable_scopes.split(',') if args.trainable_scopes \
        else None
    result = training.train(
        args.train_dir, args.data, num_classes=args.num_classes,
        checkpoint=args.checkpoint, model=args.model,
        checkpoint_exclude_scopes=exclude, trainable_scopes=trainable,
        progress=not args.no_progress, cache_dir=args.cache_dir,
        split=args.split, num_clones=args.num_clones,
        clone_on_cpu=args.clone_on_cpu, cluster=role,
        replicas_to_aggregate=replicas, **options)
    if result.resumed:
        print('resumed at step %d' % result.first_step)
    if result.losses:
        head = result.losses[:10]
        tail = result.losses[-10:]
        print('steps %d..%d: loss %.4f (first %d) -> %.4f (last %d)' % (
            result.first_step, result.last_step, sum(head) / len(head),
            len(head), sum(tail) / len(tail), len(tail)))
    print('classes: %s' % ', '.join(result.class_names))
    if role is not None:
        print('%s: global step %d' % (role.describe(), result.last_step))
    if result.checkpoint:
        print('checkpoint: %s' % result.checkpoint)


def command_data_build(args):
    from slimnets import dataset_build  # pylint: disable=import-outside-toplevel
    report = dataset_build.build(
        args.input, args.output, shards=args.shards,
        validation_fraction=args.validation_fraction,
        labels_file=args.labels, workers=args.workers,
        progress=not args.no_progress)
    numbering = {'imagenet': 'ImageNet synsets from 1 (0 is background)',
                 'flowers': 'class folders in sorted order from 0',
                 'labels_file': 'as numbered in %s' % args.labels}
    print('classes: %d (%s)' % (len(report.class_names),
                                numbering[report.numbering]))
    for split in ('train', 'validation'):
        if report.shards[split]:
            print('%-10s %d records in %d shards' % (
                split, report.records[split], len(report.shards[split])))
    print('shards written: %d, already done: %d' % (report.shards_written,
                                                    report.shards_reused))
    print('skipped: %d' % len(report.skipped))
    for path, reason in report.skipped:
        print('  %s: %s' % (path, reason))
    print('output: %s' % report.output)


def hosts(text):
    """A comma list of host:port."""
    try:
        return ','.join(cluster.parse_hosts(text))
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_cluster_arguments(command):
    """Training across processes and machines (research/slim's spellings
    too); without them TF_CONFIG is read, else one process trains."""
    group = command.add_argument_group(
        'cluster', 'train on TensorFlow\'s distributed runtime: parameter '
        'servers hold the variables, workers compute; worker 0 (the chief) '
        'restores and writes checkpoints.  Without these, TF_CONFIG is read')
    group.add_argument('--ps-hosts', '--ps_hosts', type=hosts,
                       metavar='H:P,...', help='the parameter servers')
    group.add_argument('--worker-hosts', '--worker_hosts', type=hosts,
                       metavar='H:P,...', help='the workers (the first is '
                       'the chief)')
    group.add_argument('--job-name', '--job_name', choices=cluster.JOBS,
                       help='this process\'s job')
    group.add_argument('--task-index', '--task_index', type=non_negative_int,
                       metavar='K', help='this process\'s index in its job '
                       '(default 0)')
    group.add_argument('--sync-replicas', '--sync_replicas',
                       action='store_true', help='synchronous steps: '
                       'average the workers\' gradients '
                       '(SyncReplicasOptimizer)')
    group.add_argument('--replicas-to-aggregate', '--replicas_to_aggregate',
                       type=positive_int, metavar='R', help='gradients per '
                       'synchronous step (default: the workers)')


def build_parser():
    parser = ArgumentParser(
        prog='slimnets',
        description='TF-Slim MobileNets (v1, v2, v3, EdgeTPU) on current '
                    'TensorFlow.')
    common = ArgumentParser(add_help=False)
    common.add_argument('--verbose', action='store_true',
                        help="show TensorFlow's own log lines")
    common.add_argument('--debug', action='store_true',
                        help='show the traceback of a failure')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True
    add_parser = commands.add_parser

    def add_command(name, **kwargs):
        return add_parser(name, parents=[common], **kwargs)

    commands.add_parser = add_command
    doctor = commands.add_parser(
        'doctor', help='check this installation offline',
        description='Print the versions, whether tf_slim is broken here and '
                    'whether the slimnets repair works, then build every '
                    'factory network and print its parameters, MACs, '
                    'variables, endpoints and speed.')
    doctor.add_argument('--networks', nargs='+', metavar='NAME',
                        help='only these factory networks')
    doctor.add_argument('--image-size', type=image_size, default=None,
                        help='input size (default: each network\'s own)')
    doctor.set_defaults(handler=command_doctor)

    def add_model_arguments(command, checkpoint_required=True):
        command.add_argument(
            '--checkpoint', required=checkpoint_required,
            help='a checkpoint path (prefix, .index or folder) or a catalogue '
                 'name' + ('' if checkpoint_required else
                           ' (default: --model when it is a catalogue name, '
                           'else %s: the copy of Google\'s quantized '
                           'mobilenet_v2_1.0_224 inside the package, no '
                           'network needed)' % registry.DEFAULT_MODEL))
        command.add_argument('--model', help='a nets_factory or catalogue '
                             'name (default: inferred from the checkpoint)')
        command.add_argument('--image-size', type=image_size,
                             help='input size (default: the one recorded '
                                  'beside the checkpoint, the catalogue\'s, '
                                  'a published-style path\'s, else 224)')
        command.add_argument('--force-image-size', action='store_true',
                             help='run a quantization-aware checkpoint at an '
                                  '--image-size other than the one its '
                                  'ranges were calibrated at (refused '
                                  'otherwise)')


    def add_max_pixels(command):
        command.add_argument('--max-pixels', type=positive_int,
                             default=image_files.MAX_PIXELS,
                             help='refuse larger images before decoding them '
                                  '(default %(default)s)')

    def add_runtime_argument(command):
        # validated by slimnets.runtimes.load (an InputError names the
        # choices), so that parsing stays free of TensorFlow imports
        command.add_argument('--runtime', default='auto',
                             help='tensorflow, tflite, onnxruntime, openvino '
                                  'or auto (default: the fastest installed '
                                  'one for the batch size, measured once)')

    def add_cache_argument(command):
        command.add_argument('--cache-dir', help='checkpoint cache (default: '
                             '$SLIMNETS_CACHE, else checkpoints/ of a source '
                             'checkout, else ~/.cache/slimnets)')

    classify = commands.add_parser(
        'classify', help='top-k ImageNet classes of images',
        description='Classify images with Inception eval preprocessing '
                    '(central crop 0.875, TF1 bilinear resize, [-1, 1]).')
    classify.add_argument('images', nargs='+', metavar='IMAGE',
                          help="image files; '-' is one image read from "
                               'stdin (slimnets classify - < cat.jpg); '
                               'for many paths use xargs: find DIR -name '
                               "'*.jpg' | xargs slimnets classify")
    add_model_arguments(classify, checkpoint_required=False)
    add_max_pixels(classify)
    classify.add_argument('--top-k', type=positive_int, default=5,
                          help='classes shown per image, 1 to the model\'s '
                               'class count (default %(default)s)')
    classify.add_argument('--json', type=writable_file,
                          help='also write the results here (the model, '
                               'the network and each image\'s top-k)')
    add_runtime_argument(classify)
    add_cache_argument(classify)
    classify.set_defaults(handler=command_classify)

    evaluate = commands.add_parser(
        'eval', help='top-1 / top-5 accuracy over labelled images',
        description='Evaluate over a folder with one sub-folder per class '
                    '(synset ids or label names) or slim TFRecords '
                    '(image/encoded, image/class/label).')
    add_model_arguments(evaluate, checkpoint_required=False)
    add_max_pixels(evaluate)
    evaluate.add_argument('--data',
                          help='class-folder tree, TFRecord file, folder of '
                               'shards or glob, or a research/slim '
                               'dataset_dir (see --split)')
    evaluate.add_argument('--split',
                          help='research/slim split in a dataset_dir '
                               '(SPLIT-* shards; default: validation, else '
                               'test, when it holds several)')
    evaluate.add_argument('--batch-size', type=positive_int, default=32)
    evaluate.add_argument('--max-images', type=positive_int,
                          help='only the first N images of the stream')
    evaluate.add_argument('--shard', type=non_negative_int, metavar='K',
                          help='evaluate only slice K (0-based) of '
                               '--num-shards: every N-th image from the K-th')
    evaluate.add_argument('--num-shards', type=positive_int, metavar='N')
    evaluate.add_argument('--merge', nargs='+', metavar='JSON',
                          help='combine the --json results of the N shards '
                               '(instead of evaluating)')
    evaluate.add_argument('--json', type=writable_file,
                          help='also write the results here')
    evaluate.add_argument('--no-progress', action='store_true')
    add_runtime_argument(evaluate)
    add_cache_argument(evaluate)
    evaluate.set_defaults(handler=command_eval, usage_error=evaluate.error)

    inspect = commands.add_parser(
        'inspect', help='variables of a checkpoint and which network it is',
        description='List a checkpoint\'s variables and identify the network '
                    '(family, depth multiplier, head, classes, shadows); with '
                    '--model, diff it against that network.')
    inspect.add_argument('checkpoint', metavar='CHECKPOINT')
    inspect.add_argument('--model', help='diff against this network')
    add_cache_argument(inspect)
    inspect.set_defaults(handler=command_inspect)

    listing = commands.add_parser(
        'list', help='the catalogue of published checkpoints',
        description='Every published slim MobileNet checkpoint with its '
                    'published accuracy, MACs and parameters, and whether '
                    'it is in the cache.')
    listing.add_argument('--family', choices=tuple(registry.FAMILIES))
    listing.add_argument('--sources', action='store_true',
                         help='also list every source URL, in the order '
                              'fetch tries them, with the hash fetch checks '
                              '(sha256, md5, or - for none)')
    add_cache_argument(listing)
    listing.set_defaults(handler=command_list)

    fetch = commands.add_parser(
        'fetch', help='download a catalogue checkpoint into the cache',
        description='Download and unpack a published checkpoint (once); '
                    'prints its prefix.')
    fetch.add_argument('name', metavar='NAME')
    fetch.add_argument('--url', type=url,
                       help='download from this mirror instead')
    fetch.add_argument('--no-progress', action='store_true')
    add_cache_argument(fetch)
    fetch.set_defaults(handler=command_fetch)

    export = commands.add_parser(
        'export', help='frozen graph, SavedModel, TFLite, ONNX, OpenVINO IR '
                       'or Keras model',
        description='Export an inference graph (batch norm folded) and '
                    'check it against the source graph on probe images.')
    add_model_arguments(export, checkpoint_required=False)
    export.add_argument('--format', required=True,
                        choices=('frozen', 'saved_model', 'tflite', 'onnx',
                                 'openvino', 'keras'),
                        help='saved_model has two signatures: '
                             'serving_default (float images) and '
                             'image_bytes (encoded images); openvino writes '
                             'an .xml IR, keras a .keras file')
    export.add_argument('--output', required=True, type=writable_place)
    export.add_argument('--batch-size', type=export_batch_size,
                        help='fixed batch size, 1..%d (default: any)'
                        % graph_format.MAX_BATCH_SIZE)
    export.add_argument('--quantization',
                        choices=('float16', 'dynamic', 'int8'),
                        help='TFLite quantization (int8 needs '
                             '--representative-data)')
    export.add_argument('--inference-type', choices=('uint8', 'int8'),
                        help='integer TFLite of a quantization-aware '
                             'checkpoint (default uint8 for such checkpoints)')
    export.add_argument('--representative-data', metavar='DIR',
                        help='folder of typical images (int8 calibration, '
                             'probe images)')
    export.add_argument('--trainable', action='store_true',
                        help='with --format keras: a trainable Keras 3 model '
                             '(batch norm unfolded, weight decay, Keras '
                             'Applications layer names) instead of the '
                             'folded inference graph')
    add_cache_argument(export)
    export.set_defaults(handler=command_export)

    train = commands.add_parser(
        'train', help='fine-tune a checkpoint on a new dataset',
        description='Fine-tune (train_image_classifier): restore everything '
                    'but the logits, train with batch-norm updates, save '
                    'periodic checkpoints to --train-dir and resume from '
                    'them when run again.')
    train.add_argument('--train-dir', required=True, type=writable_place)
    train.add_argument('--data', required=True,
                       help='class-folder tree, TFRecord file, folder of '
                            'shards or glob, or a research/slim dataset_dir')
    train.add_argument('--split', help='research/slim split in a dataset_dir '
                       '(default: train when it holds several)')
    train.add_argument('--checkpoint', help='starting checkpoint (path or '
                       'catalogue name); default: with --model NETWORK, '
                       'from scratch, else the embedded %s' % (
                           registry.DEFAULT_MODEL))
    train.add_argument('--model', help='nets_factory or catalogue name '
                       '(default: inferred from the checkpoint)')
    train.add_argument('--num-classes', type=positive_int,
                       help='classes of the new head (default: the data\'s)')
    train.add_argument('--checkpoint-exclude-scopes',
                       help='comma list of scopes not restored (default: the '
                            'logits when the classes differ)')
    train.add_argument('--trainable-scopes', help='comma list; default all')
    train.add_argument('--freeze-batch-norm', action='store_true',
                       help='keep batch norm (and dropout) in inference mode')
    train.add_argument('--num-clones', type=positive_int, default=1,
                       help='model_deploy clones, a batch each, gradients '
                            'summed (default %(default)s)')
    train.add_argument('--clone-on-cpu', action='store_true',
                       help='place every clone on the CPU (else GPU i)')
    for name, value in train_config.DEFAULTS._asdict().items():
        if name == 'fine_tune_batch_norm':
            continue
        kind = _TRAIN_OPTION_TYPES.get(name, positive_float)
        choices = {'optimizer': train_config.OPTIMIZERS,
                   'learning_rate_decay_type': train_config.DECAY_TYPES}.get(name)
        # --quantize_delay: train_image_classifier's own spelling too.
        flags = ['--' + name.replace('_', '-')] + (
            ['--' + name] if name == 'quantize_delay' else [])
        train.add_argument(*flags, type=kind, choices=choices, dest=name,
                           help='default %s' % (value,))
    train.add_argument('--no-progress', action='store_true')
    add_cluster_arguments(train)
    add_cache_argument(train)
    train.set_defaults(handler=command_train)

    data = commands.add_parser(
        'data', help='build datasets (TFRecord shards)',
        description='Dataset tools (slimnets.dataset_build).')
    data_commands = data.add_subparsers(dest='data_command',
                                        metavar='SUBCOMMAND')
    data_commands.required = True
    build = data_commands.add_parser(
        'build', parents=[common], help='class folders -> TFRecord shards',
        description='Write a tree of class folders as research/slim '
                    'ImageNet-format TFRecord shards (train-00000-of-0000N, '
                    'validation-...) plus labels.txt, in parallel; a rerun '
                    'skips the shards already written.')
    build.add_argument('--input', required=True,
                       help='folder with one sub-folder per class')
    build.add_argument('--output', required=True, type=writable_place,
                       help='output folder')
    build.add_argument('--shards', type=positive_int, default=2,
                       help='train shards (default %(default)s)')
    build.add_argument('--validation-fraction', type=validation_fraction,
                       default=0.1,
                       help='share of each class for validation, in [0, 1) '
                            '(default %(default)s)')
    build.add_argument('--labels', metavar='FILE',
                       help='class order: one class folder name per line, or '
                            '"label:name" lines')
    build.add_argument('--workers', type=positive_int,
                       help='shards written at once (default: CPU count)')
    build.add_argument('--no-progress', action='store_true')
    build.set_defaults(handler=command_data_build)
    return parser


class _StderrHandler(logging.Handler):
    """slimnets' log records, as plain lines on the current sys.stderr."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + '\n')
        except Exception:  # noqa: BLE001  (logging must never fail a command)
            self.handleError(record)


def show_library_log(verbose):
    """What slimnets logs (where a checkpoint was stored, a source falling
    back, resumed training) reaches the user as plain lines; more with
    --verbose."""
    logger = logging.getLogger('slimnets')
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter('%(message)s'))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv=None):
    """Runs one command; returns the exit status (0, 1 failure, 2 usage,
    143 a `train` stopped by SIGTERM after saving its checkpoint).

    A failure prints one line naming the problem and the fix (the traceback
    only with --debug), Ctrl-C included.  TensorFlow's C++ log lines are
    dropped unless --verbose or TF_CPP_MIN_LOG_LEVEL asks for them.
    """
    args = build_parser().parse_args(argv)
    show_library_log(args.verbose)
    tflog.prefer_session_thread_pools()
    level = tflog.level_from_environment(verbose=args.verbose)
    library_log = logging.getLogger('slimnets')
    propagate = library_log.propagate
    # Each line once, by show_library_log's handler, even when a dependency
    # configured the root logger (absl and tf2onnx may).
    library_log.propagate = False
    try:
        with tflog.filtered_stderr(level), tflog.quiet_python(args.verbose):
            args.handler(args)
    except (SlimnetsError, KeyboardInterrupt) as error:
        if args.debug:
            raise
        print('slimnets %s: error: %s' % (args.command, one_line(error)),
              file=sys.stderr)
        if isinstance(error, UsageError):
            return 2
        # 143 after SIGTERM (what was done is saved), else 1.
        return getattr(error, 'exit_status', 1)
    finally:
        library_log.propagate = propagate
    return 0


def one_line(error):
    """A failure's message on one bounded line."""
    if isinstance(error, KeyboardInterrupt):
        return 'interrupted (Ctrl-C); nothing half-written was kept'
    message = str(error)
    message = ' '.join(line.strip() for line in message.splitlines())
    return message[:1500] + ' ...' if len(message) > 1500 else message


if __name__ == '__main__':
    sys.exit(main())
