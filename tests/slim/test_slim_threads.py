"""Arg scopes are per thread: graphs built at once in several threads agree
with the same graphs built one after another."""

import os
import threading

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim
from tf_slim.ops import arg_scope as tf_slim_arg_scope

from slimnets import inference
from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.slim import arg_scope_stack

import reference

# (weight_decay, batch_norm_decay, regularize_depthwise, is_training)
CONFIGS = [
    (4e-5, 0.9997, False, True),
    (1e-3, 0.99, True, False),
    (1e-6, 0.9, False, True),
    (5e-2, 0.5, True, False),
]


def build_signature(config, inside_scope=None):
    """Builds a small MobileNet v1 under the config's arg scope.

    Returns the graph's serialized GraphDef (bytes): every node, attribute
    and constant (regularizer scales, batch-norm decays) is in it.
    """
    weight_decay, bn_decay, regularize_depthwise, is_training = config
    graph = tf.Graph()
    with graph.as_default():
        scope = mobilenet_v1.mobilenet_v1_arg_scope(
            is_training=is_training, weight_decay=weight_decay,
            batch_norm_decay=bn_decay,
            regularize_depthwise=regularize_depthwise)
        with slim.arg_scope(scope):
            # Batch norm and dropout read is_training from the arg scope.
            with slim.arg_scope([slim.batch_norm, slim.dropout],
                                is_training=is_training):
                if inside_scope is not None:
                    inside_scope()
                images = tf.placeholder(tf.float32, [1, 64, 64, 3])
                mobilenet_v1.mobilenet_v1_base(images, depth_multiplier=0.25)
        summary = (len(tf.losses.get_regularization_losses()),
                   len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)))
    return graph.as_graph_def().SerializeToString(deterministic=True), summary


def build_in_threads(configs):
    """Builds every config in its own thread, all inside their arg scopes at
    once (two barriers), so a shared stack would mix them up."""
    entered = threading.Barrier(len(configs))
    built = threading.Barrier(len(configs))
    results = [None] * len(configs)
    errors = []

    def worker(index):
        def rendezvous():
            entered.wait(timeout=60)

        try:
            results[index] = build_signature(configs[index], rendezvous)
            built.wait(timeout=60)
        except Exception as error:  # pylint: disable=broad-except
            errors.append(error)
            entered.abort()
            built.abort()

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(len(configs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope='module')
def sequential():
    return [build_signature(config) for config in CONFIGS]


def test_sequential_builds_differ(sequential):
    # The configs must actually be told apart by the signature.
    assert len({graph for graph, _ in sequential}) == len(CONFIGS)
    for config, (_, (regularized, updates)) in zip(CONFIGS, sequential):
        assert regularized > 0
        assert (updates > 0) == config[3]
    # regularize_depthwise adds the depthwise weights' losses.
    assert sequential[1][1][0] > sequential[0][1][0]


def test_threaded_builds_match_sequential(sequential):
    for _ in range(2):
        threaded = build_in_threads(CONFIGS)
        for index, (got, want) in enumerate(zip(threaded, sequential)):
            assert got[1] == want[1], CONFIGS[index]
            assert got[0] == want[0], CONFIGS[index]


def test_shared_stack_would_mix_scopes(sequential, monkeypatch):
    """The same threaded build on tf-slim's original shared list goes wrong,
    so the test above can fail."""
    shared = [{}]

    def get_shared_stack():
        if not shared:
            shared.append({})
        return shared

    monkeypatch.setattr(tf_slim_arg_scope, '_ARGSTACK', shared)
    monkeypatch.setattr(tf_slim_arg_scope, '_get_arg_stack', get_shared_stack)
    threaded = build_in_threads(CONFIGS)
    assert [g for g, _ in threaded] != [g for g, _ in sequential]


def test_stack_is_installed_once_and_shared_with_tf_slim():
    assert arg_scope_stack.is_installed(tf_slim_arg_scope)
    assert not arg_scope_stack.install(tf_slim_arg_scope)
    assert slim.arg_scope is tf_slim.arg_scope
    # Mixing tf_slim's scope with slimnets' layer (and the reverse).
    with tf.Graph().as_default():
        with tf_slim.arg_scope([slim.conv2d], padding='VALID'):
            net = slim.conv2d(tf.zeros([1, 5, 5, 1]), 1, [3, 3])
        with slim.arg_scope([tf_slim.conv2d], padding='VALID'):
            net2 = tf_slim.conv2d(tf.zeros([1, 5, 5, 1]), 1, [3, 3])
    assert net.shape.as_list() == net2.shape.as_list() == [1, 3, 3, 1]


def test_each_thread_starts_without_scopes_and_keeps_its_own():
    seen = {}
    inner_ready = threading.Event()
    outer_checked = threading.Event()

    def other_thread():
        seen['start'] = dict(slim.current_arg_scope())
        with slim.arg_scope([slim.conv2d], padding='VALID'):
            inner_ready.set()
            outer_checked.wait(timeout=30)
            seen['inside'] = dict(slim.current_arg_scope())
        seen['after'] = dict(slim.current_arg_scope())

    with slim.arg_scope([slim.conv2d], stride=2):
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert inner_ready.wait(timeout=30)
        key = slim.arg_scope_func_key(slim.conv2d)
        assert slim.current_arg_scope()[key] == {'stride': 2}
        outer_checked.set()
        thread.join(timeout=30)
    assert seen['start'] == {}
    assert seen['inside'] == {key: {'padding': 'VALID'}}
    assert seen['after'] == {}
    assert slim.current_arg_scope() == {}


def test_module_repairs_are_applied_once():
    # Importing slimnets.slim applied them; repair_tf_slim() (tested in a
    # fresh process in test_slim_data.py) finds nothing more to do there.
    assert slim.repair_tf_slim_modules() is False
    assert arg_scope_stack.is_installed(tf_slim_arg_scope)


def test_classifiers_built_at_once_match_sequential():
    """Issue 17's symptom: Classifiers for different networks built at the
    same time in several threads used each other's arg scopes (wrong
    batch-norm settings, wrong top-1).  They must equal the sequential ones."""
    checkpoints = [
        os.path.join(reference.require(os.path.join(reference.PRETRAINED,
                                                    name)), 'model.ckpt')
        for name in ('mobilenet_v1/0.25_128', 'mobilenet_v2/1.0_224',
                     'mobilenet_v3_small/1.0_224')]
    with open(reference.require(os.path.join(reference.PRETRAINED,
                                             'cat.bmp')), 'rb') as handle:
        image = handle.read()

    def classify(checkpoint):
        with inference.Classifier(checkpoint, progress=False) as model:
            return model.predict([image])[0]

    sequential = [classify(checkpoint) for checkpoint in checkpoints]
    start = threading.Barrier(len(checkpoints))
    threaded = [None] * len(checkpoints)
    errors = []

    def worker(index):
        try:
            start.wait(timeout=60)
            threaded[index] = classify(checkpoints[index])
        except Exception as error:  # pylint: disable=broad-except
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(len(checkpoints))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for got, want in zip(threaded, sequential):
        # Same graph, checkpoint and input: measured identical (0.0) across
        # runs; the tolerance only allows for kernel scheduling.  Mixed-up
        # scopes moved probabilities by 0.1 to 0.99.
        assert np.argmax(got) == np.argmax(want)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
