"""`slimnets classify`: the top-k ImageNet classes of images
(over `slimnets.inference.Classifier`)."""

import json
import os
import sys

from slimnets import fileio
from slimnets import images as image_files
from slimnets.cli import arguments
from slimnets.cli.output import format_kwargs
from slimnets.errors import UsageError

__all__ = ['add_parser', 'run']


def add_parser(commands):
    """Adds `classify` to `commands`."""
    classify = arguments.add_command(
        commands, 'classify', help='top-k ImageNet classes of images',
        description='Classify images with Inception eval preprocessing '
                    '(central crop 0.875, TF1 bilinear resize, [-1, 1]).')
    classify.add_argument('images', nargs='+', metavar='IMAGE',
                          help="image files; '-' is one image read from "
                               'stdin (slimnets classify - < cat.jpg); '
                               'for many paths use xargs: find DIR -name '
                               "'*.jpg' | xargs slimnets classify")
    arguments.add_model_arguments(classify, checkpoint_required=False)
    arguments.add_max_pixels(classify)
    classify.add_argument('--top-k', type=arguments.positive_int, default=5,
                          help='classes shown per image, 1 to the model\'s '
                               'class count (default %(default)s)')
    classify.add_argument('--json', type=arguments.writable_file,
                          help='also write the results here (the model, '
                               'the network and each image\'s top-k)')
    arguments.add_runtime_argument(classify)
    arguments.add_cache_argument(classify)
    classify.set_defaults(handler=run)


def run(args):
    """Prints the model, the runtime and each image's top-k classes."""
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
            spec.network, format_kwargs(spec.kwargs), spec.image_size,
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
            _write_json(args.json, classifier, runtime, results)


def _write_json(path, classifier, runtime, results):
    spec = classifier.spec
    fileio.write_bytes(path, (json.dumps({
        'model': classifier.model_name, 'network': spec.network,
        'network_kwargs': spec.kwargs, 'image_size': spec.image_size,
        'checkpoint': classifier.checkpoint, 'runtime': runtime,
        'images': results}, indent=1) + '\n').encode('utf-8'))
    print('written: %s' % path)


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
