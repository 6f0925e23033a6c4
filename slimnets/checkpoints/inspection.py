"""`inspect` a checkpoint and `diff` it against a graph."""

import collections

from slimnets.checkpoints import download
from slimnets.checkpoints import identification as identify_lib
from slimnets.checkpoints import reader
from slimnets.checkpoints import restoring as restore_lib

__all__ = [
    'CheckpointInfo', 'CheckpointDiff', 'inspect', 'diff', 'format_info',
    'format_diff',
]

CheckpointInfo = collections.namedtuple('CheckpointInfo', [
    'checkpoint', 'variables', 'identity'])
# variables: {name: shape}; identity: an `identify.Identity`.

CheckpointDiff = collections.namedtuple('CheckpointDiff', [
    'checkpoint', 'matched', 'missing', 'unexpected', 'mismatched',
    'scope_map'])
# matched: [(graph name, checkpoint key)]; missing: [graph name];
# unexpected: [checkpoint key]; mismatched: [(graph name, graph shape,
# checkpoint key, checkpoint shape, likely cause)].


def inspect(checkpoint, cache_dir=None):
    """The variables of a checkpoint and which network they belong to."""
    prefix = download.resolve(checkpoint, cache_dir=cache_dir)
    shapes = reader.variable_shapes(prefix)
    return CheckpointInfo(prefix, dict(sorted(shapes.items())),
                          identify_lib.identify(shapes))


def diff(checkpoint, var_list=None, scope_map=None, moving_average='auto',
         cache_dir=None):
    """Compares a checkpoint with a graph's variables (or a variable list).

    Nothing is restored; see `restore.plan` for the arguments.
    """
    plan = restore_lib.plan(checkpoint, var_list, scope_map, moving_average,
                            cache_dir=cache_dir)
    mismatched = []
    if plan.mismatched:
        checkpoint_identity = identify_lib.identify(
            reader.variable_shapes(plan.checkpoint))
        graph_shapes = {v.op.name: v.shape.as_list() for v, _ in
                        plan.assignments}
        graph_shapes.update({v.op.name: v.shape.as_list()
                             for v, _, _ in plan.mismatched})
        graph_identity = identify_lib.identify(graph_shapes)
        for variable, key, shape in plan.mismatched:
            mismatched.append((variable.op.name, variable.shape.as_list(), key,
                               shape, restore_lib.likely_cause(
                                   variable.op.name, variable.shape.as_list(),
                                   shape, checkpoint_identity,
                                   graph_identity)))
    return CheckpointDiff(
        plan.checkpoint, [(v.op.name, k) for v, k in plan.assignments],
        [v.op.name for v in plan.missing], plan.unexpected, mismatched,
        plan.scope_map)


def format_info(info):
    """A printable report of `inspect(...)`."""
    lines = ['checkpoint: %s' % info.checkpoint,
             'network:    %s' % identify_lib.describe(info.identity)]
    if info.identity.catalogue_names:
        lines.append('catalogue:  %s' % ', '.join(info.identity.catalogue_names))
    shadows = sum(name.endswith(identify_lib.SHADOW_SUFFIX)
                  for name in info.variables)
    lines.append('variables:  %d (%d moving-average shadows)'
                 % (len(info.variables), shadows))
    for name, shape in info.variables.items():
        if not name.endswith(identify_lib.SHADOW_SUFFIX):
            lines.append('  %-70s %s' % (name, shape))
    return '\n'.join(lines)


def format_diff(result):
    """A printable report of `diff(...)`."""
    lines = ['checkpoint: %s' % result.checkpoint,
             'matched %d, missing %d, mis-shaped %d, unused in checkpoint %d'
             % (len(result.matched), len(result.missing),
                len(result.mismatched), len(result.unexpected))]
    if result.scope_map:
        lines.append('scope map: %s' % result.scope_map)
    for name in result.missing:
        lines.append('  missing     %s' % name)
    for name, shape, key, checkpoint_shape, cause in result.mismatched:
        lines.append('  mis-shaped  %s: graph %s, checkpoint %s %s (%s)'
                     % (name, shape, key, checkpoint_shape, cause))
    return '\n'.join(lines)
