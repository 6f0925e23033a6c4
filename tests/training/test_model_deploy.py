"""research/slim model_deploy: devices and scopes, the exactness of clones
(2 clones of batch B step as 1 of batch 2B), and `train --num-clones`."""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import nets_factory
from slimnets.deployment import model_deploy

BATCH = 3          # per clone
SIZE = 64


def test_devices_and_scopes_are_the_reference_ones():
    one = model_deploy.DeploymentConfig()
    assert (one.clone_scope(0), one.clone_device(0)) == ('', '')
    assert one.variables_device() == '/device:CPU:0'
    assert one.optimizer_device() == '/device:CPU:0'
    assert one.inputs_device() == '/device:CPU:0'
    two = model_deploy.DeploymentConfig(num_clones=2)
    assert [two.clone_scope(i) for i in range(2)] == ['clone_0', 'clone_1']
    assert [two.clone_device(i) for i in range(2)] == ['/device:GPU:0',
                                                       '/device:GPU:1']
    cpu = model_deploy.DeploymentConfig(num_clones=2, clone_on_cpu=True)
    assert cpu.clone_device(1) == '/device:CPU:0'
    ps = model_deploy.DeploymentConfig(num_clones=2, num_ps_tasks=2,
                                       num_replicas=2)
    assert ps.clone_device(0) == '/job:worker/device:GPU:0'
    assert ps.optimizer_device() == '/job:worker/device:CPU:0'
    with tf.Graph().as_default():
        with tf.device(ps.variables_device()):
            first, second = tf.Variable(1.0), tf.Variable(2.0)
    specs = [tf.DeviceSpec.from_string(v.device) for v in (first, second)]
    assert [(d.job, d.task, d.device_type) for d in specs] == [
        ('ps', 0, 'CPU'), ('ps', 1, 'CPU')]      # round robin over ps tasks
    with pytest.raises(model_deploy.InputError):
        two.clone_scope(2)
    with pytest.raises(model_deploy.InputError):
        model_deploy.DeploymentConfig(num_replicas=2)


def _one_step(num_clones, images, labels, start=None):
    """Variables after one momentum step of v1 0.25 with frozen batch norm
    (weight decay on), from `start` (name -> value) or fresh."""
    network_fn = nets_factory.get_network_fn(
        'mobilenet_v1', 5, weight_decay=0.004, is_training=False)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        config = model_deploy.DeploymentConfig(num_clones=num_clones,
                                               clone_on_cpu=True)
        parts = iter(np.split(images, num_clones))
        label_parts = iter(np.split(labels, num_clones))

        def clone_fn():
            logits, _ = network_fn(tf.constant(next(parts)),
                                   depth_multiplier=0.25)
            tf.losses.softmax_cross_entropy(
                tf.one_hot(next(label_parts), 5), logits)
            return logits

        clones = model_deploy.create_clones(config, clone_fn)
        optimizer = tf.train.MomentumOptimizer(0.5, 0.9)
        total_loss, gradients = model_deploy.optimize_clones(clones,
                                                             optimizer)
        train_op = optimizer.apply_gradients(gradients)
        variables = tf.trainable_variables()
        scopes = {op.name.split('/')[0] for op in
                  tf.get_default_graph().get_operations()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if start is not None:
                for variable in variables:
                    variable.load(start[variable.op.name], sess)
            names = [v.op.name for v in variables]
            before = dict(zip(names, sess.run(variables)))
            loss, _ = sess.run([total_loss, train_op])
            after = dict(zip(names, sess.run(variables)))
    return before, after, loss, scopes


def test_two_clones_of_batch_b_step_as_one_clone_of_2b():
    """Batch norm frozen (fine_tune_batch_norm=False): in training mode each
    clone would normalize with its own batch's statistics, which differ
    from those of the 2B batch, so the comparison would not be exact."""
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2 * BATCH, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.randint(0, 5, 2 * BATCH)
    before, single, single_loss, scopes = _one_step(1, images, labels)
    assert not {'clone_0', 'clone_1'} & scopes
    start, cloned, cloned_loss, scopes = _one_step(2, images, labels, before)
    assert {'clone_0', 'clone_1'} <= scopes
    assert sorted(cloned) == sorted(single)   # the variables are shared
    assert cloned_loss == pytest.approx(single_loss, abs=1e-5)
    moved = max(np.abs(single[n] - before[n]).max() for n in single)
    assert moved > 1e-2
    # Measured: 7.5e-9 (float32 sums in another order); a clone loss not
    # divided by the clones, or the regularization counted twice, moves it
    # by far more than 1e-5.
    difference = max(np.abs(cloned[n] - single[n]).max() /
                     max(1.0, np.abs(single[n]).max()) for n in single)
    assert difference < 1e-5, difference
    print('2 clones against one of 2B: max scaled difference %.2g' %
          difference)


def test_train_with_two_clones_on_cpu(cli, tmp_path):
    import reference
    prefix = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')]
    import tensorflow as tf2
    rng = np.random.RandomState(0)
    for name in ('a', 'b'):
        os.makedirs(tmp_path / 'data' / name)
        for index in range(4):
            pixels = rng.randint(0, 255, (40, 40, 3)).astype(np.uint8)
            (tmp_path / 'data' / name / ('%d.png' % index)).write_bytes(
                tf2.io.encode_png(pixels).numpy())
    completed = cli('train', '--train-dir', tmp_path / 'run', '--data',
                    tmp_path / 'data', '--checkpoint', prefix, '--max-steps',
                    '2', '--batch-size', '2', '--image-size', '64',
                    '--num-clones', '2', '--clone-on-cpu',
                    '--freeze-batch-norm', '--no-progress')
    assert completed.returncode == 0, completed.stderr[-3000:]
    names = [n for n, _ in tf.train.list_variables(str(tmp_path / 'run'))]
    assert 'MobilenetV1/Conv2d_0/weights' in names
    assert not any(n.startswith('clone_') for n in names)
    assert 'global_step' in names
