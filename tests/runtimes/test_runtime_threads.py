"""`num_threads`: every runtime runs on the thread count it is given
(issue 24: benchmarks compare runtimes at one recorded thread count)."""

import numpy as np
import pytest

from slimnets import optimize
from slimnets import runtimes

import small_models

EXTRA = {'onnxruntime': 'onnx', 'openvino': 'openvino'}


def require_runtime(name):
    if not runtimes.is_installed(name):
        pytest.skip('runtime %s is not installed (pip install '
                    '"slimnets[%s]")' % (name, EXTRA[name]))


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """(folded GraphDef, images, TensorFlow's probabilities)."""
    folder = tmp_path_factory.mktemp('threads_v2')
    spec, prefix = small_models.calibrated_checkpoint(str(folder))
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix)
    images = small_models.smooth_images(2, spec.image_size, seed=3)
    with runtimes.load(graph_def, 'tensorflow') as reference:
        expected = reference.run(images)
    return graph_def, images, expected


def _threads_in_effect(runtime):
    """The thread count the runtime's engine reports (not our attribute)."""
    if runtime.name == 'tensorflow':
        config = runtime.session._config  # pylint: disable=protected-access
        return config.intra_op_parallelism_threads
    if runtime.name == 'onnxruntime':
        return runtime.session.get_session_options().intra_op_num_threads
    if runtime.name == 'openvino':
        return int(runtime.compiled.get_property('INFERENCE_NUM_THREADS'))
    # TFLite's interpreter does not report it: what it was built with
    # (recorded by the test below), else what the runtime passed on.
    return getattr(runtime, 'interpreter_threads', runtime.num_threads)


# Every runtime on one thread (not its default), TensorFlow on two too;
# conversions are the cost, so each converting runtime is loaded once.
@pytest.mark.parametrize('name,threads', [(name, 1) for name in
                                          runtimes.RUNTIMES] +
                         [('tensorflow', 2)])
def test_runtime_runs_on_the_threads_it_is_given(model, name, threads,
                                                 monkeypatch):
    if name in EXTRA:
        require_runtime(name)
    graph_def, images, expected = model
    passed = []
    real = runtimes.tflite_interpreter

    def interpreter(model_content, num_threads=None):
        # TFLite's interpreter does not report its thread count: record
        # what it was built with.
        passed.append(num_threads)
        return real(model_content, num_threads=num_threads)

    monkeypatch.setattr(runtimes.tflite, 'tflite_interpreter', interpreter)
    with runtimes.load(graph_def, name, num_threads=threads) as runtime:
        if name == 'tflite':
            runtime.interpreter_threads = passed[-1]
        assert _threads_in_effect(runtime) == threads
        np.testing.assert_allclose(runtime.run(images), expected,
                                   atol=runtimes.AGREEMENT)


def test_tensorflow_with_more_threads_keeps_batch_one_on_them(model,
                                                              monkeypatch):
    # The one-thread batch-1 session would run on another thread count
    # than the one asked for; with num_threads=2 it is not made.
    monkeypatch.setenv('TF_OVERRIDE_GLOBAL_THREADPOOL', '1')
    graph_def, _, _ = model
    with runtimes.load(graph_def, 'tensorflow', num_threads=2) as runtime:
        assert runtime.one_thread_session is None
        assert runtime.describe(1) == 'tensorflow'
    with runtimes.load(graph_def, 'tensorflow') as runtime:
        assert runtime.one_thread_session is not None


def test_auto_passes_its_threads_on_and_remembers_them_apart(model, tmp_path):
    graph_def, images, expected = model
    with runtimes.load(graph_def, 'auto', cache_dir=str(tmp_path),
                       num_threads=1) as auto:
        np.testing.assert_allclose(auto.run(images), expected,
                                   atol=runtimes.AGREEMENT)
        chosen = auto.runtime_for(len(images))
        assert _threads_in_effect(chosen) == 1
        assert all(r.num_threads == 1 for r in auto.loaded.values())
        key = auto._key(runtimes.batch_bucket(len(images)))  # pylint: disable=protected-access
    assert '|t1|' in key
    default = runtimes.AutoRuntime(graph_def, cache_dir=str(tmp_path))
    assert default._key(2) == '%s|b2|%s' % (  # pylint: disable=protected-access
        default.model_key, runtimes.machine_key())
