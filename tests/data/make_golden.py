"""Regenerates tests/data/golden.npz and golden.json (see PROVENANCE.md).

Run from the repository root, beside ../shared:

    .venv/bin/python tests/data/make_golden.py

Not part of the test run; the tests only read what it wrote.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import golden  # noqa: E402  (tests/golden.py: the configurations)

SHARED = os.path.join(os.path.dirname(os.path.dirname(HERE)), '..', 'shared')
PRETRAINED = os.path.join(SHARED, 'fixtures', 'pretrained')
REFERENCE = os.path.join(SHARED, 'fixtures', 'reference')


def _codebook(name, value, arrays):
    """Stores `value` losslessly: uint8 codes into a float32 table when it
    holds at most 256 distinct values (dequantized uint8 weights), else raw."""
    table, codes = np.unique(value, return_inverse=True)
    if table.size <= 256:
        arrays['real/table/' + name] = table.astype(np.float32)
        arrays['real/codes/' + name] = codes.reshape(value.shape).astype(np.uint8)
    else:
        arrays['real/raw/' + name] = value


def main():
    arrays = {}
    document = {'configurations': {}}
    for name, config in golden.CONFIGURATIONS.items():
        with open(os.path.join(REFERENCE, config['fixture'],
                               'manifest.json')) as handle:
            manifest = json.load(handle)
        built = golden.build(name)
        variables = [[v.op.name, v.shape.as_list()]
                     for v in built['variables']]
        assert variables == [row[:2] for row in manifest['global_variables']]
        document['configurations'][name] = {
            'fixture': config['fixture'], 'variables': variables}
        arrays['logits/' + name] = golden.logits(built)
    reader = tf.train.load_checkpoint(
        os.path.join(PRETRAINED, 'mobilenet_v1', '0.25_128', 'model.ckpt'))
    for name in sorted(reader.get_variable_to_shape_map()):
        _codebook(name, reader.get_tensor(name), arrays)
    image = tf2.io.decode_image(tf2.io.read_file(
        os.path.join(PRETRAINED, 'cat.bmp')), channels=3)
    image = tf2.image.resize(tf2.cast(image, tf2.float32), [128, 128])
    arrays['real/cat_128'] = ((image - 127.5) / 127.5).numpy()
    np.savez_compressed(os.path.join(HERE, 'golden.npz'), **arrays)
    with open(os.path.join(HERE, 'golden.json'), 'w') as handle:
        json.dump(document, handle, indent=1)
        handle.write('\n')


if __name__ == '__main__':
    main()
