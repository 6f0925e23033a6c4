"""Google's quantized TFLite MobileNets, rebuilt by slimnets.

For each quantized file in ../shared/fixtures/pretrained/:

1. `quantized_tflite.tflite_to_qat_checkpoint`: float weights plus every
   weights_quant / act_quant range, as a slim QAT checkpoint;
2. `quantized_tflite.export_tflite` of that checkpoint: the integer model
   again (uint8 in and out), built from the `create_eval_graph` graph;
3. both models on the three shared photos (Inception eval preprocessing)
   and on N random [-1, 1] images: top-1 agreement, share of uint8
   outputs within one quantization step of Google's, the largest
   difference in steps; and the export's own check against its
   fake-quant eval graph.

Prints a table (and --json FILE).  Run:
    .venv/bin/python benchmarks/quantized_tflite_reproduction.py
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import inference
from slimnets import quantized_tflite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(os.path.dirname(ROOT), 'shared', 'fixtures',
                          'pretrained')
FILES = ('mobilenet_v1_0.25_128_quant', 'mobilenet_v1_0.75_192_quant',
         'mobilenet_v2_1.0_224_quant', 'mobilenet_v3_small_1.0_224_uint8')
PHOTOS = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')


def images(size, random_count):
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        image = inference.decode_and_preprocess(encoded, size)
        photos = [sess.run(image, {encoded: inference.read_image_file(
            os.path.join(PRETRAINED, name))}) for name in PHOTOS]
    noise = np.random.RandomState(0).uniform(-1, 1, (random_count, size,
                                                     size, 3))
    return np.concatenate([np.stack(photos), noise]).astype(np.float32)


def measure(name, folder, random_count):
    google = os.path.join(PRETRAINED, name + '.tflite')
    start = time.time()
    prefix, identity, input_stats = quantized_tflite.tflite_to_qat_checkpoint(
        google, os.path.join(folder, name, 'model.ckpt'))
    size = quantized_tflite.tflite_input_size(google)
    batch = images(size, random_count)
    output = os.path.join(folder, name + '.tflite')
    report = quantized_tflite.export_tflite(output, prefix, image_size=size,
                                            input_stats=input_stats,
                                            probe=batch[:len(PHOTOS)])
    expected, _, _ = quantized_tflite.run_integer_tflite(google, batch)
    actual, _, _ = quantized_tflite.run_integer_tflite(output, batch)
    steps = np.abs(actual.astype(int) - expected.astype(int))
    photos = slice(0, len(PHOTOS))
    return {
        'file': name, 'network': identity.network,
        'photos_top1_same': int(np.sum(actual[photos].argmax(1) ==
                                       expected[photos].argmax(1))),
        'random_top1_same': int(np.sum(actual[len(PHOTOS):].argmax(1) ==
                                       expected[len(PHOTOS):].argmax(1))),
        'random_images': random_count,
        'within_one_step': float(np.mean(steps <= 1)),
        'max_steps': int(steps.max()),
        'size_google': os.path.getsize(google),
        'size_slimnets': report.size_bytes,
        'vs_eval_graph_within_one_step': report.within_one_step,
        'vs_eval_graph_top1': report.top1_agreement,
        'seconds': round(time.time() - start, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--random', type=int, default=16,
                        help='random images besides the three photos')
    parser.add_argument('--json', help='also write the rows here')
    args = parser.parse_args()
    if not os.path.isdir(PRETRAINED):
        sys.exit('no %s: the fixtures live in ../shared' % PRETRAINED)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in FILES:
            rows.append(measure(name, folder, args.random))
            row = rows[-1]
            print('%-34s photos top-1 %d/3  random top-1 %d/%d  within one '
                  'step %.2f%%  max %d steps  size %d vs %d bytes  (vs its '
                  'eval graph: %.1f%% within one step)  %.0fs' % (
                      row['file'], row['photos_top1_same'],
                      row['random_top1_same'], row['random_images'],
                      100 * row['within_one_step'], row['max_steps'],
                      row['size_slimnets'], row['size_google'],
                      100 * row['vs_eval_graph_within_one_step'],
                      row['seconds']), flush=True)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(rows, handle, indent=1)


if __name__ == '__main__':
    main()
