"""TensorFlow names tf-slim 1.1.0 still reads from their old homes.

tf-slim imports TensorFlow's private modules (`tensorflow.python.ops.
control_flow_ops`, `array_ops`, `framework.ops`, ...) and reads attributes
that later TensorFlow releases moved elsewhere: `control_flow_ops.cond` and
`case` (used by `tfexample_decoder.Image`, `BackupHandler`, `utils.smart_cond`
and several streaming metrics), `array_ops.stack`, `ops.Tensor`,
`ops.IndexedSlices` (gradient clipping and multipliers in `learning`),
`control_flow_ops.Assert`, `control_flow_ops.while_loop` and
`variable_scope.variable` (`local_variable`, `global_variable`).  Each such
read raises AttributeError on TensorFlow 2.21.

`repair_module(module)` fixes a tf_slim module at the place the problem is:
each module-level reference to one of those TensorFlow modules is replaced by
a `ModuleWithMovedNames`, which answers every attribute from the original
module and the moved ones from their current public homes.  Nothing that
worked changes, and the repair is idempotent.
"""

import sys
import types

import tensorflow.compat.v1 as tf

__all__ = [
    'MOVED_NAMES', 'ModuleWithMovedNames', 'repair_module',
    'repair_loaded_tf_slim_modules',
]

# Old home (module name) -> {attribute: its current public equivalent}.
MOVED_NAMES = {
    'tensorflow.python.ops.control_flow_ops': {
        'cond': tf.cond,
        'case': tf.case,
        'Assert': tf.Assert,
        'while_loop': tf.while_loop,
    },
    'tensorflow.python.ops.array_ops': {
        'stack': tf.stack,
        'unstack': tf.unstack,
    },
    'tensorflow.python.framework.ops': {
        'Tensor': tf.Tensor,
        'IndexedSlices': tf.IndexedSlices,
    },
    'tensorflow.python.ops.variable_scope': {
        'variable': tf.Variable,
    },
}


class ModuleWithMovedNames(types.ModuleType):
    """A stand-in for a TensorFlow module that also has its moved names.

    `names` fill attributes the original lacks; `overrides` replace ones it
    has.  Every other attribute is read from the original module.
    """

    def __init__(self, original, names, overrides=None):
        super().__init__(original.__name__, original.__doc__)
        self.__dict__['_original'] = original
        for name, value in names.items():
            if not hasattr(original, name):
                self.__dict__[name] = value
        self.__dict__.update(overrides or {})

    def __getattr__(self, name):
        return getattr(self.__dict__['_original'], name)


def _needs_stand_in(value):
    if isinstance(value, ModuleWithMovedNames):
        return False
    if not isinstance(value, types.ModuleType):
        return False
    moved = MOVED_NAMES.get(value.__name__)
    return bool(moved) and any(not hasattr(value, n) for n in moved)


def repair_module(module):
    """Gives `module`'s TensorFlow module references their moved names.

    Returns:
      The global names that were replaced (empty when nothing was needed).
    """
    replaced = []
    for name, value in list(vars(module).items()):
        if _needs_stand_in(value):
            setattr(module, name,
                    ModuleWithMovedNames(value, MOVED_NAMES[value.__name__]))
            replaced.append(name)
    return replaced


def repair_loaded_tf_slim_modules():
    """Repairs every imported `tf_slim.*` module (tests excluded).

    Returns:
      {module name: [replaced global names]} for the modules changed now.
    """
    changed = {}
    for module_name, module in sorted(sys.modules.items()):
        if module is None or not (module_name == 'tf_slim' or
                                  module_name.startswith('tf_slim.')):
            continue
        if module_name.endswith('_test'):
            continue
        replaced = repair_module(module)
        if replaced:
            changed[module_name] = replaced
    return changed
