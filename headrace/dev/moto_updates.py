"""DynamoDB's update and condition expressions in moto, with the work that depends only on an
expression's text done once per text.

Profiled under the benchmark's load (py-spy, moto 5.2), the worker's transactions (a job's
claim, its final state) were the local endpoint's largest cost, and most of an UpdateItem's
time in them went to the expressions rather than the item:

- every update ran ten passes over its expression's tree, three of which (at most one SET,
  ADD and REMOVE clause each; no path updated twice; no key attribute updated) look at
  nothing but the expression, its attribute names and the table's keys: for a given
  expression, names and keys they pass or fail the same every time, so they run once;
- each pass asked, at every node of the tree, which kinds of node it processes, building
  that answer anew each time: it is asked once per pass;
- the tree was deep-copied before the passes fill in values (`copy.deepcopy`, generic and
  slow on a tree of small objects): it is copied through pickle, which makes the same tree;
- a condition expression was lexed anew each time (a regex per token, tried in turn): the
  tokens of a text are kept.

What the expressions do to an item, and the errors a bad one gets, are moto's own.
"""

from __future__ import annotations

import copy
import functools
import pickle
import weakref
from collections import deque
from typing import Any

from moto.dynamodb import comparisons
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser, Node  # type: ignore[attr-defined]
from moto.dynamodb.parsing.validators import (
    ActionCountValidator,
    OverlappingPathsValidator,
    UpdateExpressionValidator,
    UpdateHashRangeKeyValidator,
)

# The passes that read only the expression, its attribute names and the table's key names.
_TEXT_ONLY = (ActionCountValidator, OverlappingPathsValidator, UpdateHashRangeKeyValidator)

# Per parsed expression (moto_server keeps one tree per text), the (names, keys) it passed with.
_passed: weakref.WeakKeyDictionary[Node, set[tuple[Any, ...]]] = weakref.WeakKeyDictionary()

_moto_validator_init = UpdateExpressionValidator.__init__


def _validator_init(
    self: UpdateExpressionValidator,
    expression: Node,
    expression_attribute_names: dict[str, str] | None,
    expression_attribute_values: dict[str, Any] | None,
    item: Any,
    table: Any,
) -> None:
    _moto_validator_init(
        self,
        expression,
        expression_attribute_names,  # type: ignore[arg-type]
        expression_attribute_values,  # type: ignore[arg-type]
        item,
        table,
    )
    names = tuple(sorted((expression_attribute_names or {}).items()))
    self._text = expression  # type: ignore[attr-defined]
    self._text_key = (names, tuple(table.table_key_attrs))  # type: ignore[attr-defined]


def _validate(self: UpdateExpressionValidator) -> Node:
    passed = _passed.setdefault(self._text, set())  # type: ignore[attr-defined]
    checked = self._text_key in passed  # type: ignore[attr-defined]
    node = self.node_to_validate
    for processor in self.processors:
        if checked and isinstance(processor, _TEXT_ONLY):
            continue
        node = processor.traverse(node)
    passed.add(self._text_key)  # type: ignore[attr-defined]
    return node


def _traverse(self: DepthFirstTraverser, root: Node) -> Node:
    """moto's `traverse_node_recursively` from the root, with the kinds it processes (and how)
    looked up once for the pass instead of twice per node."""
    processing = list(self._processing_map().items())
    kinds = tuple(kind for kind, _ in processing)
    before_child = (
        None
        if type(self).pre_processing_of_child is DepthFirstTraverser.pre_processing_of_child
        else self.pre_processing_of_child
    )

    def visit(node: Any, child_id: int) -> Any:
        if isinstance(node, Node):
            parent = node.parent
            if node.children is not None:
                for i, child in enumerate(node.children):
                    if before_child is not None:
                        before_child(node, i)
                    visit(child, i)
            if isinstance(node, kinds):
                node = next(process(node) for kind, process in processing if isinstance(node, kind))
                node.parent = parent
                if parent:
                    parent.children[child_id] = node
        return node

    return visit(root, -1)


def _copy_tree(value: Any, memo: dict[int, Any] | None = None) -> Any:
    if isinstance(value, Node) and memo is None:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    return copy.deepcopy(value, memo)


_moto_lex = comparisons.ConditionExpressionParser._lex_condition_expression


@functools.lru_cache(maxsize=256)
def _lexed_text(expression: str) -> tuple[Any, ...]:
    return tuple(_moto_lex(comparisons.ConditionExpressionParser(expression, {}, {})))


def _lex(self: comparisons.ConditionExpressionParser) -> deque[Any]:
    return deque(_lexed_text(self.condition_expression))


def patch_updates() -> None:
    UpdateExpressionValidator.__init__ = _validator_init  # type: ignore[method-assign,assignment]
    DepthFirstTraverser.traverse = _traverse
    UpdateExpressionValidator.validate = _validate  # type: ignore[method-assign,assignment]
    validators.deepcopy = _copy_tree  # type: ignore[attr-defined,assignment]
    comparisons.ConditionExpressionParser._lex_condition_expression = _lex  # type: ignore[method-assign]
