"""The `slimnets` command line (`python -m slimnets` does the same).

Each command is a thin layer over the Python API named in its help, and
lives in the module of this package named after it:
  classify.py     classify  top-k ImageNet classes of images
  evaluate.py     eval      top-1 / top-5 over labelled images
  checkpoints.py  inspect   what a checkpoint holds and which network
                  list      the catalogue of published checkpoints
                  fetch     download a catalogue checkpoint
  export.py       export    frozen, SavedModel, TFLite, ONNX, OpenVINO, Keras
  train.py        train     fine-tune a checkpoint on new classes
  data.py         data      build TFRecord shards from class folders
  doctor.py       doctor    check this installation offline
Each has `add_parser(commands)`, which adds its subcommand(s) with their
options and handler; `arguments.py` holds the argument types, range checks
and the options several commands share, `output.py` the log handler.
Errors are one line on stderr and exit status 1 (2 for a usage error).
"""

import logging
import sys

# Only modules that do not import TensorFlow are imported here (and by the
# command modules), so that `slimnets --help` and `slimnets CMD --help`
# answer at once; each command imports the (TensorFlow) modules it uses
# when it runs.
from slimnets import tflog
from slimnets.cli import checkpoints
from slimnets.cli import classify
from slimnets.cli import data
from slimnets.cli import doctor
from slimnets.cli import evaluate
from slimnets.cli import export
from slimnets.cli import train
from slimnets.cli.arguments import ArgumentParser
from slimnets.cli.arguments import CommandError
from slimnets.cli.output import show_library_log
from slimnets.errors import SlimnetsError
from slimnets.errors import UsageError

# ArgumentParser, CommandError and show_library_log: the legacy scripts
# (slimnets.legacy) use them too.
__all__ = ['ArgumentParser', 'CommandError', 'build_parser', 'main',
           'one_line', 'show_library_log']

# In the order `slimnets --help` lists their commands.
COMMAND_MODULES = (doctor, classify, evaluate, checkpoints, export, train,
                   data)


def build_parser():
    """The `slimnets` parser: every command module's subcommands."""
    parser = ArgumentParser(
        prog='slimnets',
        description='TF-Slim MobileNets (v1, v2, v3, EdgeTPU) on current '
                    'TensorFlow.')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True
    for module in COMMAND_MODULES:
        module.add_parser(commands)
    return parser


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

