"""Expectations: every kind passes and fails with an exact reason, and no check ever raises."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from glmrun.checks.judge import build_judge_prompt, parse_judge_answer
from glmrun.checks.outcome import TurnOutcome, turn_outcome_from_replies
from glmrun.checks.registry import KINDS, ExpectationResult, check_all
from glmrun.types import Reply, ToolCall, Usage

CHECKS_DIR = Path(__file__).parent / "fixtures" / "checks"


def outcome(content: str = "", **kw: Any) -> TurnOutcome:
    kw.setdefault("finish_reason", "stop")
    return TurnOutcome(content=content, **kw)


def check(spec: Mapping[str, Any], out: TurnOutcome | str = "", **kw: Any) -> ExpectationResult:
    if isinstance(out, str):
        out = outcome(out)
    results = check_all([spec], out, suite_dir=kw.pop("suite_dir", CHECKS_DIR), **kw)
    assert len(results) == 1
    return results[0]


def verdict(spec: Mapping[str, Any], out: TurnOutcome | str = "", **kw: Any) -> tuple[bool, str]:
    r = check(spec, out, **kw)
    return r.passed, r.reason


# --- the result and the outcome ------------------------------------------------------------


def test_result_to_dict_is_the_transcript_form() -> None:
    r = check({"contains": "Ann", "name": "greets"}, "Hi Ann")
    assert r.to_dict() == {
        "turn": None, "kind": "contains", "name": "greets",
        "spec": {"contains": "Ann", "name": "greets"}, "passed": True,
        "reason": "contains 'Ann'", "diff": None,
    }


def test_check_all_keeps_order_and_gives_one_result_per_item() -> None:
    results = check_all(
        [{"contains": "a"}, {"regex": "("}, {"equals": "b"}], outcome("a"), suite_dir=CHECKS_DIR
    )
    assert [(r.kind, r.passed) for r in results] == [
        ("contains", True), ("regex", False), ("equals", False)
    ]


def test_turn_outcome_from_replies_folds_tool_rounds() -> None:
    call_a = ToolCall("c1", "search", '{"q": "x"}')
    call_b = ToolCall("c2", "lookup", "{}")
    cited = ({"refer": "ref_1", "link": "https://a.cn/1"},)
    flagged = ({"role": "assistant", "level": 3},)
    replies = [
        Reply(None, "tool_calls", Usage(10, 3, 13), tool_calls=(call_a, call_b),
              latency_ms=100.0, ttft_ms=40.0, web_search=cited),
        Reply("done", "stop", Usage(20, 5, 25), latency_ms=50.5, ttft_ms=20.0,
              content_filter=flagged),
        Reply("", "stop", None, latency_ms=1.0),
    ]
    out = turn_outcome_from_replies(replies, {"user": "Ann"}, [{"role": "user", "content": "q"}])
    assert out == TurnOutcome(
        content="", finish_reason="stop", tool_calls=(call_a, call_b), latency_ms=151.5,
        ttft_ms=40.0, completion_tokens=8, variables={"user": "Ann"},
        messages=({"role": "user", "content": "q"},), web_search=cited, content_filter=flagged,
    )
    assert turn_outcome_from_replies(replies[:2], {}, []).content == "done"


def test_turn_outcome_from_no_replies() -> None:
    out = turn_outcome_from_replies([], {}, [])
    assert (out.content, out.finish_reason, out.latency_ms, out.ttft_ms) == ("", None, 0, None)


# --- malformed items fail with a reason ----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "reason"),
    [
        ({"foo": 1}, "invalid",
         "no known expectation kind among keys: foo (known: " + ", ".join(KINDS) + ")"),
        ({"contains": "a", "regex": "b"}, "invalid",
         "an expectation has one kind, this one has 2: contains, regex"),
        ({"contains": 3}, "contains",
         "invalid contains expectation: contains must be a string, got 3"),
        ({"contains": "a", "ignorecase": True}, "contains",
         "invalid contains expectation: unknown option ignorecase for contains "
         "(allowed: ignore_case, name)"),
        ({"contains": "a", "ignore_case": "yes"}, "contains",
         "invalid contains expectation: ignore_case must be true or false, got 'yes'"),
        ({"max_tokens": "10"}, "max_tokens",
         "invalid max_tokens expectation: max_tokens must be a number, got '10'"),
        ({"max_tokens": True}, "max_tokens",
         "invalid max_tokens expectation: max_tokens must be a number, got True"),
        ({"contains": "a", "name": 5}, "contains",
         "invalid contains expectation: name must be a string, got 5"),
    ],
)
def test_malformed_expectation_fails_with_reason(
    spec: dict[str, Any], kind: str, reason: str
) -> None:
    r = check(spec, "a")
    assert (r.kind, r.passed, r.reason) == (kind, False, reason)


def test_non_mapping_expectation_fails() -> None:
    r = check_all(["contains: a"], outcome("a"), suite_dir=CHECKS_DIR)[0]  # type: ignore[list-item]
    assert (r.kind, r.passed, r.reason) == (
        "invalid", False, "an expectation must be a mapping, got str 'contains: a'"
    )
    assert r.to_dict()["spec"] == {"value": "contains: a"}


# --- contains / not_contains ---------------------------------------------------------------


def test_contains_pass() -> None:
    assert verdict({"contains": "小明"}, "你好，小明！") == (True, "contains '小明'")


def test_contains_fail_with_diff() -> None:
    r = check({"contains": "小明"}, "你好，Ann！\n再见")
    assert (r.passed, r.reason) == (False, "expected reply to contain '小明'")
    assert r.diff == "--- expected\n+++ reply\n@@ -1 +1,2 @@\n-小明\n+你好，Ann！\n+再见"


def test_contains_is_case_sensitive_by_default() -> None:
    assert verdict({"contains": "ann"}, "Hi Ann") == (False, "expected reply to contain 'ann'")


def test_contains_ignore_case() -> None:
    assert verdict({"contains": "ANN", "ignore_case": True}, "Hi Ann") == (
        True, "contains 'ANN' (ignoring case)"
    )
    assert verdict({"contains": "bob", "ignore_case": True}, "Hi Ann") == (
        False, "expected reply to contain 'bob' (ignoring case)"
    )


def test_contains_diff_truncates_long_reply() -> None:
    r = check({"contains": "needle"}, "x" * 2500)
    assert r.diff is not None
    assert r.diff.splitlines()[-1] == "+… (500 more characters)"
    assert len(r.diff) < 2100


def test_not_contains_pass() -> None:
    assert verdict({"not_contains": "抱歉"}, "好的") == (True, "does not contain '抱歉'")


def test_not_contains_fail_shows_where() -> None:
    r = check({"not_contains": "sorry"}, "Hello.\nI am sorry, I cannot.")
    assert (r.passed, r.reason, r.diff) == (
        False,
        "expected reply not to contain 'sorry', found on line 2: 'Hello.\\nI am sorry, I cannot.'",
        None,
    )


def test_not_contains_ignore_case() -> None:
    assert verdict({"not_contains": "SORRY", "ignore_case": True}, "so Sorry") == (
        False, "expected reply not to contain 'SORRY' (ignoring case), found on line 1: 'so Sorry'"
    )
    assert verdict({"not_contains": "SORRY", "ignore_case": True}, "fine") == (
        True, "does not contain 'SORRY' (ignoring case)"
    )


def test_not_contains_context_is_cut_around_the_hit() -> None:
    reply = "a" * 100 + "BAD" + "b" * 100
    assert check({"not_contains": "BAD"}, reply).reason == (
        "expected reply not to contain 'BAD', found on line 1: '…" + "a" * 30 + "BAD" + "b" * 30
        + "…'"
    )


# --- equals / starts_with ------------------------------------------------------------------


def test_equals_pass_ignores_surrounding_whitespace() -> None:
    assert verdict({"equals": "Paris"}, "\n Paris \n") == (True, "equals 'Paris'")


def test_equals_fail_with_diff() -> None:
    r = check({"equals": "line one\nline two"}, "line one\nline 2\n")
    assert (r.passed, r.reason) == (
        False, "expected reply to equal 'line one\\nline two', got 'line one\\nline 2'"
    )
    assert r.diff == (
        "--- expected\n+++ reply\n@@ -1,2 +1,2 @@\n line one\n-line two\n+line 2"
    )


def test_equals_ignore_case() -> None:
    assert verdict({"equals": "PARIS", "ignore_case": True}, "paris") == (
        True, "equals 'PARIS' (ignoring case)"
    )
    r = check({"equals": "PARIS", "ignore_case": True}, "Lyon")
    assert (r.passed, r.reason) == (
        False, "expected reply to equal 'PARIS' (ignoring case), got 'Lyon'"
    )
    assert r.diff == "--- expected\n+++ reply\n@@ -1 +1 @@\n-PARIS\n+Lyon"


def test_starts_with_pass_ignores_leading_whitespace() -> None:
    assert verdict({"starts_with": "好的"}, "\n好的，我来回答。") == (True, "starts with '好的'")


def test_starts_with_fail_with_diff_of_the_first_lines() -> None:
    r = check({"starts_with": "Dear Ann"}, "Hello Ann, how are you today?\nBye")
    assert (r.passed, r.reason) == (
        False, "expected reply to start with 'Dear Ann', got 'Hello Ann, how are you today…'"
    )
    assert r.diff == (
        "--- expected\n+++ reply\n@@ -1 +1 @@\n-Dear Ann\n+Hello Ann, how are you today?"
    )


def test_starts_with_ignore_case() -> None:
    """The schema documents ignore_case for starts_with: the check takes it too."""
    assert verdict({"starts_with": "DEAR", "ignore_case": True}, " dear Ann") == (
        True, "starts with 'DEAR' (ignoring case)")
    assert verdict({"starts_with": "DEAR", "ignore_case": True}, "Hello")[:2] == (
        False, "expected reply to start with 'DEAR' (ignoring case), got 'Hello'")


# --- the registry and the schema -----------------------------------------------------------


def test_the_kinds_and_their_options_are_the_schemas() -> None:
    """One table of kinds in the code, one in the schema: the same kinds in the same order,
    every option of the code's a property of the schema's, tied to its kind."""
    from glmrun.checks.registry import KIND_TABLE
    from glmrun.load.schema import load_schema

    schema = load_schema()["$defs"]["expectation"]
    assert list(KINDS) == schema["x-kind-keys"]
    assert [one["required"] for one in schema["oneOf"]] == [[k] for k in KINDS]
    options = {o for kind in KIND_TABLE.values() for o in kind.options}
    assert set(schema["properties"]) == {*KINDS, *options, "name"}
    for option, needs in schema["dependentRequired"].items():
        assert {k for k, kind in KIND_TABLE.items() if option in kind.options} == set(needs)
    shared = {o for o in options if o not in schema["dependentRequired"]}
    assert shared == {"ignore_case"}  # on four kinds: the check says which
    assert schema["properties"]["ignore_case"]["description"].endswith(
        "(contains, not_contains, equals, starts_with).")
    assert [k for k, kind in KIND_TABLE.items() if "ignore_case" in kind.options] == [
        "contains", "not_contains", "equals", "starts_with"]


# --- regex ---------------------------------------------------------------------------------


def test_regex_pass_shows_match() -> None:
    assert verdict({"regex": r"\d{4}年"}, "成立于1949年。") == (
        True, r"matches /\d{4}年/: '1949年'"
    )


def test_regex_fail() -> None:
    assert verdict({"regex": r"^\d+$"}, "42 apples") == (False, r"expected reply to match /^\d+$/")


def test_regex_flags() -> None:
    assert verdict({"regex": "^second", "flags": "mi"}, "first\nSECOND") == (
        True, "matches /^second/im: 'SECOND'"
    )
    assert verdict({"regex": "a.b", "flags": "s"}, "a\nb") == (True, "matches /a.b/s: 'a\\nb'")
    assert verdict({"regex": "^second"}, "first\nSECOND") == (
        False, "expected reply to match /^second/"
    )


def test_regex_invalid_pattern_fails() -> None:
    assert verdict({"regex": "(unclosed"}, "x") == (
        False, "invalid regex '(unclosed': missing ): (unclosed"
    )


def test_regex_outside_re2_dialect_fails_with_the_reason() -> None:
    assert verdict({"regex": r"(a)\1"}, "aa") == (
        False, "invalid regex '(a)\\\\1': invalid escape sequence: \\1 "
               "(RE2 syntax: no backreferences, lookaround or \\Z)"
    )
    assert verdict({"regex": "(?=a)"}, "a")[1].startswith(
        "invalid regex '(?=a)': invalid perl operator: (?=")


@pytest.mark.timeout(10)
def test_catastrophic_regex_runs_in_linear_time() -> None:
    # `re` backtracks for hours here (2**n paths); RE2 answers at once
    reply = "a" * 200_000 + "!"
    started = time.process_time()
    assert verdict({"regex": "(a+)+$"}, reply) == (False, "expected reply to match /(a+)+$/")
    assert verdict({"regex": "^(a|aa)+!$"}, reply)[0] is True
    assert time.process_time() - started < 2


def test_fenced_json_with_a_long_run_of_spaces_is_read_quickly() -> None:
    started = time.process_time()
    assert verdict({"is_json": True}, "```json\n" + " " * 200_000 + "x")[0] is False
    assert verdict({"is_json": True}, "```json\n{\"a\": 1}  \n```") == (
        True, "reply is JSON (object, in a code fence)")
    assert time.process_time() - started < 2


def test_regex_unknown_flag_fails() -> None:
    assert verdict({"regex": "a", "flags": "iq"}, "a") == (
        False, "invalid regex expectation: unknown regex flag 'q' (allowed: i, m, s)"
    )


# --- is_json / json_schema / json_path -----------------------------------------------------


def test_is_json_pass() -> None:
    assert verdict({"is_json": True}, ' {"a": 1} ') == (True, "reply is JSON (object)")


def test_is_json_tolerates_one_code_fence() -> None:
    assert verdict({"is_json": True}, '```json\n[1, 2]\n```') == (
        True, "reply is JSON (array, in a code fence)"
    )
    assert verdict({"is_json": True}, '```\n{"a": 1}\n```\n') == (
        True, "reply is JSON (object, in a code fence)"
    )


def test_is_json_fail() -> None:
    assert verdict({"is_json": True}, "Sure! {\"a\": 1}") == (
        False, "expected reply to be JSON: Expecting value: line 1 column 1 (char 0): "
        "'Sure! {\"a\": 1}'"
    )
    assert verdict({"is_json": True}, "   ") == (
        False, "expected reply to be JSON: the reply is empty"
    )


def test_is_json_takes_only_true_as_the_schema_does() -> None:
    assert verdict({"is_json": False}, "plain words") == (
        False, "invalid is_json expectation: is_json must be true, got False")


PERSON_SCHEMA = {
    "type": "object",
    "required": ["name", "address"],
    "properties": {
        "name": {"type": "string"},
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{6}$"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_json_schema_pass() -> None:
    reply = '```json\n{"name": "小明", "address": {"zip": "100000"}}\n```'
    assert verdict({"json_schema": PERSON_SCHEMA}, reply) == (
        True, "reply matches the JSON schema"
    )


def test_json_schema_fail_names_nested_paths() -> None:
    reply = json.dumps({"name": 1, "address": {"zip": "ABC"}, "tags": ["a", 2]})
    assert verdict({"json_schema": PERSON_SCHEMA}, reply) == (
        False,
        "reply does not match the JSON schema: $.address.zip: 'ABC' does not match "
        "'^[0-9]{6}$'; $.name: 1 is not of type 'string'; $.tags[1]: 2 is not of type 'string'",
    )


def test_json_schema_lists_only_the_first_three_errors() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    assert verdict({"json_schema": schema}, '["a", "b", "c", "d", "e"]') == (
        False,
        "reply does not match the JSON schema: $[0]: 'a' is not of type 'integer'; "
        "$[1]: 'b' is not of type 'integer'; $[2]: 'c' is not of type 'integer' (and 2 more)",
    )


def test_json_schema_checks_formats() -> None:
    schema = {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
    assert verdict({"json_schema": schema}, '{"day": "yesterday"}') == (
        False, "reply does not match the JSON schema: $.day: 'yesterday' is not a 'date'"
    )


def test_json_schema_reply_not_json() -> None:
    assert verdict({"json_schema": PERSON_SCHEMA}, "no") == (
        False, "expected reply to be JSON matching the schema: "
        "Expecting value: line 1 column 1 (char 0): 'no'"
    )


def test_json_schema_invalid_schema() -> None:
    assert verdict({"json_schema": {"type": "nope"}}, "{}") == (
        False, "invalid JSON schema: 'nope' is not valid under any of the given schemas"
    )


ORDER = '{"order": {"items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}], "paid": true}}'


def test_json_path_pass() -> None:
    assert verdict({"json_path": "$.order.items[0].sku", "value": "A1"}, ORDER) == (
        True, '$.order.items[0].sku == "A1"'
    )


def test_json_path_any_match_may_equal() -> None:
    assert verdict({"json_path": "$.order.items[*].sku", "value": "B2"}, ORDER) == (
        True, '$.order.items[*].sku == "B2"'
    )


def test_json_path_fail_shows_what_was_found() -> None:
    assert verdict({"json_path": "$.order.items[*].qty", "value": 3}, ORDER) == (
        False, "expected $.order.items[*].qty to equal 3, found 2, 1"
    )


def test_json_path_true_is_not_one() -> None:
    assert verdict({"json_path": "$.order.paid", "value": 1}, ORDER) == (
        False, "expected $.order.paid to equal 1, found true"
    )
    assert verdict({"json_path": "$.order.paid", "value": True}, ORDER)[0] is True


def test_json_path_compares_structures() -> None:
    spec = {"json_path": "$.order.items[1]", "value": {"sku": "B2", "qty": 1}}
    assert verdict(spec, ORDER) == (True, '$.order.items[1] == {"sku": "B2", "qty": 1}')


def test_json_path_matches_nothing() -> None:
    assert verdict({"json_path": "$.order.total", "value": 3}, ORDER) == (
        False, "$.order.total matched nothing in the reply"
    )


def test_json_path_without_value_checks_presence() -> None:
    assert verdict({"json_path": "$.order.items[?(@.qty > 1)].sku"}, ORDER) == (
        True, '$.order.items[?(@.qty > 1)].sku found "A1"'
    )


def test_json_path_invalid_path() -> None:
    assert verdict({"json_path": "$.[[", "value": 1}, ORDER) == (
        False, "invalid JSON path '$.[[': Parse error at 1:3 near token [ ([)"
    )


def test_json_path_reply_not_json() -> None:
    assert verdict({"json_path": "$.a", "value": 1}, "{a: 1}") == (
        False, "expected reply to be JSON for $.a: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1): '{a: 1}'"
    )


# --- finish_reason / tool_call -------------------------------------------------------------


def test_finish_reason() -> None:
    assert verdict({"finish_reason": "stop"}, outcome("x")) == (True, "finish_reason is 'stop'")
    assert verdict({"finish_reason": "stop"}, outcome("x", finish_reason="length")) == (
        False, "expected finish_reason 'stop', got 'length'"
    )
    assert verdict({"finish_reason": "stop"}, outcome("x", finish_reason=None)) == (
        False, "expected finish_reason 'stop', got none"
    )


WEATHER = ToolCall("c1", "get_weather", '{"city": "北京", "unit": "c", "when": {"day": 1, "h": 9}}')
SEARCH = ToolCall("c0", "search", '{"q": "天气"}')


def tools(*calls: ToolCall) -> TurnOutcome:
    return outcome("晴", tool_calls=calls)


def test_tool_call_by_name_in_an_earlier_round() -> None:
    assert verdict({"tool_call": "get_weather"}, tools(SEARCH, WEATHER)) == (
        True,
        "called 'get_weather' with {\"city\": \"北京\", \"unit\": \"c\", \"when\": {\"day\": 1, "
        "\"h\": 9}}",
    )


def test_tool_call_argument_subset_passes() -> None:
    spec = {"tool_call": "get_weather", "arguments": {"city": "北京", "when": {"day": 1}}}
    assert verdict(spec, tools(WEATHER))[0] is True


def test_tool_call_wrong_argument_fails() -> None:
    spec = {"tool_call": "get_weather", "arguments": {"city": "上海"}}
    assert verdict(spec, tools(WEATHER)) == (
        False,
        "expected a call to tool 'get_weather' with arguments {\"city\": \"上海\"}; got "
        "{\"city\": \"北京\", \"unit\": \"c\", \"when\": {\"day\": 1, \"h\": 9}}",
    )


def test_tool_call_nested_argument_must_match() -> None:
    spec = {"tool_call": "get_weather", "arguments": {"when": {"day": True}}}
    assert verdict(spec, tools(WEATHER))[0] is False


def test_tool_call_invalid_json_arguments_fails_with_reason() -> None:
    bad = ToolCall("c2", "get_weather", '{"city": 北京')
    assert verdict({"tool_call": "get_weather", "arguments": {"city": "北京"}}, tools(bad)) == (
        False,
        "expected a call to tool 'get_weather' with arguments {\"city\": \"北京\"}; got invalid "
        "JSON '{\"city\": 北京' (Expecting value: line 1 column 10 (char 9))",
    )


def test_tool_call_one_good_call_among_bad_ones_passes() -> None:
    bad = ToolCall("c2", "get_weather", "{oops")
    spec = {"tool_call": "get_weather", "arguments": {"unit": "c"}}
    assert verdict(spec, tools(bad, WEATHER))[0] is True


def test_tool_call_empty_arguments_mean_none() -> None:
    assert verdict({"tool_call": "now"}, tools(ToolCall("c", "now", "")))[0] is True


def test_tool_call_other_tools_called() -> None:
    assert verdict({"tool_call": "get_weather"}, tools(SEARCH, SEARCH)) == (
        False, "expected a call to tool 'get_weather'; tools called: search"
    )


def test_tool_call_no_tool_called() -> None:
    assert verdict({"tool_call": "get_weather"}, tools()) == (
        False, "expected a call to tool 'get_weather', but no tool was called"
    )


# --- latency / ttft / tokens ---------------------------------------------------------------


def test_max_latency_ms() -> None:
    assert verdict({"max_latency_ms": 2000}, outcome(latency_ms=1234.56)) == (
        True, "latency 1234.6 ms (limit 2000 ms)"
    )
    assert verdict({"max_latency_ms": 1000}, outcome(latency_ms=1500.0)) == (
        False, "latency 1500 ms exceeds the limit of 1000 ms"
    )


def test_max_ttft_ms() -> None:
    assert verdict({"max_ttft_ms": 500}, outcome(ttft_ms=120.0)) == (
        True, "time to first token 120 ms (limit 500 ms)"
    )
    assert verdict({"max_ttft_ms": 500}, outcome(ttft_ms=620.25)) == (
        False, "time to first token 620.2 ms exceeds the limit of 500 ms"
    )


def test_max_ttft_ms_without_a_measure_fails() -> None:
    assert verdict({"max_ttft_ms": 500}, outcome(ttft_ms=None)) == (
        False, "no time to first token was measured (only stream mode measures it)"
    )


def test_max_tokens() -> None:
    assert verdict({"max_tokens": 200}, outcome(completion_tokens=200)) == (
        True, "200 completion tokens (limit 200)"
    )
    assert verdict({"max_tokens": 200}, outcome(completion_tokens=250)) == (
        False, "250 completion tokens exceed the limit of 200"
    )


# --- citations / content_filter ------------------------------------------------------------


def cited(*links: str) -> TurnOutcome:
    return outcome(web_search=tuple({"refer": f"ref_{i}", "link": link}
                                    for i, link in enumerate(links, 1)))


def test_citations_count() -> None:
    assert verdict({"citations": 1}, cited("https://a.cn/x")) == (
        True, "1 citation (at least 1)")
    assert verdict({"citations": 2}, cited("https://a.cn/x")) == (
        False, "expected at least 2 citations, got 1")
    assert verdict({"citations": 1}, outcome()) == (False, "expected at least 1 citation, got 0")


def test_citations_domain_takes_the_host_and_hosts_below_it() -> None:
    three = cited("https://www.gov.cn/a", "https://News.Example.com/b", "not a link")
    assert verdict({"citations": 1, "domain": "example.com"}, three) == (
        True, "3 citations, one from example.com: https://News.Example.com/b")
    assert verdict({"citations": 1, "domain": "gov.cn"}, three) == (
        True, "3 citations, one from gov.cn: https://www.gov.cn/a")
    # a look-alike is another host: the name must end at a dot
    assert verdict({"citations": 1, "domain": "ample.com"}, three) == (
        False, "no citation from ample.com among 3 citations: www.gov.cn, news.example.com")
    assert verdict({"citations": 1, "domain": "a.cn"}, outcome()) == (
        False, "expected at least 1 citation, got 0")


def test_citations_malformed() -> None:
    assert verdict({"citations": "2"}, cited()) == (
        False, "invalid citations expectation: citations must be a whole number, got '2'")
    assert verdict({"citations": 1, "domain": ""}, cited("https://a.cn")) == (
        False, "invalid citations expectation: domain must be a host name, got ''")


def filtered(*entries: tuple[str, int]) -> TurnOutcome:
    return outcome(content_filter=tuple({"role": r, "level": lv} for r, lv in entries))


def test_content_filter_level_is_the_most_severe_entry() -> None:
    both = filtered(("user", 1), ("assistant", 3))
    assert verdict({"content_filter": 1}, both) == (
        True, "content_filter level 1 (expected 1)")
    assert verdict({"content_filter": 3}, both) == (
        False, "expected content_filter level 3, got content_filter level 1")
    assert verdict({"content_filter": 3, "role": "assistant"}, both) == (
        True, "content_filter level of assistant 3 (expected 3)")


def test_content_filter_compare() -> None:
    """0 is the most severe: at_most asks for that severe or more, at_least for no more."""
    one = filtered(("assistant", 1))
    assert verdict({"content_filter": 2, "compare": "at_most"}, one)[0] is True
    assert verdict({"content_filter": 0, "compare": "at_most"}, one) == (
        False, "expected content_filter level at most 0 (that severe or more), got "
               "content_filter level 1")
    assert verdict({"content_filter": 1, "compare": "at_least"}, one)[0] is True
    assert verdict({"content_filter": 2, "compare": "at_least"}, one) == (
        False, "expected content_filter level at least 2 (no more severe), got "
               "content_filter level 1")
    # nothing flagged: no level, which is no more severe than any, and equals none
    assert verdict({"content_filter": 3, "compare": "at_least"}, outcome()) == (
        True, "no content_filter level (expected at least 3 (no more severe))")
    assert verdict({"content_filter": 3, "compare": "at_most"}, outcome())[0] is False
    assert verdict({"content_filter": 3}, outcome()) == (
        False, "expected content_filter level 3, got no content_filter level")


def test_content_filter_malformed() -> None:
    assert verdict({"content_filter": 2, "compare": "below"}, outcome()) == (
        False, "invalid content_filter expectation: compare must be one of equal, at_most, "
               "at_least, got 'below'")
    assert verdict({"content_filter": 2, "role": "system"}, outcome()) == (
        False, "invalid content_filter expectation: role must be one of assistant, user, "
               "history, got 'system'")
    assert verdict({"content_filter": 2, "domain": "a.cn"}, outcome()) == (
        False, "invalid content_filter expectation: unknown option domain for content_filter "
               "(allowed: compare, name, role)")


# --- python --------------------------------------------------------------------------------


def named(content: str) -> TurnOutcome:
    return outcome(content, variables={"user": "小明"})


def test_python_bool() -> None:
    assert verdict({"python": "checks:mentions_name"}, named("你好小明")) == (
        True, "python check checks:mentions_name passed"
    )
    assert verdict({"python": "checks:mentions_name"}, named("你好")) == (
        False, "python check checks:mentions_name failed"
    )


def test_python_tuple() -> None:
    assert verdict({"python": "checks:short_enough"}, "hi") == (True, "reply has 2 characters")
    assert verdict({"python": "checks:short_enough"}, "x" * 11) == (
        False, "reply has 11 characters"
    )


def test_python_dict() -> None:
    assert verdict({"python": "checks:as_dict"}, "ok?") == (True, "asks a question")
    assert verdict({"python": "checks:as_dict"}, "ok.") == (False, "does not end with '?'")


def test_python_dotted_module_in_a_package() -> None:
    assert verdict({"python": "pkg.rules:polite"}, "请稍等") == (
        True, "python check pkg.rules:polite passed"
    )


def test_python_raising() -> None:
    assert verdict({"python": "checks:boom"}, "x") == (
        False, "python check checks:boom raised ValueError: boom"
    )


def test_python_unexpected_return() -> None:
    assert verdict({"python": "checks:returns_number"}, "x") == (
        False,
        "python check checks:returns_number returned 12 (int); expected a bool, a "
        '(bool, reason) tuple or {"passed": bool, "reason": str}',
    )


def test_python_missing_module() -> None:
    assert verdict({"python": "nope:f"}, "x") == (
        False, f"python check nope:f could not be loaded: no module 'nope' in {CHECKS_DIR}"
    )


def test_python_missing_function() -> None:
    assert verdict({"python": "checks:nope"}, "x") == (
        False, "python check checks:nope could not be loaded: module 'checks' has no function "
        "'nope'"
    )
    assert verdict({"python": "checks:not_callable"}, "x")[0] is False


def test_python_module_failing_to_import() -> None:
    assert verdict({"python": "broken:f"}, "x") == (
        False, "python check broken:f could not be loaded: importing 'broken' failed: "
        "RuntimeError: cannot import me"
    )


def test_python_bad_reference() -> None:
    assert verdict({"python": "checks.mentions_name"}, "x") == (
        False, "python check checks.mentions_name could not be loaded: "
        "'checks.mentions_name' is not of the form module:function"
    )


def test_python_context_holds_the_turn() -> None:
    out = outcome(
        "x", tool_calls=(WEATHER,), variables={"user": "Ann"},
        messages=({"role": "user", "content": "天气?"},),
    )
    assert verdict({"python": "checks:echo_context"}, out) == (
        True,
        "completion_tokens,finish_reason,latency_ms,messages,tool_calls,ttft_ms,variables"
        "|get_weather|天气?",
    )


def test_python_check_cannot_alter_the_run() -> None:
    variables = {"user": "Ann"}
    messages = ({"role": "user", "content": "hi"},)
    out = outcome("x", variables=variables, messages=messages)
    assert verdict({"python": "checks:mutate"}, out)[0] is True
    assert variables == {"user": "Ann"}
    assert out.messages == messages


def test_python_checks_from_many_threads() -> None:
    spec = {"python": "checks:short_enough"}
    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(lambda i: check(spec, "x" * i).reason, range(32)))
    assert reasons == [f"reply has {i} characters" for i in range(32)]


# --- judge ---------------------------------------------------------------------------------


def test_judge_pass_and_fail_with_a_fake_judge() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def judge(rubric: str, reply: str, model: str | None) -> tuple[bool, str]:
        seen.append((rubric, reply, model))
        return "小明" in reply, "names the user" if "小明" in reply else "does not name the user"

    spec = {"judge": "The reply greets the user by name.", "model": "glm-4-plus"}
    assert verdict(spec, "你好小明", judge=judge) == (True, "judge: names the user")
    assert verdict({"judge": "greets"}, "你好", judge=judge) == (
        False, "judge: does not name the user"
    )
    assert seen == [
        ("The reply greets the user by name.", "你好小明", "glm-4-plus"),
        ("greets", "你好", None),
    ]


def test_judge_raising() -> None:
    def judge(rubric: str, reply: str, model: str | None) -> tuple[bool, str]:
        raise ValueError("the judge's answer holds no verdict: 'hmm'")

    assert verdict({"judge": "r"}, "x", judge=judge) == (
        False, "judge raised ValueError: the judge's answer holds no verdict: 'hmm'"
    )


def test_judge_returning_nonsense() -> None:
    def judge(rubric: str, reply: str, model: str | None) -> tuple[bool, str]:
        return "yes"  # type: ignore[return-value]

    assert verdict({"judge": "r"}, "x", judge=judge) == (
        False, "judge returned 'yes'; expected (bool, reason)"
    )


def test_judge_empty_reason() -> None:
    assert verdict({"judge": "r"}, "x", judge=lambda r, s, m: (True, "")) == (True, "judge passed")


def test_no_judge_available() -> None:
    assert verdict({"judge": "r"}, "x") == (False, "no judge available")


def test_build_judge_prompt() -> None:
    messages = build_judge_prompt("Mentions Paris.", "It is Paris.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '{"pass": true, "reason": "one short sentence"}' in messages[0]["content"]
    assert messages[1]["content"] == (
        "<rubric>\nMentions Paris.\n</rubric>\n\n<reply>\nIt is Paris.\n</reply>\n\n"
        'Answer with the JSON object {"pass": true|false, "reason": "..."} only.'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"pass": true, "reason": "names Paris"}', (True, "names Paris")),
        ('{"pass": false, "reason": "no city"}', (False, "no city")),
        ('```json\n{"pass": false, "reason": "off topic"}\n```', (False, "off topic")),
        ('Verdict:\n{"pass": true, "reason": "ok"}\nThanks.', (True, "ok")),
        ('{"passed": "true"}', (True, "")),
        ("PASS", (True, "")),
        ("FAIL: the reply is rude\nand long", (False, "the reply is rude and long")),
        ("**Pass** - concise and correct", (True, "concise and correct")),
        ("failed. missing the date", (False, "missing the date")),
    ],
)
def test_parse_judge_answer(text: str, expected: tuple[bool, str]) -> None:
    assert parse_judge_answer(text) == expected


@pytest.mark.parametrize("text", ["", "I think it is fine", '{"verdict": "good"}', "passing"])
def test_parse_judge_answer_rejects_unparseable(text: str) -> None:
    with pytest.raises(ValueError, match="holds no verdict"):
        parse_judge_answer(text)
