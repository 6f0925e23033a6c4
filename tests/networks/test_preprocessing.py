"""Inception preprocessing pinned on small synthetic images."""

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import labels
from slimnets import preprocessing


def run(tensor_fn, feed_value):
    with tf.Graph().as_default():
        placeholder = tf.placeholder(tf.as_dtype(feed_value.dtype),
                                     feed_value.shape)
        output = tensor_fn(placeholder)
        with tf.Session() as sess:
            return sess.run(output, {placeholder: feed_value})


def tf1_bilinear(image, height, width):
    """TF1 resize_bilinear(align_corners=False) in NumPy: source = dst * scale."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((height, width, image.shape[2]), np.float64)
    for y in range(height):
        source_y = y * in_h / height
        y0 = int(np.floor(source_y))
        y1 = min(y0 + 1, in_h - 1)
        dy = source_y - y0
        for x in range(width):
            source_x = x * in_w / width
            x0 = int(np.floor(source_x))
            x1 = min(x0 + 1, in_w - 1)
            dx = source_x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[y, x] = top * (1 - dy) + bottom * dy
    return out


def synthetic_image(height=16, width=16):
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 15, y * 15, (x + y) * 7], axis=-1)
    return image.astype(np.uint8)


def test_eval_preprocessing_matches_numpy():
    image = synthetic_image()
    result = run(lambda x: preprocessing.preprocess_for_eval(x, 6, 6), image)
    # central_crop(0.875) of 16 pixels keeps rows/columns 1..14.
    cropped = image[1:15, 1:15].astype(np.float64) / 255.0
    expected = (tf1_bilinear(cropped, 6, 6) - 0.5) * 2.0
    assert result.shape == (6, 6, 3) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_eval_preprocessing_is_not_tf2_resize():
    image = synthetic_image()
    result = run(lambda x: preprocessing.preprocess_for_eval(x, 6, 6), image)
    cropped = image[1:15, 1:15].astype(np.float32) / 255.0
    tf2_resized = (tf2.image.resize(cropped, [6, 6]).numpy() - 0.5) * 2.0
    assert np.abs(result - tf2_resized).max() > 0.05


def test_eval_preprocessing_of_float_input_and_no_crop():
    image = synthetic_image().astype(np.float32) / 255.0
    result = run(lambda x: preprocessing.preprocess_for_eval(
        x, 16, 16, central_crop=False), image)
    np.testing.assert_allclose(result, (image - 0.5) * 2.0, atol=1e-6)


def test_eval_preprocessing_grayscale():
    result = run(lambda x: preprocessing.preprocess_for_eval(
        x, 4, 4, use_grayscale=True), synthetic_image())
    assert result.shape == (4, 4, 1)


def test_train_preprocessing_shape_range_and_randomness():
    image = synthetic_image(40, 60)
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        placeholder = tf.placeholder(tf.uint8, image.shape)
        output = preprocessing.preprocess_for_train(placeholder, 24, 24,
                                                    fast_mode=False)
        assert output.shape.as_list() == [24, 24, 3]
        with tf.Session() as sess:
            samples = [sess.run(output, {placeholder: image}) for _ in range(4)]
    for sample in samples:
        assert sample.min() >= -1.0 and sample.max() <= 1.0
    assert any(np.abs(samples[0] - s).max() > 1e-3 for s in samples[1:])


def test_train_preprocessing_keeps_the_box():
    image = np.zeros([32, 32, 3], np.uint8)
    image[8:24, 8:24] = 255
    box = np.array([[[0.25, 0.25, 0.75, 0.75]]], np.float32)
    with tf.Graph().as_default():
        tf.set_random_seed(3)
        output = preprocessing.preprocess_for_train(
            tf.constant(image), 16, 16, bbox=tf.constant(box))
        with tf.Session() as sess:
            for _ in range(5):
                value = sess.run(output)
                # min_object_covered=0.1: part of the white box is kept.
                assert value.max() > 0.0


def test_distort_color_orders():
    image = np.full([4, 4, 3], 0.5, np.float32)
    for ordering in range(4):
        result = run(lambda x, o=ordering: preprocessing.distort_color(
            x, o, fast_mode=False), image)
        assert result.min() >= 0.0 and result.max() <= 1.0
    with pytest.raises(ValueError):
        run(lambda x: preprocessing.distort_color(x, 3, fast_mode=True), image)


def test_labels_ship_with_the_package():
    names = labels.imagenet_labels()
    assert len(names) == 1001 and names[0] == 'background'
    assert names[283] == 'tiger cat' and names[653] == 'military uniform'
    assert labels.imagenet_synsets()[1] == 'n01440764'
    assert labels.label_index('n02123159') == 283
    assert labels.label_index('tabby') == 282
    assert labels.label_index('tabby', num_classes=1000) == 281
    with pytest.raises(KeyError):
        labels.label_index('not a class')
