"""Small structural pattern matching over tf.compat.v1 graphs.

A pattern describes an op by its type (`'Conv2D|MatMul'`, `'*'` for any)
and, optionally, the patterns of its inputs.  `GraphMatcher(pattern)`
yields every op of a graph at which the pattern matches, as a
`MatchResult` that maps each sub-pattern to the op (and its first output
tensor) it matched.  Inputs are matched in order, or in any order when
`ordered_inputs=False` (the first order that matches wins, the given order
first).  This is what the batch-norm folding and the quantization rewrite
use to find layers, in the vocabulary of `tf.contrib.quantize`.
"""

import itertools

__all__ = [
    'Pattern', 'OpTypePattern', 'OneofPattern', 'MatchResult',
    'GraphMatcher',
]


class Pattern(object):
    """Base class of the patterns."""

    def match(self, op, tensor, bindings):
        """Returns the extended bindings when `op` matches, else None."""
        raise NotImplementedError


class OpTypePattern(Pattern):
    """Matches an op of the given type(s), with input patterns.

    Args:
      op_type: 'Type', 'TypeA|TypeB' or '*'.
      name: optional label (for the caller's own bookkeeping).
      inputs: None (any inputs) or a list of patterns (a string stands for
        `OpTypePattern(string)`); the op must then have exactly that many
        inputs.
      ordered_inputs: False to accept any permutation of the inputs.
    """

    def __init__(self, op_type, name=None, inputs=None, ordered_inputs=True):
        self._types = None if op_type == '*' else set(op_type.split('|'))
        self.name = name
        self._inputs = None if inputs is None else [
            p if isinstance(p, Pattern) else OpTypePattern(p) for p in inputs]
        self._ordered = ordered_inputs

    def match(self, op, tensor, bindings):
        if self in bindings:  # a pattern binds one op only
            return bindings if bindings[self][0] is op else None
        if self._types is not None and op.type not in self._types:
            return None
        bindings = dict(bindings)
        bindings[self] = (op, tensor)
        if self._inputs is None:
            return bindings
        inputs = list(op.inputs)
        if len(inputs) != len(self._inputs):
            return None
        orders = [self._inputs] if self._ordered else \
            itertools.permutations(self._inputs)
        for order in orders:
            result = bindings
            for pattern, input_tensor in zip(order, inputs):
                result = pattern.match(input_tensor.op, input_tensor, result)
                if result is None:
                    break
            if result is not None:
                return result
        return None


class OneofPattern(Pattern):
    """Matches when any of `sub_patterns` matches (the first one wins)."""

    def __init__(self, sub_patterns):
        self._sub_patterns = list(sub_patterns)

    def match(self, op, tensor, bindings):
        for pattern in self._sub_patterns:
            result = pattern.match(op, tensor, bindings)
            if result is not None:
                return result
        return None


class MatchResult(object):
    """The ops and tensors a successful match bound to each sub-pattern."""

    def __init__(self, bindings):
        self._bindings = bindings

    def get_op(self, pattern):
        """The op `pattern` matched, or None when it took no part."""
        bound = self._bindings.get(pattern)
        return bound[0] if bound else None

    def get_tensor(self, pattern):
        """The tensor through which `pattern`'s op was reached (its output
        0 for the root), or None."""
        bound = self._bindings.get(pattern)
        if not bound:
            return None
        return bound[1] if bound[1] is not None else bound[0].outputs[0]


class GraphMatcher(object):
    """Finds every op of a graph at which a pattern matches."""

    def __init__(self, pattern):
        self._pattern = pattern

    def match_op(self, op):
        """A MatchResult when the pattern matches at `op`, else None."""
        bindings = self._pattern.match(
            op, op.outputs[0] if op.outputs else None, {})
        return MatchResult(bindings) if bindings is not None else None

    def match_ops(self, ops):
        for op in ops:
            result = self.match_op(op)
            if result is not None:
                yield result

    def match_graph(self, graph):
        """Yields a MatchResult for each op of `graph` that matches, in the
        graph's creation order."""
        return self.match_ops(graph.get_operations())
