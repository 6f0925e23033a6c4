"""Shared test fixtures: ../shared, the command line, graphs and sessions.

* `../shared` is located once, in `reference.py` (`$SLIMNETS_SHARED` moves
  it, or hides it when set to nothing); tests that need it skip with one
  reason through the `shared_dir`, `reference_dir` and `pretrained_dir`
  fixtures or `reference.require(path)`.
* `cli` runs `slimnets ...` in this process (fast: TensorFlow is already
  imported) and `cli_process` in a fresh one (for the few end-to-end tests
  whose point is the installed program).  Both return `Completed(returncode,
  stdout, stderr)`; `one_line_error` asserts a failure printed one line.
* `session` gives a fresh graph and a session on it.
"""

import collections
import contextlib
import io
import os
import socket
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from slimnets import nets_factory
from slimnets.images import read_image_file

import reference

Completed = collections.namedtuple('Completed', ['returncode', 'stdout',
                                                 'stderr'])


def run_main(main, *args):
    """`main([args])` of a command-line module in this process, its exit
    status and output captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Completed(code, stdout.getvalue(), stderr.getvalue())


def run_cli(*args):
    """`slimnets ARGS` in this process."""
    from slimnets import cli as cli_module
    return run_main(cli_module.main, *args)


def run_cli_process(*args, cwd=None, env=None, timeout=600):
    """`python -m slimnets ARGS` in a fresh process."""
    completed = subprocess.run(
        [sys.executable, '-m', 'slimnets'] + [str(a) for a in args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return Completed(completed.returncode, completed.stdout, completed.stderr)


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (for servers a test
    starts)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket()
            handle.bind(('127.0.0.1', 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def assert_one_line_error(completed, *fragments, status=1):
    """The command failed with `status`, no traceback, and a last line
    'slimnets CMD: error: ...' holding every fragment."""
    assert completed.returncode == status, completed.stdout + completed.stderr
    assert 'Traceback' not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith('slimnets') and ': error: ' in last, last
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope='session', autouse=True)
def test_cache(tmp_path_factory):
    """Points $SLIMNETS_CACHE at one folder for the whole run, so tests never
    write into the checkout's checkpoints/ or the user's ~/.cache/slimnets
    (the runtimes `auto` chose are remembered there across tests)."""
    folder = str(tmp_path_factory.mktemp('cache'))
    previous = os.environ.get('SLIMNETS_CACHE')
    os.environ['SLIMNETS_CACHE'] = folder
    yield folder
    if previous is None:
        os.environ.pop('SLIMNETS_CACHE', None)
    else:
        os.environ['SLIMNETS_CACHE'] = previous


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def cli_process():
    return run_cli_process


@pytest.fixture
def one_line_error():
    return assert_one_line_error


@pytest.fixture(scope='session')
def shared_dir():
    return reference.require(reference.SHARED)


@pytest.fixture(scope='session')
def reference_dir():
    return reference.require(reference.REFERENCE)


@pytest.fixture(scope='session')
def pretrained_dir():
    return reference.require(reference.PRETRAINED)


@pytest.fixture(scope='session')
def pretrained_v2(pretrained_dir):
    """Google's MobileNet v2 1.0_224 (recovered checkpoint prefix) and the
    three shared images, encoded: (prefix, [bytes] * 3)."""

    prefix = os.path.join(pretrained_dir, 'mobilenet_v2', '1.0_224',
                          'model.ckpt')
    reference.require(prefix + '.index')
    return prefix, [read_image_file(os.path.join(pretrained_dir, name))
                    for name in ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')]


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory):
    """A MobileNet v1 0.25 (1001 classes, 128 px) checkpoint with freshly
    initialized weights: its prefix."""

    prefix = str(tmp_path_factory.mktemp('ckpt') / 'model.ckpt')
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 128, 128, 3])
        nets_factory.get_network_fn('mobilenet_v1', 1001)(
            images, depth_multiplier=0.25)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


@pytest.fixture
def session():
    """A session on a fresh default graph, closed afterwards."""
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        yield sess


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """A complete mobilenet_v1_0.25_128 checkpoint (random weights, the
    first convolution all ones) and its files' bytes."""
    folder = tmp_path_factory.mktemp('source')
    prefix = str(folder / 'model.ckpt')
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 128, 128, 3])
        nets_factory.get_network_fn('mobilenet_v1', 1001)(
            images, depth_multiplier=0.25)
        first = [v for v in tf.global_variables()
                 if v.op.name == 'MobilenetV1/Conv2d_0/weights'][0]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(first.assign(tf.ones_like(first)))
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    files = {}
    for name in os.listdir(folder):
        if name.startswith('model.ckpt'):
            with open(folder / name, 'rb') as handle:
                files[name] = handle.read()
    return files

