"""Inception preprocessing, the one every slim MobileNet was trained with.

Evaluation: convert to float in [0, 1], keep the central 87.5%, resize
bilinearly with TF1's `resize_bilinear(align_corners=False)` (pixel corners
aligned as in TF1; TF2's `tf.image.resize` samples at pixel centres and
gives different values), then scale to [-1, 1].

Training: a random crop covering 5-100% of the image with an aspect ratio
in [3/4, 4/3] (around the given boxes), a resize with a random method, a
random horizontal flip and random colour distortions, then [-1, 1].

All functions are graph ops on one image [height, width, 3] and return
[out_height, out_width, 3] float32.
"""

import tensorflow.compat.v1 as tf

from slimnets.errors import InputError

__all__ = [
    'preprocess_for_eval', 'distort_color', 'distorted_bounding_box_crop',
    'preprocess_for_train', 'preprocess_image', 'run_decoding',
    'decode_and_preprocess',
]


def _to_float(image):
    if image.dtype != tf.float32:
        image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    return image


def _to_signed_unit_range(image):
    """[0, 1] -> [-1, 1]."""
    return tf.multiply(tf.subtract(image, 0.5), 2.0)


def preprocess_for_eval(image, height, width, central_fraction=0.875,
                        scope=None, central_crop=True, use_grayscale=False):
    """Central crop, TF1 bilinear resize, scale to [-1, 1].

    Args:
      image: [H, W, C] uint8 (0..255) or float (0..1).
      height, width: output size; None keeps the cropped size.
      central_fraction: fraction of each side kept by the central crop.
      central_crop: whether to crop at all.
      use_grayscale: convert to one grey channel first.

    Returns:
      [height, width, C] float32 in [-1, 1].
    """
    with tf.name_scope(scope, 'eval_image', [image, height, width]):
        image = _to_float(image)
        if use_grayscale:
            image = tf.image.rgb_to_grayscale(image)
        if central_crop and central_fraction:
            image = tf.image.central_crop(image,
                                          central_fraction=central_fraction)
        if height and width:
            # The TF1 kernel itself: corner-aligned sampling, no half-pixel
            # offset (tf.image.resize would shift every sample).
            image = tf.raw_ops.ResizeBilinear(
                images=tf.expand_dims(image, 0), size=[height, width],
                align_corners=False, half_pixel_centers=False)[0]
        return _to_signed_unit_range(image)


def distort_color(image, color_ordering=0, fast_mode=True, scope=None):
    """Random brightness, saturation, hue and contrast, in one of 4 orders.

    Args:
      image: [H, W, 3] float in [0, 1].
      color_ordering: 0..3, which order to apply the distortions in.
      fast_mode: only brightness and saturation.

    Returns:
      [H, W, 3] float in [0, 1].
    """
    def brightness(x):
        return tf.image.random_brightness(x, max_delta=32. / 255.)

    def saturation(x):
        return tf.image.random_saturation(x, lower=0.5, upper=1.5)

    def hue(x):
        return tf.image.random_hue(x, max_delta=0.2)

    def contrast(x):
        return tf.image.random_contrast(x, lower=0.5, upper=1.5)

    if fast_mode:
        orders = [[brightness, saturation], [saturation, brightness]]
    else:
        orders = [[brightness, saturation, hue, contrast],
                  [saturation, brightness, contrast, hue],
                  [contrast, hue, brightness, saturation],
                  [hue, saturation, contrast, brightness]]
    if not 0 <= color_ordering < len(orders):
        raise InputError('color_ordering must be in [0, %d], got %d'
                         % (len(orders) - 1, color_ordering))
    with tf.name_scope(scope, 'distort_color', [image]):
        for distortion in orders[color_ordering]:
            image = distortion(image)
        return tf.clip_by_value(image, 0.0, 1.0)


def distorted_bounding_box_crop(image, bbox, min_object_covered=0.1,
                                aspect_ratio_range=(0.75, 1.33),
                                area_range=(0.05, 1.0), max_attempts=100,
                                scope=None):
    """A random crop that keeps part of one of `bbox`'s boxes.

    Args:
      image: [H, W, C].
      bbox: [1, num_boxes, 4] boxes (ymin, xmin, ymax, xmax) in [0, 1].

    Returns:
      (cropped image [h, w, C], the crop box [1, 1, 4]).
    """
    with tf.name_scope(scope, 'distorted_bounding_box_crop', [image, bbox]):
        begin, size, crop_box = tf.compat.v2.image.sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=bbox,
            min_object_covered=min_object_covered,
            aspect_ratio_range=aspect_ratio_range, area_range=area_range,
            max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
        return tf.slice(image, begin, size), crop_box


def _random_resize(image, height, width, num_methods=4):
    """Resizes with one of `num_methods` methods, picked at random."""
    methods = [tf.image.ResizeMethod.BILINEAR,
               tf.image.ResizeMethod.NEAREST_NEIGHBOR,
               tf.image.ResizeMethod.BICUBIC,
               tf.image.ResizeMethod.AREA][:num_methods]
    choice = tf.random_uniform([], maxval=len(methods), dtype=tf.int32)
    branches = [lambda m=m: tf.image.resize_images(image, [height, width],
                                                   method=m)
                for m in methods]
    resized = tf.switch_case(choice, branches)
    resized.set_shape([height, width, None])
    return resized


def preprocess_for_train(image, height, width, bbox=None, fast_mode=True,
                         scope=None, add_image_summaries=False,
                         random_crop=True, use_grayscale=False):
    """Random crop, random resize method, flip, colour distortion, [-1, 1].

    Args:
      image: [H, W, 3] uint8 or float in [0, 1].
      height, width: output size.
      bbox: [1, num_boxes, 4] boxes to keep part of; default the whole image.
      fast_mode: one resize method and brightness/saturation only.
      add_image_summaries: add image summaries of the steps.
      random_crop: crop at random (else only resize).
      use_grayscale: convert to one grey channel at the end.

    Returns:
      [height, width, 3] float32 in [-1, 1].
    """
    with tf.name_scope(scope, 'distort_image', [image, height, width, bbox]):
        if bbox is None:
            bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32,
                               shape=[1, 1, 4])
        image = _to_float(image)
        if add_image_summaries:
            tf.summary.image('image_with_bounding_boxes',
                             tf.image.draw_bounding_boxes(
                                 tf.expand_dims(image, 0), bbox))
        if random_crop:
            image, _ = distorted_bounding_box_crop(image, bbox)
        image.set_shape([None, None, 3])
        image = _random_resize(image, height, width,
                               num_methods=1 if fast_mode else 4)
        image = tf.image.random_flip_left_right(image)
        ordering = tf.random_uniform([], maxval=2 if fast_mode else 4,
                                     dtype=tf.int32)
        image = tf.switch_case(ordering, [
            lambda o=o: distort_color(image, o, fast_mode)
            for o in range(2 if fast_mode else 4)])
        image.set_shape([height, width, 3])
        if add_image_summaries:
            tf.summary.image('final_distorted_image', tf.expand_dims(image, 0))
        if use_grayscale:
            image = tf.image.rgb_to_grayscale(image)
        return _to_signed_unit_range(image)


def preprocess_image(image, height, width, is_training=False, bbox=None,
                     fast_mode=True, add_image_summaries=False,
                     crop_image=True, use_grayscale=False):
    """`preprocess_for_train` or `preprocess_for_eval`."""
    if is_training:
        return preprocess_for_train(image, height, width, bbox, fast_mode,
                                    add_image_summaries=add_image_summaries,
                                    random_crop=crop_image,
                                    use_grayscale=use_grayscale)
    return preprocess_for_eval(image, height, width, central_crop=crop_image,
                               use_grayscale=use_grayscale)


def run_decoding(sess, fetches, feed_dict=None):
    """`sess.run(fetches, feed_dict)` for a graph that parses or decodes
    input data (serialized Examples, image bytes).

    Damaged input can make TensorFlow's error message quote raw bytes of
    it (a PNG chunk name, a feature key), which are not UTF-8; TensorFlow
    then raises UnicodeDecodeError in place of its own error.  That is
    raised here as `tf.errors.InvalidArgumentError`, like any other error
    about damaged input.
    """
    try:
        return sess.run(fetches, feed_dict)
    except UnicodeDecodeError:
        raise tf.errors.InvalidArgumentError(
            None, None, 'the data is damaged (TensorFlow\'s message about it '
            'quotes bytes that are not UTF-8)') from None


def decode_and_preprocess(encoded, image_size):
    """Encoded image bytes (scalar string) -> [size, size, 3] in [-1, 1]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return preprocess_for_eval(image, image_size, image_size)
