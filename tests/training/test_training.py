"""Fine-tuning end to end: `slimnets train`, resume after a kill, eval and
export of the result, and the recipe options through the Python API."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import training

import reference

COLOURS = {'blue': (40, 60, 200), 'green': (40, 180, 60), 'red': (200, 40, 40)}


@pytest.fixture(scope='module')
def colour_dataset(tmp_path_factory):
    """Three classes of noisy single-colour 48x48 PNGs, 16 each."""
    root = tmp_path_factory.mktemp('colours')
    rng = np.random.RandomState(0)
    for name, colour in COLOURS.items():
        os.makedirs(root / name)
        for index in range(16):
            pixels = np.clip(np.array(colour)[None, None] +
                             rng.normal(0, 30, (48, 48, 3)), 0, 255)
            png = tf2.io.encode_png(pixels.astype(np.uint8)).numpy()
            (root / name / ('%d.png' % index)).write_bytes(png)
    return str(root)


def source_checkpoint():
    return reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')]




RECIPE = ['--freeze-batch-norm', '--optimizer', 'adam', '--learning-rate',
          '0.001', '--batch-size', '12', '--image-size', '64', '--seed', '1',
          '--no-progress']


def test_train_then_eval_and_export(colour_dataset, tmp_path, cli,
                                    one_line_error):
    train_dir = str(tmp_path / 'run')
    completed = cli('train', '--train-dir', train_dir, '--data',
                         colour_dataset, '--checkpoint', source_checkpoint(),
                         '--max-steps', '40', '--save-every-steps', '10',
                         *RECIPE)
    assert completed.returncode == 0, completed.stderr[-3000:]
    match = re.search(r'loss ([\d.]+) \(first 10\) -> ([\d.]+) \(last 10\)',
                      completed.stdout)
    first, last = float(match.group(1)), float(match.group(2))
    assert last < 0.5 * first
    assert 'classes: blue, green, red' in completed.stdout
    assert tf2.train.latest_checkpoint(train_dir).endswith('model.ckpt-40')
    # Periodic checkpoints were kept along the way.
    assert os.path.exists(os.path.join(train_dir, 'model.ckpt-30.index'))

    evaluated = cli('eval', '--checkpoint', train_dir, '--data',
                         colour_dataset, '--no-progress')
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    top1 = float(re.search(r'^top-1\s+([\d.]+)$', evaluated.stdout,
                           re.M).group(1))
    assert top1 > 0.8  # chance is 1/3
    assert 'mobilenet_v1 (depth_multiplier=0.25)' in evaluated.stdout

    exported = cli('export', '--checkpoint', train_dir, '--format',
                        'frozen', '--output', str(tmp_path / 'model.pb'))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert 'at 64x64' in exported.stdout
    classified = cli('classify', os.path.join(colour_dataset, 'red',
                                                   '0.png'),
                          '--checkpoint', train_dir, '--top-k', '1')
    assert re.search(r'^\s+2\s+red\s', classified.stdout, re.M), \
        classified.stdout

    # Another set of classes in the same folder: refused before anything is
    # overwritten, so the run above still classifies.
    two = tmp_path / 'two'
    for name in ('blue', 'red'):
        os.makedirs(two / name)
        for index in range(3):
            os.link(os.path.join(colour_dataset, name, '%d.png' % index),
                    str(two / name / ('%d.png' % index)))
    labels_before = (tmp_path / 'run' / 'labels.txt').read_text()
    model_before = (tmp_path / 'run' / 'model.json').read_text()
    refused = cli('train', '--train-dir', train_dir, '--data', str(two),
                  '--checkpoint', source_checkpoint(), '--max-steps', '2',
                  *RECIPE)
    one_line_error(refused, 'holds a run of another model',
                   'num_classes 3, now 2', '--train-dir')
    assert (tmp_path / 'run' / 'labels.txt').read_text() == labels_before
    assert (tmp_path / 'run' / 'model.json').read_text() == model_before


def _checkpoint_step(train_dir):
    latest = tf2.train.latest_checkpoint(train_dir) if os.path.isdir(
        train_dir) else None
    return int(latest.rsplit('-', 1)[1]) if latest else 0


def test_a_killed_run_resumes(colour_dataset, tmp_path, cli):
    train_dir = str(tmp_path / 'run')
    args = [sys.executable, '-m', 'slimnets', 'train', '--train-dir',
            train_dir, '--data', colour_dataset, '--checkpoint',
            source_checkpoint(), '--save-every-steps', '5'] + RECIPE
    process = subprocess.Popen(args + ['--max-steps', '100000'],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while _checkpoint_step(train_dir) < 10 and time.time() < deadline:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = _checkpoint_step(train_dir)
    assert killed_at >= 10
    # What a kill during a save leaves behind is cleaned up by the rerun.
    stale = os.path.join(train_dir, 'model.ckpt-999.data-00000-of-00001'
                         '.tempstate123456789')
    with open(stale, 'wb') as handle:
        handle.write(b'partial')
    target = killed_at + 10
    completed = cli('train', '--train-dir', train_dir, '--data',
                         colour_dataset, '--checkpoint', source_checkpoint(),
                         '--save-every-steps', '5', '--max-steps', str(target),
                         *RECIPE)
    assert completed.returncode == 0, completed.stderr[-3000:]
    resumed = int(re.search(r'resumed at step (\d+)', completed.stdout)
                  .group(1))
    assert resumed >= killed_at
    assert _checkpoint_step(train_dir) == target
    assert not os.path.exists(stale)


def test_batch_norm_updates_moving_averages_and_trainable_scopes(colour_dataset, tmp_path):
    result = training.train(
        str(tmp_path / 'run'), colour_dataset, checkpoint=source_checkpoint(),
        trainable_scopes=['MobilenetV1/Logits',
                          'MobilenetV1/Conv2d_13_pointwise'],
        max_steps=6, batch_size=8, image_size=64, optimizer='momentum',
        learning_rate=0.01, moving_average_decay=0.9, batch_norm_decay=0.5,
        save_every_steps=100, progress=False)
    assert (result.first_step, result.last_step) == (0, 6)
    ours = tf2.train.load_checkpoint(result.checkpoint)
    source = tf2.train.load_checkpoint(source_checkpoint())
    names = ours.get_variable_to_shape_map()
    # Batch norm ran in training mode and its updates ran with each step.
    stat = 'MobilenetV1/Conv2d_3_pointwise/BatchNorm/moving_mean'
    assert np.abs(ours.get_tensor(stat) - source.get_tensor(stat)).max() > 1e-3
    # Only the chosen scopes trained.
    frozen = 'MobilenetV1/Conv2d_3_pointwise/weights'
    np.testing.assert_array_equal(ours.get_tensor(frozen),
                                  source.get_tensor(frozen))
    trained = 'MobilenetV1/Conv2d_13_pointwise/weights'
    assert np.abs(ours.get_tensor(trained) -
                  source.get_tensor(trained)).max() > 0
    # Moving averages of the weights are saved as shadows.
    assert trained + '/ExponentialMovingAverage' in names
    assert ours.get_tensor('MobilenetV1/Logits/Conv2d_1c_1x1/biases').shape \
        == (3,)


@pytest.mark.parametrize('options', [
    dict(optimizer='rmsprop', learning_rate_decay_type='exponential'),
    dict(optimizer='sgd', learning_rate_decay_type='polynomial',
         label_smoothing=0.1),
    dict(optimizer='adadelta', learning_rate_decay_type='fixed'),
    dict(optimizer='adagrad'), dict(optimizer='ftrl'),
])
def test_recipe_options_run(colour_dataset, tmp_path, options):
    result = training.train(str(tmp_path / 'run'), colour_dataset,
                            model='mobilenet_v1_025', max_steps=2,
                            batch_size=4, image_size=32, progress=False,
                            **options)
    assert result.last_step == 2 and all(np.isfinite(result.losses))


def test_bad_training_input(colour_dataset, tmp_path, cli):
    completed = cli('train', '--train-dir', str(tmp_path / 'x'),
                    '--data', colour_dataset, '--no-progress',
                    '--checkpoint', str(tmp_path / 'nowhere' / 'model.ckpt'))
    assert completed.returncode == 1
    assert 'Traceback' not in completed.stderr
    assert 'nowhere' in completed.stderr.strip().splitlines()[-1]
    with pytest.raises(TypeError, match='unknown training options: bogus'):
        training.train(str(tmp_path / 'y'), colour_dataset,
                       model='mobilenet_v1_025', bogus=1)
    with pytest.raises(ValueError, match='optimizer must be one of'):
        training.train(str(tmp_path / 'z'), colour_dataset,
                       model='mobilenet_v1_025', optimizer='lbfgs',
                       max_steps=1, batch_size=2, image_size=32,
                       progress=False)
