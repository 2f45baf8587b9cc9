"""The bounded Jinja2 sandbox: every amplifying operation capped while it runs, every render on
a budget of steps and time, so a hostile template is an error, never a gigabyte or a hang.
"""

from __future__ import annotations

import functools
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from glmrun.plan.bounds import MAX_INT_BITS, MAX_SECONDS, MAX_SIZE, MAX_STEPS


class _Budget(threading.local):
    """Steps and time left to the render running on this thread."""

    steps = 0
    produced = 0  # characters printed by `{{ }}`, macro and block bodies included
    deadline = 0.0

    def start(self) -> None:
        self.steps, self.produced, self.deadline = 0, 0, time.monotonic() + MAX_SECONDS

    def tick(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise SecurityError(f"the template takes more than {MAX_STEPS:,} steps")
        if self.steps & 1023 == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"the template runs longer than {MAX_SECONDS:g} s")


_budget = _Budget()


def _weight(value: Any, limit: int = MAX_SIZE) -> int:
    """Characters plus items of `value`, shared parts counted each time (stops past `limit`)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bytes:
            total += len(item)
        elif kind in _CONTAINERS:
            total += 1
            if len(item) > limit:
                return total + len(item)
            children = (*item.keys(), *item.values()) if kind is dict else item
            for child in children:
                if type(child) in _SCALARS:
                    total += 1
                else:
                    stack.append(child)
        elif isinstance(item, _BASES):  # a subclass (Markup, OrderedDict ...): as its base
            base: Any = next(b for b in _BASES if isinstance(item, b))
            stack.append(base(item))
        else:
            total += 1
    return total


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
_BASES = (str, bytes, dict, list, tuple, set, frozenset)
_SCALARS = frozenset({int, float, bool, type(None)})


def _too_large() -> SecurityError:
    return SecurityError(f"the result would be larger than {MAX_SIZE:,} characters or items")


def _sized(value: Any) -> Any:
    """`value`, unless it weighs more than MAX_SIZE."""
    if isinstance(value, str):
        if len(value) > MAX_SIZE:
            raise _too_large()
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"the number would be larger than {MAX_INT_BITS:,} bits")
    elif isinstance(value, (list, tuple, dict, set, frozenset)) and _weight(value) > MAX_SIZE:
        raise _too_large()
    return value


def _printed(value: Any) -> str:
    """What `{{ value }}` prints; a render prints at most 10 × MAX_SIZE in all (macro bodies
    are buffered before they are returned, so the final output alone would be measured late)."""
    text = value if isinstance(value, str) else str(_sized(value))
    _budget.produced += len(text)
    if len(text) > MAX_SIZE or _budget.produced > 10 * MAX_SIZE:
        raise _too_large()
    return text


def _check_width(*widths: Any) -> None:
    for width in widths:
        if isinstance(width, int) and width > MAX_SIZE:
            raise _too_large()


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent(fmt: str, args: Any) -> None:
    """`fmt % args` must not pad or print beyond MAX_SIZE (`'%2000000000d' % 1`)."""
    star = False
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*":
                star = True
            elif group is not None and int(group) > MAX_SIZE:
                raise _too_large()
    if star:
        _check_width(*(args if isinstance(args, tuple) else (args,)))


def _check_format(fmt: str, args: Any, kwargs: Any) -> None:
    """`fmt.format(...)` must not pad beyond MAX_SIZE (`'{:>2000000000}'.format(1)`)."""
    import string

    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:  # the width comes from an argument
            values = kwargs.values() if isinstance(kwargs, Mapping) else ()
            _check_width(*args, *values)
        for digits in re.findall(r"\d+", spec):
            if int(digits) > MAX_SIZE:
                raise _too_large()


def _check_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str):
        times = len(text) + 1 if not old else text.count(old)
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(text) + times * len(new) > MAX_SIZE:
            raise _too_large()


def _check_join(sep: Any, items: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = _weight(list(items)) + len(str(sep)) * len(items)
        if size > MAX_SIZE:
            raise _too_large()


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: Any) -> None:
    """The str methods whose result can be much larger than their inputs."""
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(*args[:1], kwargs.get("width"))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int) and size > 0 and len(text) * size > MAX_SIZE:
            raise _too_large()
    elif name == "replace":
        _check_replace(text, *args[:3])
    elif name == "join" and args:
        _check_join(text, args[0])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(text) * longest > MAX_SIZE:
            raise _too_large()


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: Any) -> None:
    """The filters whose result can be much larger than their inputs."""
    text = value if isinstance(value, str) else ""
    if name == "center":
        _check_width(*args[:1], kwargs.get("width"))
    elif name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        pad = width if isinstance(width, int) else len(str(width))
        if (text.count("\n") + 1) * pad + len(text) > MAX_SIZE:
            raise _too_large()
    elif name == "wordwrap":
        width = args[0] if args else kwargs.get("width", 79)
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring") or "\n"
        if isinstance(width, int) and width > 0:
            lines = len(text) // width + text.count("\n") + 1
            if len(text) + lines * len(str(wrap)) > MAX_SIZE:
                raise _too_large()
    elif name == "replace":
        _check_replace(text, *args[:3])
    elif name == "join":
        _check_join(args[0] if args else kwargs.get("d", ""), value)
    elif name in ("batch", "slice"):
        _check_width(*args[:1], kwargs.get("linecount"), kwargs.get("slices"))
    elif name == "sum":
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, (int, float)):  # adding lists is quadratic
            raise SecurityError("sum() adds numbers only in templates")
    elif name == "format":
        _check_percent(text, args or tuple(kwargs.values()))


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as a step, refuses amplifying arguments and oversized results."""

    @functools.wraps(func)  # keeps Jinja2's pass_context / pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget.tick()
        start = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        if len(args) > start:
            _check_filter(name, args[start], args[start + 1:], kwargs)
        return _sized(func(*args, **kwargs))

    return guarded


def _steps(iterable: Any) -> Any:
    """Every loop goes through here: one step per iteration."""
    for item in iterable:
        _budget.tick()
        yield item


class _Namespace(Namespace):
    """`namespace()` whose attributes are sized when set (`{% set ns.s = ns.s ~ ns.s %}`)."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, _sized(value))


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so that loops, `~` and literals pass through the budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_glmrun_steps", [], [], None, None,
                                 lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_glmrun_sized", [], [], None, None, lineno=node.lineno)

    def _literal(self, node: nodes.Node) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return nodes.Filter(node, "_glmrun_sized", [], [], None, None, lineno=node.lineno)

    visit_List = visit_Dict = visit_Tuple = _literal


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with every amplifying operation capped and every render on a budget.

    A template cannot build a string or list larger than MAX_SIZE, an integer larger than
    MAX_INT_BITS, or take more than MAX_STEPS steps or MAX_SECONDS: each is refused while it
    is being built (`'a' * 10**9`, `x.center(2000000000)`, nested loops ...), not measured
    after. Constant folding is off so that nothing is computed at compile time either.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, finalize=_printed, **options)
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.filters["_glmrun_steps"] = _steps
        self.filters["_glmrun_sized"] = _sized
        self.globals["namespace"] = _Namespace
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        template = super()._parse(source, name, filename)
        return cast(nodes.Template, _Bounded().visit(template))

    def concat(self, parts: Iterable[str]) -> str:
        """Macro, `{% set %}` block and `{% filter %}` bodies: joined only within MAX_SIZE."""
        collected, size = [], 0
        for part in parts:
            size += len(part)
            if size > MAX_SIZE:
                raise _too_large()
            collected.append(part)
        return "".join(collected)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map`, checked for widths beyond MAX_SIZE first."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text, name = value.__self__, value.__name__

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if name == "format_map" and args else kwargs
            _check_format(text, args if name == "format" else (), mapping)
            return wrapper(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget.tick()
        return super().getitem(obj, argument)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,
             *args: Any, **kwargs: Any) -> Any:
        _budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        elif isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_steps(args[0]), *args[1:])
        result = _sized(super().call(__context, __obj, *args, **kwargs))
        if isinstance(owner, (list, dict, set)):  # append, extend, update ... grew it
            _sized(owner)
        return result

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        _budget.tick()
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                        and _weight(seq) * times > MAX_SIZE):
                    raise _too_large()
            if _is_int(left) and _is_int(right) and (
                    left.bit_length() + right.bit_length() > MAX_INT_BITS + 1):
                raise SecurityError(f"the number would be larger than {MAX_INT_BITS:,} bits")
            return _sized(operator.mul(left, right))
        if op == "**":
            if _is_int(left) and _is_int(right) and abs(left) > 1 and (
                    right > MAX_INT_BITS or left.bit_length() * right > MAX_INT_BITS):
                raise SecurityError("the exponent is too large")
            return _sized(operator.pow(left, right))
        if op == "%" and isinstance(left, str):
            _check_percent(left, right)
        return _sized(super().call_binop(context, op, left, right))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja2's lorem ipsum, within MAX_SIZE."""
    from jinja2.utils import generate_lorem_ipsum

    if n * max * 12 > MAX_SIZE:
        raise _too_large()
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def render_bounded(template: jinja2.Template, variables: Mapping[str, Any]) -> str:
    """The template's output, stopped as soon as it grows past MAX_SIZE or its budget."""
    _budget.start()
    parts, size = [], 0
    for part in template.generate(variables):
        size += len(part)
        if size > MAX_SIZE:
            raise _too_large()
        parts.append(part)
    return "".join(parts)
