"""errors.py holds every exception of the client, and the tree its docstring draws is the class
hierarchy: each class once, under its first base."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pathlib
import re

import glmrun
from glmrun import errors

# a tree line: "│   " or "    " per level above, then "├── " / "└── " (none for a root)
TREE_LINE = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?P<branch>[├└]── )?(?P<name>[A-Z]\w+)(?:\s|$)")


def parse_tree(text: str) -> dict[str, str | None]:
    """Each class a drawn tree names → the class drawn above it (None for a root). Tree lines
    are indented by four spaces; lines that continue an annotation are skipped."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in text.splitlines():
        found = TREE_LINE.match(line[4:]) if line.startswith("    ") else None
        if not found or (found["branch"] is None and found["indent"]):
            continue
        depth = len(found["indent"]) // 4 + (1 if found["branch"] else 0)
        path = [*path[:depth], found["name"]]
        assert found["name"] not in parents, f"{found['name']} is drawn twice"
        parents[found["name"]] = path[-2] if depth else None
    return parents


def test_the_docstring_tree_is_the_class_hierarchy() -> None:
    drawn = parse_tree(inspect.getdoc(errors) or "")
    defined = {name: cls for name, cls in vars(errors).items()
               if isinstance(cls, type) and issubclass(cls, BaseException)
               and cls.__module__ == errors.__name__}
    assert set(defined) <= set(drawn), f"not drawn: {sorted(set(defined) - set(drawn))}"
    for name, parent in drawn.items():
        cls = defined.get(name) or getattr(builtins, name, None)
        assert cls is not None, f"{name} is drawn but is no class of errors.py"
        if parent is None:
            # a root: a builtin, or a class of errors.py right below Exception
            assert name not in defined or cls.__bases__ == (Exception,), name
        else:
            assert cls.__bases__[0].__name__ == parent, (
                f"{name} is drawn under {parent}, its base is {cls.__bases__[0].__name__}")
    assert drawn["PlanError"] == "SpecError" and errors.PlanError.__bases__[1] is (
        errors.TemplateError)


def test_every_exception_of_the_client_is_defined_in_errors_py() -> None:
    """The emulator's own stay in glmrun/mock: it imports nothing of the client."""
    package = glmrun.__path__[0]
    for path in sorted(pathlib.Path(package).rglob("*.py")):
        if path.name == "__main__.py":  # runs the CLI
            continue
        name = ".".join(path.relative_to(pathlib.Path(package).parent).with_suffix("").parts)
        importlib.import_module(name.removesuffix(".__init__"))

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    elsewhere = sorted({f"{c.__module__}.{c.__qualname__}" for c in subclasses(BaseException)
                        if c.__module__.startswith("glmrun.")
                        and c.__module__ != "glmrun.errors"
                        and not c.__module__.startswith("glmrun.mock")})
    assert elsewhere == []


def test_the_tree_parser_reads_depth_from_the_branch_marks() -> None:
    tree = """
    GlmrunError
    ├── InputError    why
    │   └── SpecError  why,
    │                  and more of why
    │                  SoNotAClass
    └── ApiError
        └── AuthError
    Exception
    └── ToolFailure
    """
    assert parse_tree(tree) == {
        "GlmrunError": None, "InputError": "GlmrunError", "SpecError": "InputError",
        "ApiError": "GlmrunError", "AuthError": "ApiError", "Exception": None,
        "ToolFailure": "Exception"}
