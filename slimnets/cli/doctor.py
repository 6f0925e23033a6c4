"""`slimnets doctor`: check this installation offline.

Prints the versions, whether tf_slim is broken here and whether the
slimnets repair works, then builds every factory network
(`slimnets.analysis.network_report`) and prints what it costs.
"""

import sys

from slimnets.cli import arguments
from slimnets.cli.arguments import CommandError

__all__ = ['add_parser', 'run']


def add_parser(commands):
    """Adds `doctor` to `commands`."""
    doctor = arguments.add_command(
        commands, 'doctor', help='check this installation offline',
        description='Print the versions, whether tf_slim is broken here and '
                    'whether the slimnets repair works, then build every '
                    'factory network and print its parameters, MACs, '
                    'variables, endpoints and speed.')
    doctor.add_argument('--networks', nargs='+', metavar='NAME',
                        help='only these factory networks')
    doctor.add_argument('--image-size', type=arguments.image_size,
                        default=None,
                        help='input size (default: each network\'s own)')
    doctor.set_defaults(handler=run)


def run(args):
    """Prints versions, the tf_slim repair status and the network table."""
    from slimnets import analysis  # pylint: disable=import-outside-toplevel
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
    failures = _print_network_table(names, args.image_size)
    for name in names:
        if name in analysis.KNOWN_DIFFERENCES:
            print('known: %s: %s' % (name, analysis.KNOWN_DIFFERENCES[name]))
    if failures:
        raise CommandError('%d network(s) failed to build or run' % failures)
    print('All %d networks built and ran.' % len(names))


def _print_network_table(names, image_size):
    """One line per network; returns how many failed."""
    from slimnets import analysis  # pylint: disable=import-outside-toplevel

    header = '%-32s %5s %9s %9s %5s %5s %8s %9s  %s' % (
        'network', 'size', 'params', 'MACs', 'vars', 'eps', 'build_s',
        'ms/image', 'published params')
    print(header)
    print('-' * len(header))
    failures = 0
    for name in names:
        try:
            report = analysis.network_report(name, image_size)
        except Exception as error:  # pylint: disable=broad-except
            failures += 1
            print('%-32s FAILED: %s' % (name, error))
            continue
        print('%-32s %5d %8.3fM %8.1fM %5d %5d %8.2f %9.1f  %s' % (
            name, report['image_size'], report['params'] / 1e6,
            report['macs'] / 1e6, report['variables'], report['endpoints'],
            report['build_s'], report['ms_per_image'],
            _published_check(report)))
    return failures


def _versions():
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_slim  # pylint: disable=import-outside-toplevel

    import slimnets  # pylint: disable=import-outside-toplevel
    return [('slimnets', slimnets.__version__), ('tensorflow', tf.__version__),
            ('keras', getattr(tf.keras, '__version__', 'unknown')),
            ('tf-slim', getattr(tf_slim, '__version__', '1.1.0')),
            ('numpy', np.__version__), ('python', sys.version.split()[0])]


def _published_check(report):
    from slimnets import analysis  # pylint: disable=import-outside-toplevel
    if report['image_size'] != 224:
        return '-'
    verdict, published, deviation = analysis.check_published_params(
        report['network'], report['params'])
    if published is None:
        return verdict
    return '%s (%.2fM, %+.1f%%)' % (verdict, published, 100 * deviation)


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
