"""`slimnets export`: a frozen graph, SavedModel, TFLite, ONNX, OpenVINO IR
or Keras model (over `slimnets.export`; the integer TFLite of a
quantization-aware checkpoint over `slimnets.quantized_tflite`)."""

from slimnets import graph_format
from slimnets.cli import arguments
from slimnets.cli.output import format_kwargs

__all__ = ['add_parser', 'run']


def add_parser(commands):
    """Adds `export` to `commands`."""
    export = arguments.add_command(
        commands, 'export', help='frozen graph, SavedModel, TFLite, ONNX, '
                                 'OpenVINO IR or Keras model',
        description='Export an inference graph (batch norm folded) and '
                    'check it against the source graph on probe images.')
    arguments.add_model_arguments(export, checkpoint_required=False)
    export.add_argument('--format', required=True,
                        choices=('frozen', 'saved_model', 'tflite', 'onnx',
                                 'openvino', 'keras'),
                        help='saved_model has two signatures: '
                             'serving_default (float images) and '
                             'image_bytes (encoded images); openvino writes '
                             'an .xml IR, keras a .keras file')
    export.add_argument('--output', required=True,
                        type=arguments.writable_place)
    export.add_argument('--batch-size', type=arguments.export_batch_size,
                        help='fixed batch size, 1..%d (default: any)'
                        % graph_format.MAX_BATCH_SIZE)
    export.add_argument('--quantization',
                        choices=('float16', 'dynamic', 'int8'),
                        help='TFLite quantization (int8 needs '
                             '--representative-data)')
    export.add_argument('--inference-type', choices=('uint8', 'int8'),
                        help='integer TFLite of a quantization-aware '
                             'checkpoint (default uint8 for such checkpoints)')
    export.add_argument('--representative-data', metavar='DIR',
                        help='folder of typical images (int8 calibration, '
                             'probe images)')
    export.add_argument('--trainable', action='store_true',
                        help='with --format keras: a trainable Keras 3 model '
                             '(batch norm unfolded, weight decay, Keras '
                             'Applications layer names) instead of the '
                             'folded inference graph')
    arguments.add_cache_argument(export)
    export.set_defaults(handler=run)


def run(args):
    """Exports, self-checks on probe images and prints the result."""
    from slimnets import export  # pylint: disable=import-outside-toplevel
    from slimnets import quantized_tflite  # pylint: disable=import-outside-toplevel
    from slimnets.inference import models  # pylint: disable=import-outside-toplevel
    args.checkpoint = models.weights_for(args.checkpoint, args.model)
    export.check_output(args.format, args.output)  # before any work
    if args.format == 'tflite' and not args.quantization and (
            args.inference_type or quantized_tflite.is_qat_checkpoint(
                args.checkpoint, args.cache_dir)):
        return _export_integer(args)
    report = export.export(
        args.output, args.format, args.checkpoint, model=args.model,
        image_size=args.image_size, batch_size=args.batch_size,
        quantization=args.quantization,
        representative_data=args.representative_data,
        cache_dir=args.cache_dir, trainable=args.trainable,
        force_image_size=args.force_image_size)
    spec = report.spec
    print('exported %s %s at %dx%d to %s (%s%s)' % (
        spec.network, format_kwargs(spec.kwargs), spec.image_size,
        spec.image_size, report.path, report.format,
        ', %s' % report.quantization if report.quantization else
        ', opset %d' % export.ONNX_OPSET if report.format == 'onnx' else ''))
    if args.trainable:
        print('trainable: batch norm unfolded, the arg scope\'s weight decay '
              'and dropout; keras.saving.load_model opens it without slimnets')
    else:
        print('batch norms folded: %d' % report.folded_batch_norms)
    print('self-check on %d probe images: max |probabilities - source| = '
          '%.3g, same top-1 on %.0f%%' % (report.probe_images,
                                          report.max_abs_difference,
                                          100 * report.top1_agreement))
    return None


def _export_integer(args):
    """The integer TFLite of a quantization-aware checkpoint."""
    from slimnets import quantized_tflite  # pylint: disable=import-outside-toplevel
    report = quantized_tflite.export_tflite(
        args.output, args.checkpoint, model=args.model,
        image_size=args.image_size,
        inference_type=args.inference_type or 'uint8',
        cache_dir=args.cache_dir, force_image_size=args.force_image_size)
    spec = report.spec
    print('exported %s %s at %dx%d to %s (integer TFLite, %s, %d bytes)' % (
        spec.network, format_kwargs(spec.kwargs), spec.image_size,
        spec.image_size, report.path, report.inference_type,
        report.size_bytes))
    print('self-check on %d probe images against the fake-quant eval graph: '
          '%.2f%% of outputs within one quantization step (max %.1f steps), '
          'same top-1 on %.0f%%' % (report.probe_images,
                                    100 * report.within_one_step,
                                    report.max_step_difference,
                                    100 * report.top1_agreement))
