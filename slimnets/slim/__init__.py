"""A drop-in for `import tf_slim as slim` that works on current TensorFlow.

`from slimnets import slim` gives the names model and training code uses
from tf_slim.  Functions that still work in tf-slim 1.1.0 are tf_slim's own
(wrapped only to refuse eager execution with a clear message); the broken
ones are repaired here, once:

* `batch_norm` is re-implemented on core ops (tf_slim's needs `tf_keras`'s
  legacy layers and the removed `ops.Tensor`).
* `assign_from_checkpoint` restores partitioned variables (tf_slim's fails
  under NumPy 2).

Every repaired or wrapped function keeps tf_slim's arg-scope key, so
`slim.arg_scope([tf_slim.conv2d], ...)` and
`slim.arg_scope([slimnets.slim.conv2d], ...)` configure the same layer.

* The data stack (`tfexample_decoder`, `parallel_reader`, ...), `learning`,
  `metrics` and the other tf_slim modules are tf_slim's own, repaired in
  place on import by `repair_tf_slim_modules()`: TensorFlow names that
  moved are supplied where tf_slim reads them, `learning.train`'s
  Supervisor threads run in graph mode, and the arg-scope stack is per
  thread (`slim.arg_scope` *is* tf_slim's, so both share that one stack).
  These repairs only change what used to fail.

`batch_norm` and `assign_from_checkpoint` are not swapped into tf_slim on
import.  Code that must keep
`import tf_slim` calls `slimnets.slim.repair_tf_slim()` once for that too.
"""

# pylint: disable=wildcard-import,unused-wildcard-import,g-import-not-at-top
import tf_slim as _tf_slim
from tf_slim import data
from tf_slim import evaluation
from tf_slim import learning
from tf_slim import losses
from tf_slim import metrics
from tf_slim import model_analyzer
from tf_slim import queues
from tf_slim import train_eval
from tf_slim import training
from tf_slim.data import data_decoder
from tf_slim.data import data_provider
from tf_slim.data import dataset
from tf_slim.data import dataset_data_provider
from tf_slim.data import parallel_reader
from tf_slim.data import prefetch_queue
from tf_slim.data import tfexample_decoder
from tf_slim.layers import *  # noqa: F401,F403  (the full tf_slim layer API)
from tf_slim.layers import utils
from tf_slim.ops import arg_scope as arg_scope_lib
from tf_slim.ops.variables import *  # noqa: F401,F403

from slimnets.slim._batch_norm import batch_norm
from slimnets.slim._graph_mode import EagerExecutionError
from slimnets.slim._graph_mode import ensure_graph_mode
from slimnets.slim._graph_mode import graph_only
from slimnets.slim.repair import is_repaired
from slimnets.slim.repair import repair_tf_slim
from slimnets.slim.repair import repair_tf_slim_modules
from slimnets.slim.repair import tf_slim_is_broken
from slimnets.slim.variables import assign_from_checkpoint

# `from tf_slim.layers import *` also binds `tf_slim.layers.summaries`;
# `slim.summaries` is tf_slim's top-level module, as in `import tf_slim`.
summaries = _tf_slim.summaries

repair_tf_slim_modules()
arg_scope = arg_scope_lib.arg_scope
add_arg_scope = arg_scope_lib.add_arg_scope
current_arg_scope = arg_scope_lib.current_arg_scope
has_arg_scope = arg_scope_lib.has_arg_scope
arg_scoped_arguments = arg_scope_lib.arg_scoped_arguments
arg_scope_func_key = arg_scope_lib.arg_scope_func_key

# Functions that build ops or variables: tf_slim's, refusing eager mode.
_GRAPH_BUILDERS = (
    'avg_pool2d', 'avg_pool3d', 'bias_add', 'conv1d', 'conv2d', 'conv3d',
    'conv2d_in_plane', 'conv2d_transpose', 'conv3d_transpose', 'convolution',
    'convolution1d', 'convolution2d', 'convolution2d_in_plane',
    'convolution2d_transpose', 'convolution3d', 'convolution3d_transpose',
    'dropout', 'flatten', 'fully_connected', 'gdn', 'group_norm',
    'images_to_sequence', 'instance_norm', 'layer_norm', 'linear',
    'max_pool2d', 'max_pool3d', 'maxout', 'one_hot_encoding', 'pool', 'relu',
    'relu6', 'repeat', 'separable_conv2d', 'separable_convolution2d',
    'sequence_to_images', 'softmax', 'spatial_softmax', 'stack', 'unit_norm',
    'model_variable', 'variable', 'legacy_fully_connected',
    'legacy_linear', 'legacy_relu',
)
for _name in _GRAPH_BUILDERS:
    if hasattr(_tf_slim, _name):
        globals()[_name] = graph_only(getattr(_tf_slim, _name),
                                      'slimnets.slim.' + _name)
del _name

__all__ = sorted(
    name for name in globals()
    if not name.startswith('_') and name not in (
        'arg_scope_lib', 'arg_scope_stack', 'supervisor', 'tf_compat'))
