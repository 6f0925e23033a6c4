"""A full quantization-aware fine-tuning run, float checkpoint to uint8 file.

1. `slimnets.training.train(..., quantize_delay=D)`: fine-tune a float
   checkpoint on a class-folder dataset; fake quantization from step D;
2. `slimnets.export.export(..., 'tflite')` of the starting checkpoint (the
   float model) and `slimnets.quantized_tflite.export_tflite` of the QAT
   checkpoint (the integer model, checked against its fake-quant graph);
3. both models' top-1 on a held-out class-folder dataset, their agreement,
   and their sizes.

    .venv/bin/python benchmarks/qat_finetune.py --data flowers/train \\
        --eval-data flowers/val --checkpoint mobilenet_v1_1.0_224 \\
        --steps 4000 --quantize-delay 2000 --output-dir runs/qat

Without --data it trains on generated colour classes (a smoke run).
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import export
from slimnets import inference
from slimnets import quantized_tflite
from slimnets import training


def colour_classes(folder, per_class=24, size=96, seed=0):
    """Three classes of noisy single-colour PNGs (a smoke dataset)."""
    rng = np.random.RandomState(seed)
    for name, colour in (('blue', (40, 60, 200)), ('green', (40, 180, 60)),
                         ('red', (200, 40, 40))):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for index in range(per_class):
            pixels = np.clip(np.array(colour)[None, None] +
                             rng.normal(0, 40, (size, size, 3)), 0, 255)
            with open(os.path.join(folder, name, '%d.png' % index),
                      'wb') as handle:
                handle.write(tf2.io.encode_png(
                    pixels.astype(np.uint8)).numpy())
    return folder


def held_out(data, class_names, image_size, limit):
    """(images [N, s, s, 3] in [-1, 1], labels [N])."""
    examples = inference.evaluation_examples(data, len(class_names),
                                            class_names)[:limit]
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        image = inference.decode_and_preprocess(encoded, image_size)
        pixels = np.stack([sess.run(image, {
            encoded: inference.read_image_file(path)})
            for path, _ in examples])
    return pixels, np.array([label for _, label in examples])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', help='class-folder training data')
    parser.add_argument('--eval-data', help='held-out class folders '
                        '(default: the training data)')
    parser.add_argument('--checkpoint', default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..',
        'shared', 'fixtures', 'pretrained', 'mobilenet_v1', '0.25_128',
        'model.ckpt'))
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--quantize-delay', type=int, default=150)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--learning-rate', type=float, default=0.01)
    parser.add_argument('--batch-norm-decay', type=float, default=0.9,
                        help='how fast batch-norm statistics follow (short '
                             'runs need them to follow)')
    parser.add_argument('--eval-images', type=int, default=500)
    parser.add_argument('--output-dir', default='qat_run')
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    data = args.data or colour_classes(os.path.join(args.output_dir,
                                                    'colours'))
    result = training.train(
        os.path.join(args.output_dir, 'train'), data,
        checkpoint=args.checkpoint, max_steps=args.steps,
        quantize_delay=args.quantize_delay, batch_size=args.batch_size,
        optimizer='sgd', learning_rate=args.learning_rate,
        learning_rate_decay_type='fixed', batch_norm_decay=args.batch_norm_decay,
        progress=sys.stderr.isatty())
    integer_path = os.path.join(args.output_dir, 'model_uint8.tflite')
    integer = quantized_tflite.export_tflite(integer_path, result.checkpoint)
    size = integer.spec.image_size
    # The float model: the same fine-tuned weights without the ranges.
    float_path = os.path.join(args.output_dir, 'model_float.tflite')
    export.export(float_path, 'tflite', result.checkpoint,
                  image_size=size)
    pixels, labels = held_out(args.eval_data or data, result.class_names,
                              size, args.eval_images)
    float_probabilities = export.run_tflite(
        open(float_path, 'rb').read(), pixels)
    _, integer_probabilities, _ = quantized_tflite.run_integer_tflite(
        integer_path, pixels)
    row = {
        'steps': result.last_step, 'quantize_delay': args.quantize_delay,
        'loss_first_10': float(np.mean(result.losses[:10])),
        'loss_last_10': float(np.mean(result.losses[-10:])),
        'eval_images': int(len(labels)),
        'top1_float': float(np.mean(float_probabilities.argmax(1) == labels)),
        'top1_uint8': float(np.mean(integer_probabilities.argmax(1) ==
                                    labels)),
        'top1_agreement': float(np.mean(float_probabilities.argmax(1) ==
                                        integer_probabilities.argmax(1))),
        'size_float': os.path.getsize(float_path),
        'size_uint8': integer.size_bytes,
        'uint8_vs_eval_graph_within_one_step': integer.within_one_step,
    }
    row['size_ratio'] = row['size_float'] / row['size_uint8']
    print(json.dumps(row, indent=1))


if __name__ == '__main__':
    main()
