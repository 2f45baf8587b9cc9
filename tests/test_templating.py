"""Jinja2 rendering: strict, sandboxed, plain text, includes kept inside the suite folder."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert not r._compiled
    assert not has_template("{ x }") and has_template("{# c #}") and has_template("{% if 1 %}")


def test_compiled_templates_are_cached(tmp_path: Path) -> None:
    r = renderer(tmp_path)
    assert r.render_str("{{ n }}", {"n": 1}) == "1"
    template = r._compiled["{{ n }}"]
    assert r.render_str("{{ n }}", {"n": 2}) == "2"
    assert r._compiled["{{ n }}"] is template


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
