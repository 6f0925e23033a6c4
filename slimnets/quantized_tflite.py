"""Integer TFLite models from quantization-aware checkpoints, and back.

A QAT checkpoint (trained under `quantize.create_training_graph`, or
recovered from a quantized TFLite file by `tflite_to_qat_checkpoint` here)
holds the weights and the `weights_quant` / `act_quant` ranges.
`export_tflite` builds the network's `create_eval_graph` form, restores
the checkpoint, freezes it and converts it into a fully integer TFLite
model, uint8 in and out by default as Google's `_quant` files, or int8.
It checks the model against the fake-quant eval graph on probe images and
reports by how much they differ, in output quantization steps.

`tflite_to_qat_checkpoint` recovers from a quantized TFLite MobileNet the
float weights (as `slimnets.checkpoints.converters.tflite_to_float_checkpoint` does) and
also the ranges: each weight tensor's integer grid as
`<layer>/weights_quant/{min,max}`, each activation's as the range variable
of the fake-quant op that produced it (`act_quant`,
`post_activation_bypass_quant`, `conv_quant`, ...), matched by the op
names the file records.
"""

import collections
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import export
from slimnets import fileio
from slimnets import inference
from slimnets import model_info
from slimnets import optimize
from slimnets import quantize
from slimnets import runtimes
from slimnets.checkpoints import converters
from slimnets.errors import QuantizationError
from slimnets.quantize.common import FAKE_QUANT_TYPES

__all__ = [
    'INFERENCE_TYPES', 'DEFAULT_INPUT_STATS', 'QuantizedExportReport',
    'quantization_ranges', 'has_quantization_ranges', 'is_qat_checkpoint',
    'tflite_input_size', 'fake_quant_graph_def', 'convert_graph_def',
    'run_integer_tflite', 'compare_with_graph', 'export_tflite',
    'tflite_quantization_ranges', 'tflite_to_qat_checkpoint',
]

_log = logging.getLogger(__name__)

INFERENCE_TYPES = ('uint8', 'int8')
# Google's files: real input = (q - 128) / 128 for q in [0, 255].
DEFAULT_INPUT_STATS = (128.0, 128.0)

QuantizedExportReport = collections.namedtuple('QuantizedExportReport', [
    'path', 'spec', 'inference_type', 'size_bytes',
    'input_quantization',    # (scale, zero point) of the model's input
    'output_quantization',   # (scale, zero point) of its probabilities
    'max_step_difference',   # max |TFLite - eval graph| in output steps
    'within_one_step',       # fraction of outputs within one step
    'top1_agreement',        # fraction of probes with the same top-1
    'probe_images'])


quantization_ranges = quantize.quantization_ranges
has_quantization_ranges = quantize.has_quantization_ranges


def is_qat_checkpoint(checkpoint, cache_dir=None):
    """True when `checkpoint` (a path or catalogue name) holds
    quantization ranges."""
    return has_quantization_ranges(checkpoints.resolve(
        checkpoint, cache_dir=cache_dir, progress=False))


def _quiet_interpreter(**kwargs):
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its own move to ai_edge_litert.
        warnings.simplefilter('ignore', UserWarning)
        return tf2.lite.Interpreter(**kwargs)


def _interpreter(model):
    """An interpreter of .tflite bytes or a path."""
    return _quiet_interpreter(**({'model_path': model} if isinstance(
        model, str) else {'model_content': model}))


def tflite_input_size(model):
    """The input height (= width) of a TFLite classifier (bytes or path)."""
    return int(_interpreter(model).get_input_details()[0]['shape'][1])


# ------------------------------------------------------------------ export

def fake_quant_graph_def(spec, checkpoint, batch_size=1,
                         symmetric_weights=False):
    """The frozen `create_eval_graph` form of `spec` with `checkpoint`.

    `symmetric_weights` widens each weight range to be symmetric about 0
    (for int8 models).

    The graph takes 'input' [batch, size, size, 3] in [-1, 1] and gives
    'logits' and 'probabilities' [batch, num_classes].

    Raises:
      QuantizationError: the checkpoint holds no quantization ranges.
      CheckpointError: it lacks other variables of the graph.
    """
    if not has_quantization_ranges(checkpoint):
        raise QuantizationError(
            '%s holds no quantization ranges (weights_quant/act_quant); '
            'fine-tune it with `slimnets train --quantize-delay N` or '
            'convert a quantized TFLite file with tflite_to_qat_checkpoint'
            % checkpoint)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(
            tf.float32, [batch_size, spec.image_size, spec.image_size, 3],
            name=optimize.INPUT_NAME)
        logits, _ = inference.build_network(spec, images)
        quantize.create_eval_graph(graph)
        tf.identity(logits, name='logits')
        tf.nn.softmax(logits, name='probabilities')
        with tf.Session(graph=graph) as sess:
            checkpoints.restore(sess, checkpoint, moving_average=False)
            if symmetric_weights:
                _symmetrize_weight_ranges(sess)
            return optimize.freeze_session(sess)


def _symmetrize_weight_ranges(sess):
    """Weight ranges [-m, m], m = max(|min|, |max|): int8 weights need
    zero point 0 (the TFLite int8 specification)."""
    by_name = {v.op.name: v for v in tf.global_variables()}
    for name, variable in by_name.items():
        if not name.endswith('/weights_quant/min'):
            continue
        maximum = by_name[name[:-len('min')] + 'max']
        low, high = sess.run([variable, maximum])
        bound = max(abs(float(low)), abs(float(high)))
        variable.load(-bound, sess)
        maximum.load(bound, sess)


def _input_stats_for(inference_type, input_stats):
    mean, std = input_stats
    if inference_type == 'int8':
        mean -= 128.0
    return float(mean), float(std)


def convert_graph_def(graph_def, image_size, inference_type='uint8',
                      input_stats=DEFAULT_INPUT_STATS):
    """Converts a frozen fake-quant graph into integer TFLite bytes.

    Args:
      graph_def: from `fake_quant_graph_def`.
      image_size: the input's height and width.
      inference_type: 'uint8' (Google's files) or 'int8'.
      input_stats: (mean, std) of the uint8 input: real = (q - mean) / std.

    Returns:
      the .tflite model's bytes; 'probabilities' is the output.
    """
    if inference_type not in INFERENCE_TYPES:
        raise QuantizationError('unknown inference type %r; choose uint8 or '
                                'int8' % (inference_type,))
    converter = tf.lite.TFLiteConverter(
        graph_def, None, None,
        input_arrays_with_shape=[(optimize.INPUT_NAME,
                                  [1, image_size, image_size, 3])],
        output_arrays=['probabilities'])
    converter.inference_type = tf.uint8 if inference_type == 'uint8' \
        else tf.int8
    converter.quantized_input_stats = {
        optimize.INPUT_NAME: _input_stats_for(inference_type, input_stats)}
    try:
        return converter.convert()
    except Exception as error:  # the converter raises its own types
        raise QuantizationError('the TFLite converter failed on the '
                                'fake-quant graph: %s' % error) from None


def run_integer_tflite(model_content, images):
    """Runs an integer TFLite classifier image by image.

    Args:
      model_content: the .tflite bytes (or a path).
      images: float [N, size, size, 3] in [-1, 1]; quantized with the
        input's scale and zero point.

    Returns:
      (integer outputs [N, classes], their dequantized values,
       the input images as the model saw them (dequantized)).
    """
    interpreter = _interpreter(model_content)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    in_scale, in_zero = input_detail['quantization']
    out_scale, out_zero = output_detail['quantization']
    dtype = input_detail['dtype']
    info = np.iinfo(dtype)
    raw, seen = [], []
    for image in images:
        q = np.clip(np.round(image / in_scale + in_zero), info.min,
                    info.max).astype(dtype)
        seen.append((q.astype(np.float32) - in_zero) * in_scale)
        interpreter.set_tensor(input_detail['index'], q[np.newaxis])
        interpreter.invoke()
        raw.append(interpreter.get_tensor(output_detail['index'])[0].copy())
    raw = np.stack(raw)
    return (raw, (raw.astype(np.float32) - out_zero) * out_scale,
            np.stack(seen).astype(np.float32))


def compare_with_graph(model_content, graph_def, images):
    """(max step difference, fraction within one step, top-1 agreement) of
    a TFLite model against a frozen float graph on `images`."""
    _, values, seen = run_integer_tflite(model_content, images)
    scale = _interpreter(model_content).get_output_details()[0][
        'quantization'][0]
    model = runtimes.TensorFlowRuntime(graph_def, rewrite=False)
    try:
        expected = np.concatenate([model.run(image[np.newaxis])
                                   for image in seen])
    finally:
        model.close()
    steps = np.abs(values - expected) / scale
    return (float(np.max(steps)), float(np.mean(steps <= 1.0 + 1e-3)),
            float(np.mean(values.argmax(1) == expected.argmax(1))))


def export_tflite(output, checkpoint, model=None, image_size=None,
                  inference_type='uint8', input_stats=None, probe=None,
                  cache_dir=None, progress=True, force_image_size=False):
    """Writes the fully integer TFLite model of a QAT checkpoint.

    Args:
      output: the .tflite file to write.
      checkpoint: a checkpoint path (with quantization ranges).
      model, image_size: as `slimnets.export.export`.
      inference_type: 'uint8' (default, as Google's files) or 'int8'
        (weight ranges then widened to be symmetric: zero point 0).
      input_stats: (mean, std) of the integer input; default the ones
        recorded beside the checkpoint (`slimnets.model_info`), else
        (128, 128).
      probe: float images [N, size, size, 3] for the self-check (default:
        `export.probe_batch`'s smooth pseudo-images).
      force_image_size: allow an `image_size` other than the recorded
        calibration size (`models.check_image_size`).

    Raises:
      InputError: `image_size` contradicts the recorded calibration size.
      QuantizationError: the checkpoint has no ranges, or conversion fails.

    Returns:
      a `QuantizedExportReport`.
    """
    export.check_output('tflite', output)
    spec, prefix = inference.model_spec(model, checkpoint, image_size,
                                        cache_dir=cache_dir,
                                        progress=progress,
                                        force_image_size=force_image_size)
    if input_stats is None:
        recorded = model_info.read(prefix)
        if recorded is not None and recorded.input_stats:
            input_stats = tuple(recorded.input_stats)
    if inference_type not in INFERENCE_TYPES:
        raise QuantizationError('unknown inference type %r; choose uint8 or '
                                'int8' % (inference_type,))
    graph_def = fake_quant_graph_def(
        spec, prefix, symmetric_weights=inference_type == 'int8')
    content = convert_graph_def(graph_def, spec.image_size, inference_type,
                                input_stats or DEFAULT_INPUT_STATS)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fileio.write_bytes(output, content)
    if probe is None:
        probe = export.probe_batch(spec.image_size)
    max_steps, within, agreement = compare_with_graph(content, graph_def,
                                                      probe)
    interpreter = _quiet_interpreter(model_content=content)
    report = QuantizedExportReport(
        output, spec, inference_type, len(content),
        tuple(interpreter.get_input_details()[0]['quantization']),
        tuple(interpreter.get_output_details()[0]['quantization']),
        max_steps, within, agreement, len(probe))
    _log.info('integer TFLite %s: %.1f%% of outputs within one step of the '
              'fake-quant graph (max %.1f steps), top-1 agreement %.0f%%',
              output, 100 * within, max_steps, 100 * agreement)
    return report


# -------------------------------------------------- TFLite -> checkpoint

def _tensor_range(detail, narrow_range):
    """[min, max] of a per-tensor quantized TFLite tensor's integer grid."""
    params = detail['quantization_parameters']
    if params['scales'].size > 1:
        raise QuantizationError(
            'tensor %s is quantized per channel; only per-tensor ranges '
            'become weights_quant/act_quant variables' % detail['name'])
    scale, zero_point = detail['quantization']
    if not scale:
        return None
    info = np.iinfo(detail['dtype'])
    low = info.min + (1 if narrow_range else 0)
    return (np.float32((low - zero_point) * scale),
            np.float32((info.max - zero_point) * scale))


def _tflite_tensors_by_op_name(model_path):
    """{TF op name: TFLite tensor detail} for every op name a tensor of
    the file records ('a;b;c' names list the ops fused into it)."""
    interpreter = _quiet_interpreter(model_path=model_path)
    by_name = {}
    for detail in interpreter.get_tensor_details():
        if detail['dtype'] not in (np.uint8, np.int8):
            continue
        for name in detail['name'].split(';'):
            by_name.setdefault(name, detail)
    input_detail = interpreter.get_input_details()[0]
    return by_name, input_detail


def _const_factor(mul_op, other):
    """The scalar constant a Mul multiplies `other` by, or None."""
    for tensor in mul_op.inputs:
        if tensor is other:
            continue
        if tensor.op.type == 'Const':
            value = tf.make_ndarray(tensor.op.get_attr('value'))
            if value.size == 1 and float(value) != 0.0:
                return float(value)
    return None


def _activation_range(fake_quant, by_name, done):
    """The TFLite range of the tensor a fake-quant op quantizes."""
    producer = fake_quant.inputs[0].op
    while True:
        if producer.name in by_name:
            return _tensor_range(by_name[producer.name], False)
        if producer.type == 'Identity' and producer.inputs:
            producer = producer.inputs[0].op
            continue
        break
    if producer.type == 'Relu6':  # fused away (hard-swish): its full range
        return np.float32(0.0), np.float32(6.0)
    # Fused away before a multiplication by a constant (x * relu6(x + 3)
    # before * 1/6): the product's range divided by the constant.
    for consumer in fake_quant.outputs[0].consumers():
        if consumer.type != 'Mul':
            continue
        factor = _const_factor(consumer, fake_quant.outputs[0])
        following = [c for c in consumer.outputs[0].consumers()
                     if c.type in FAKE_QUANT_TYPES]
        if factor and following and following[0] in done:
            low, high = done[following[0]]
            low, high = sorted((low / factor, high / factor))
            return np.float32(low), np.float32(high)
    return None


def tflite_quantization_ranges(model_path, spec):
    """The range variables of `spec`'s eval graph, read from a TFLite file.

    Returns:
      ({variable name: float32 scalar}, (input mean, input std)).

    Raises:
      QuantizationError: the file is not per-tensor quantized, or a range
        has no counterpart in it.
    """
    by_name, input_detail = _tflite_tensors_by_op_name(model_path)
    scale, zero_point = input_detail['quantization']
    if not scale:
        raise QuantizationError('%s is not a quantized model (its input is '
                                'float)' % model_path)
    input_stats = (float(zero_point) + (128.0 if input_detail['dtype'] ==
                                        np.int8 else 0.0), 1.0 / scale)
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32,
                                [1, spec.image_size, spec.image_size, 3])
        inference.build_network(spec, images)
        quantize.create_eval_graph(graph)
        fake_quants = [op for op in graph.get_operations()
                       if op.type in FAKE_QUANT_TYPES]
        done = {}
        missing = []
        # Twice: a range derived from a later one is found on the second
        # pass.
        for _ in range(2):
            for op in reversed(fake_quants):
                if op in done:
                    continue
                if '/weights_quant/' in op.name + '/':
                    detail = by_name.get(op.name)
                    found = _tensor_range(detail, True) if detail else None
                else:
                    found = _activation_range(op, by_name, done)
                if found is not None:
                    done[op] = found
        values = {}
        for op in fake_quants:
            if op not in done:
                missing.append(op.name)
                continue
            for tensor, value in zip(op.inputs[1:], done[op]):
                values[tensor.op.inputs[0].op.name] = value
    if missing:
        raise QuantizationError(
            '%d quantization ranges of the %s eval graph have no '
            'counterpart in %s (%s): its tensor names are not those of a '
            'tf.contrib.quantize graph of this network; '
            'slimnets.checkpoints.converters.tflite_to_float_checkpoint recovers its float '
            'weights alone' % (len(missing), spec.network, model_path,
                               ', '.join(missing[:4])))
    return values, input_stats


def tflite_to_qat_checkpoint(model_path, output_prefix, num_classes=None):
    """Writes the QAT slim checkpoint of a quantized TFLite MobileNet.

    The float variables as `slimnets.checkpoints.converters.tflite_to_float_checkpoint`
    recovers them, plus every quantization range of the network's
    `create_eval_graph` form, so that `export_tflite` of the checkpoint
    rebuilds the file.  Beside it (`slimnets.model_info`) the file's input
    size is recorded as the calibration size, with the network, the
    classes and the input's (mean, std): `export_tflite` and every
    command default to them, and refuse another size unless forced.

    Returns:
      (checkpoint prefix, the network's `Identity`, (input mean, std)).
    """
    scratch = tempfile.mkdtemp(prefix='slimnets-tflite-')
    try:
        float_prefix, identity = converters.tflite_to_float_checkpoint(
            model_path, os.path.join(scratch, 'float.ckpt'), num_classes)
        reader = tf.train.load_checkpoint(float_prefix)
        values = {name: reader.get_tensor(name)
                  for name in reader.get_variable_to_shape_map()}
        size = tflite_input_size(model_path)
        spec, _ = inference.model_spec(checkpoint=float_prefix,
                                       image_size=size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ranges, input_stats = tflite_quantization_ranges(model_path, spec)
    values.update(ranges)
    prefix = converters.write_checkpoint(values, output_prefix)
    converters.write_model_info(
        prefix, identity, size, 'quantized TFLite file %s (weights and '
        'ranges)' % os.path.basename(model_path), input_stats=input_stats)
    return prefix, identity, input_stats
