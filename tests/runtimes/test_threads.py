"""Classifiers built and used from many threads at once give the sequential
answers (arg scopes are per thread; no other graph-building state is
shared)."""

import os
import threading

import numpy as np
import pytest

from slimnets.images import read_image_file
from slimnets.inference import Classifier

MODELS = ('mobilenet_v1/0.25_128', 'mobilenet_v1/0.75_192',
          'mobilenet_v2/1.0_224', 'mobilenet_v3_small/1.0_224')
IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')


@pytest.fixture(scope='module')
def sequential(pretrained_dir):
    """{model: (checkpoint, probabilities [3, 1001])}, one at a time."""
    data = [read_image_file(os.path.join(pretrained_dir, n)) for n in IMAGES]
    answers = {}
    for model in MODELS:
        prefix = os.path.join(pretrained_dir, model, 'model.ckpt')
        with Classifier(prefix) as classifier:
            answers[model] = (prefix, classifier.predict(data))
    return data, answers


def _run_threads(jobs, data):
    """Builds one Classifier per job at once (a barrier lines the threads
    up) and predicts; {index: probabilities or the exception}."""
    barrier = threading.Barrier(len(jobs))
    results = {}

    def work(index, prefix):
        try:
            barrier.wait(timeout=60)
            with Classifier(prefix) as classifier:
                results[index] = classifier.predict(data)
        except Exception as error:  # noqa: BLE001  (reported by the test)
            results[index] = error

    threads = [threading.Thread(target=work, args=(i, prefix))
               for i, prefix in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results


def test_two_classifiers_built_at_once_agree_with_sequential(sequential):
    data, answers = sequential
    for _ in range(3):
        results = _run_threads([answers[MODELS[0]][0], answers[MODELS[2]][0]],
                               data)
        for index, model in enumerate((MODELS[0], MODELS[2])):
            assert not isinstance(results[index], Exception), results[index]
            np.testing.assert_allclose(results[index], answers[model][1],
                                       atol=1e-5)


def test_eight_threads_four_models(sequential):
    data, answers = sequential
    jobs = [MODELS[i % 4] for i in range(8)]
    results = _run_threads([answers[m][0] for m in jobs], data)
    for index, model in enumerate(jobs):
        assert not isinstance(results[index], Exception), results[index]
        np.testing.assert_allclose(results[index], answers[model][1],
                                   atol=1e-5)
        assert (results[index].argmax(1) == answers[model][1].argmax(1)).all()
