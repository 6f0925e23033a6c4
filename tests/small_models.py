"""Small trained-looking checkpoints and images for runtime and export tests.

A freshly initialized MobileNet has moving statistics (mean 0, variance 1)
that do not fit its activations: they shrink layer by layer and every image
gets the same probabilities, so no comparison of two runtimes could fail on
it.  `calibrated_checkpoint` sets each batch norm's moving statistics to
the batch statistics of its input on random images, which gives a network
whose outputs differ from image to image the way a trained one's do.
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import inference

_BATCH_NORMS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')


def smooth_images(count, size, seed=0):
    """[count, size, size, 3] float32 in [-1, 1]: upsampled noise, so that
    images have structure at several scales."""
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(-1, 1, [count, 6, 6, 3]).astype(np.float32)
    fine = rng.uniform(-0.3, 0.3, [count, size, size, 3]).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.image.resize_bilinear(coarse, [size, size]) + fine
        return np.clip(sess.run(images), -1, 1)


def encoded_pngs(images):
    """[N, H, W, 3] in [-1, 1] -> a list of PNG bytes."""
    with tf.Graph().as_default(), tf.Session() as sess:
        pixels = tf.placeholder(tf.float32, [None, None, 3])
        png = tf.io.encode_png(tf.cast(tf.round((pixels + 1) * 127.5),
                                       tf.uint8))
        return [sess.run(png, {pixels: image}) for image in images]


def calibrated_checkpoint(folder, network='mobilenet_v2', depth=0.35,
                          size=96, num_classes=10, seed=0):
    """Writes a checkpoint of `network` with calibrated batch norms.

    Returns:
      (ModelSpec, checkpoint prefix).
    """
    spec = inference.ModelSpec(network, {'depth_multiplier': depth}, size,
                               num_classes)
    images = smooth_images(8, size, seed=seed + 1)
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        inputs = tf.placeholder(tf.float32, [None, size, size, 3])
        # In training mode every batch norm normalizes with its input's batch
        # statistics (outputs 1 and 2 of the fused op): one run gives them
        # all, and inference with them as moving statistics then matches.
        inference.build_network(spec, inputs, is_training=True)
        saver = tf.train.Saver()
        variables = {v.op.name: v for v in tf.global_variables()}
        norms = [op for op in graph.get_operations()
                 if op.type in _BATCH_NORMS]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            statistics = sess.run([(op.outputs[1], op.outputs[2])
                                   for op in norms], {inputs: images})
            for op, (mean, variance) in zip(norms, statistics):
                beta = op.inputs[2]  # through its read op to the variable
                while beta.op.type in ('Identity', 'ReadVariableOp'):
                    beta = beta.op.inputs[0]
                scope = beta.op.name.rsplit('/', 1)[0]
                variables[scope + '/moving_mean'].load(mean, sess)
                variables[scope + '/moving_variance'].load(variance, sess)
            prefix = saver.save(sess, os.path.join(folder, 'model.ckpt'),
                                write_meta_graph=False)
    return spec, prefix
