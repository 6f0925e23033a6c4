"""Export a checkpoint as a frozen graph, a SavedModel, TFLite, ONNX, an
OpenVINO IR or a Keras model, each checked against the source graph before
`export` returns (see `slimnets.export.exporter`).

    slimnets.export.exporter  `export`: build, fold, write, check
    slimnets.export.tflite    TFLite: quantization, calibration images
    slimnets.export.serving   SavedModels, the 'image_bytes' signature
    slimnets.export.keras     the Keras 3 model of the folded graph
    slimnets.export.formats   the writers' table (ONNX, OpenVINO, Keras)
                              and the output check of every format

A new format is a writer in `formats.WRITERS` (with a runtime in
`slimnets.runtimes` to check it).
"""

from slimnets.errors import ExportError
from slimnets.export.exporter import FORMATS
from slimnets.export.exporter import QUANTIZATIONS
from slimnets.export.exporter import ExportReport
from slimnets.export.exporter import check_batch_size
from slimnets.export.exporter import check_output
from slimnets.export.exporter import export
from slimnets.export.exporter import probe_batch
from slimnets.export.formats import WRITERS
from slimnets.export.serving import BYTES_SIGNATURE
from slimnets.export.serving import run_serving_saved_model
from slimnets.export.tflite import representative_images
from slimnets.export.tflite import representative_paths
from slimnets.export.tflite import run_tflite
from slimnets.runtimes import ONNX_OPSET

__all__ = [
    'BYTES_SIGNATURE', 'ExportError', 'ExportReport', 'FORMATS',
    'ONNX_OPSET', 'QUANTIZATIONS', 'WRITERS', 'check_batch_size',
    'check_output', 'export', 'probe_batch', 'representative_images',
    'representative_paths', 'run_serving_saved_model', 'run_tflite',
]
