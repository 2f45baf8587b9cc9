"""Jinja2 rendering: strict, sandboxed, plain text, includes kept inside the suite folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmrun.errors import RenderError, TemplateError
from glmrun.plan.templating import Renderer, has_template, render_value


def renderer(tmp_path: Path) -> Renderer:
    return Renderer(tmp_path)


def test_renders_nested_values(tmp_path: Path) -> None:
    value = {"a": ["{{ x }}", 1, None, {"b": "x={{ x }}"}], "c": True, "d": 2.5}
    assert render_value(value, {"x": "X"}, root=tmp_path) == {
        "a": ["X", 1, None, {"b": "x=X"}], "c": True, "d": 2.5,
    }


def test_no_autoescape_and_trailing_newline_kept(tmp_path: Path) -> None:
    assert renderer(tmp_path).render_str("{{ v }} & <i>\n", {"v": "<b>&"}) == "<b>& & <i>\n"


def test_strings_without_jinja_skip_jinja(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    text = "a { b } c } {"
    assert r.render_str(text, {}) is text
    assert "_jinja" not in vars(r)  # Jinja2 was not even set up
    assert not has_template("{ x }") and has_template("{# c #}") and has_template("{% if 1 %}")


def test_templates_that_only_print_variables_skip_jinja(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    assert r.render_str("Hi {{ user }}, case {{case_index}}: {{ x }}!", {
        "user": "Ann", "case_index": 3, "x": 2.5}) == "Hi Ann, case 3: 2.5!"
    assert "_jinja" not in vars(r)
    assert r.render_str("{{ user|upper }}", {"user": "ann"}) == "ANN"  # a filter: Jinja2
    assert "{{ user|upper }}" in r._jinja._compiled


def test_compiled_templates_are_cached(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    assert r.render_str("{{ n + 0 }}", {"n": 1}) == "1"
    template = r._jinja._compiled["{{ n + 0 }}"]
    assert r.render_str("{{ n + 0 }}", {"n": 2}) == "2"
    assert r._jinja._compiled["{{ n + 0 }}"] is template


def test_undefined_variable_names_it_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        render_value({"messages": [{"content": "hi {{ usr }}"}]}, {"user": "x"}, root=tmp_path)
    assert info.value.reason == "undefined variable 'usr'"
    assert info.value.path == ("messages", 0, "content")
    assert str(info.value) == "messages[0].content: undefined variable 'usr'"
    assert isinstance(info.value, TemplateError)


def test_undefined_in_a_multiline_template_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("one\ntwo {{ missing }}\n", {})
    assert info.value.reason == "undefined variable 'missing' (line 2)"


def test_undefined_attribute(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{{ case.city }}", {"case": {}})
    assert info.value.reason == "undefined: 'dict object' has no attribute 'city'"


def test_defined_test_works_with_strict_undefined(tmp_path: Path) -> None:
    text = "{% if nick is defined %}{{ nick }}{% else %}anon{% endif %}"
    assert renderer(tmp_path).render_str(text, {}) == "anon"


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("ok\nfine\n{{ x }\n", {"x": 1})
    assert info.value.reason == "template syntax error (line 3): unexpected '}'"


def test_include_is_rooted_at_the_suite_folder(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "system.md").write_text("You help {{ user }}.\n")
    (tmp_path / "prompts" / "outer.md").write_text("{% include 'prompts/system.md' %}")
    r = renderer(tmp_path)
    assert r.render_str("{% include 'prompts/system.md' %}", {"user": "Ann"}) == "You help Ann.\n"
    assert r.render_str("{% include './prompts/outer.md' %}", {"user": "Bo"}) == "You help Bo.\n"


def test_include_error_names_the_included_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text("line 1\n{{ nope }}\n")
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{% include 'p.md' %}", {})
    assert info.value.reason == "undefined variable 'nope' (line 2 of 'p.md')"


def test_include_syntax_error_names_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text("fine\n{{ broken }\n")
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{% include 'p.md' %}", {})
    assert info.value.reason == "template syntax error (line 2 of 'p.md'): unexpected '}'"


@pytest.mark.parametrize("name", ["../secret.md", "a/../../secret.md", "/etc/hostname",
                                  "C:/secret.md", "./../secret.md"])
def test_include_escaping_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (tmp_path / "secret.md").write_text("secret")
    with pytest.raises(RenderError) as info:
        Renderer(suite).render_str(f"{{% include '{name}' %}}", {})
    assert info.value.reason == f"include '{name}' escapes the suite folder"


def test_include_through_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (tmp_path / "secret.md").write_text("secret")
    (suite / "link.md").symlink_to(tmp_path / "secret.md")
    (suite / "inside.md").write_text("fine")
    (suite / "alias.md").symlink_to(suite / "inside.md")
    r = Renderer(suite)
    assert r.render_str("{% include 'alias.md' %}", {}) == "fine"  # a symlink inside is fine
    with pytest.raises(RenderError) as info:
        r.render_str("{% include 'link.md' %}", {})
    assert info.value.reason == "include 'link.md' escapes the suite folder"


def test_missing_include(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{% include 'nope.md' %}", {})
    assert info.value.reason == "include 'nope.md' not found in the suite folder"


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{{ ''.__class__.__mro__ }}", {})
    assert info.value.reason.startswith("unsafe template:")


def test_huge_values_are_refused(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    assert r.render_str("{{ 'ab' * 3 }}", {}) == "ababab"
    with pytest.raises(RenderError, match="larger than 2,000,000 characters"):
        r.render_str("{{ 'a' * 10 ** 9 }}", {})
    with pytest.raises(RenderError, match="exponent is too large"):
        r.render_str("{{ 9 ** 9999999 }}", {})


def test_runtime_errors_become_render_errors(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        renderer(tmp_path).render_str("{{ 1 // 0 }}", {})
    assert info.value.reason == (
        "template error: ZeroDivisionError: integer division or modulo by zero"
    )


# --- plain substitution agrees with Jinja2 ---------------------------------------------------

_NAMES = ["n", "user", "x_1", "_a", "Topic", "case_index", "missing",
          # constants, operators, keywords and Jinja2's special names: Jinja2 decides those
          "true", "True", "none", "None", "false", "False", "and", "or", "not", "in", "is", "if",
          "else", "for", "self", "loop", "range", "lipsum", "class", "def", "namespace",
          "caller", "kwargs", "varargs", "super", "dict", "joiner", "cycler", "import", "with"]
_VALUES = st.one_of(
    st.text(max_size=12), st.sampled_from(["{{ n }}", "\r\n", "a\rb", "{% x %}", "é", ""]),
    st.integers(min_value=-(10**30), max_value=10**30), st.just(2 ** 14_001), st.just(10 ** 5000),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2),
    st.just("x" * 2_000_001),
)
# mostly what plain substitution takes (so that it is what runs), with every way out mixed in
_LITERAL = st.one_of(st.text(alphabet="ab .,!é\n", max_size=6),
                     st.text(alphabet="ab {}%#-\r\n\té", max_size=6))
_TEMPLATE = st.lists(st.tuples(st.sampled_from([" ", "", " ", "\t", "-", "\n", "  "]),
                               st.sampled_from(_NAMES),
                               st.sampled_from([" ", "", " ", "-", " -", "\t"]), _LITERAL),
                     min_size=1, max_size=4)


def _outcome(render: Any, text: str, variables: dict[str, Any]) -> tuple[str, str]:
    try:
        return "ok", render(text, variables)
    except RenderError as exc:
        return "error", exc.reason


@settings(max_examples=500, deadline=None)
@given(first=_LITERAL, pieces=_TEMPLATE, values=st.lists(_VALUES, min_size=len(_NAMES),
                                                         max_size=len(_NAMES)),
       left_out=st.sets(st.sampled_from(_NAMES), max_size=2))
def test_plain_substitution_renders_exactly_what_jinja2_does(
    tmp_path_factory: pytest.TempPathFactory, first: str,
    pieces: list[tuple[str, str, str, str]], values: list[Any], left_out: set[str],
) -> None:
    """Whatever the template (`{{ name }}` with any spacing and whitespace control, among
    literal text that may hold more syntax, carriage returns or stray braces; names that are
    Jinja2's constants, operators or its own) and whatever the values (strings holding syntax,
    huge numbers, NaN, containers, a string past the bounds, a name left undefined), Renderer
    gives exactly what Jinja2 alone gives: the same text or the same error."""
    from glmrun.plan.jinja import JinjaTemplates

    root = tmp_path_factory.getbasetemp()
    variables = {n: v for n, v in zip(_NAMES, values, strict=True) if n not in left_out}
    text = first + "".join(f"{{{{{a}{name}{b}}}}}{lit}" for a, name, b, lit in pieces)
    expected = _outcome(JinjaTemplates(root).render, text, variables)
    assert _outcome(renderer(root).render_str, text, variables) == expected


def test_the_property_above_exercises_plain_substitution() -> None:
    """The generated templates are mostly ones plain substitution takes (else the property
    would only compare Jinja2 with itself)."""
    from hypothesis import find

    from glmrun.plan.templating import substitute

    taken = find(st.tuples(_LITERAL, _TEMPLATE),
                 lambda t: substitute(t[0] + "".join(f"{{{{{a}{n}{b}}}}}{lit}"
                                                     for a, n, b, lit in t[1]),
                                      dict.fromkeys(_NAMES, "v")) is not None)
    assert taken is not None
