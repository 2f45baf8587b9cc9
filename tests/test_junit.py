"""JUnit XML: valid against the schema CI servers read, exact counts, streamed."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glmrun.output.junit import classname_of, write_junit

etree = pytest.importorskip("lxml.etree")

XSD = Path(__file__).parent / "fixtures" / "junit" / "junit.xsd"


def transcript(run_id: str, file: str, status: str, **overrides: Any) -> dict[str, Any]:
    """The fields JUnit reads, around a transcript with one reply."""
    t: dict[str, Any] = {
        "transcript_version": 1,
        "id": run_id,
        "name": run_id.split("--")[0],
        "source": {"file": file, "sha256": "ab" * 32, "line": 1},
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": f"reply of {run_id}"}],
        "expectations": [],
        "status": status,
        "error": None,
        "started_at": "2025-01-02T03:04:05.250Z",
        "duration_ms": 1500.0,
    }
    t.update(overrides)
    return t


FAILED_EXPECTATIONS = [
    {"turn": 0, "kind": "contains", "name": None, "spec": {}, "passed": True,
     "reason": "found 'Ada'", "diff": None},
    {"turn": 0, "kind": "equals", "name": "exact", "spec": {}, "passed": False,
     "reason": "reply differs", "diff": "--- expected\n+++ actual\n-Hi\n+Hello"},
    {"turn": 1, "kind": "regex", "name": None, "spec": {}, "passed": False,
     "reason": "no match for ^\\d+$", "diff": None},
]
RATE_LIMIT = {"kind": "rate_limit", "code": "1302", "status": 429,
              "message": "Too many requests, slow down"}


def mixed_run() -> Iterator[dict[str, Any]]:
    yield transcript("greeting--case0", "convos/greeting.yaml", "passed",
                     started_at="2025-01-02T03:04:09Z")
    yield transcript("greeting--case1", "convos/greeting.yaml", "failed",
                     expectations=FAILED_EXPECTATIONS, duration_ms=250.0)
    yield transcript("math", "convos/sub/math.yml", "error", error=RATE_LIMIT,
                     messages=[{"role": "user", "content": "1+1?"}],
                     started_at="2025-01-02T03:00:00+00:00")
    yield transcript("greeting--case2", "convos/greeting.yaml", "passed", duration_ms=0.4)
    yield transcript("math-2", "convos/sub/math.yml", "passed",
                     started_at="2025-01-02T10:59:59.5+08:00")  # the suite's earliest, in UTC


def assert_valid(path: Path) -> Any:
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(path))
    assert schema.validate(doc), schema.error_log
    return doc.getroot()


def test_the_xsd_rejects_what_ci_servers_would() -> None:
    """The fixture schema is not a rubber stamp."""
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    good = b'<testsuites><testsuite name="a" tests="1" failures="0" errors="0">' \
           b'<testcase name="x" classname="a" time="1.000"/></testsuite></testsuites>'
    assert schema.validate(etree.fromstring(good))
    for bad in (
        good.replace(b'tests="1"', b'tests="one"'),
        good.replace(b'time="1.000"', b'time="1s"'),
        good.replace(b'classname="a" ', b""),
        good.replace(b"<testcase", b"<testcase bogus='1'"),
        good.replace(b"/></testsuite>", b"><failure/><error/></testcase></testsuite>"),
    ):
        assert not schema.validate(etree.fromstring(bad)), bad


def test_a_mixed_run_is_valid_with_exact_counts(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "junit.xml"
    write_junit(mixed_run(), path, suite_name="nightly")
    root = assert_valid(path)
    assert root.tag == "testsuites"
    assert dict(root.attrib) == {"name": "nightly", "tests": "5", "failures": "1", "errors": "1",
                                 "time": "4.750"}
    suites = root.findall("testsuite")
    assert [dict(s.attrib) for s in suites] == [
        {"name": "convos/greeting.yaml", "tests": "3", "failures": "1", "errors": "0",
         "skipped": "0", "time": "1.750", "timestamp": "2025-01-02T03:04:05"},
        {"name": "convos/sub/math.yml", "tests": "2", "failures": "0", "errors": "1",
         "skipped": "0", "time": "3.000", "timestamp": "2025-01-02T02:59:59"},
    ]
    cases = [[dict(c.attrib) for c in s.findall("testcase")] for s in suites]
    assert cases == [
        [{"name": "greeting--case0", "classname": "convos.greeting", "time": "1.500"},
         {"name": "greeting--case1", "classname": "convos.greeting", "time": "0.250"},
         {"name": "greeting--case2", "classname": "convos.greeting", "time": "0.000"}],
        [{"name": "math", "classname": "convos.sub.math", "time": "1.500"},
         {"name": "math-2", "classname": "convos.sub.math", "time": "1.500"}],
    ]

    passed, failed, _ = suites[0].findall("testcase")
    assert [child.tag for child in passed] == ["system-out"]
    assert passed.findtext("system-out") == "reply of greeting--case0"
    assert [child.tag for child in failed] == ["failure", "system-out"]
    failure = failed.find("failure")
    assert dict(failure.attrib) == {
        "message": "2 expectations failed: reply differs; no match for ^\\d+$",
        "type": "expectation",
    }
    assert failure.text == ("equals exact (turn 0): reply differs\n"
                            "--- expected\n+++ actual\n-Hi\n+Hello\n\n"
                            "regex (turn 1): no match for ^\\d+$")

    errored = suites[1].find("testcase")
    assert [child.tag for child in errored] == ["error"]  # it never replied: no system-out
    error = errored.find("error")
    assert dict(error.attrib) == {"message": "Too many requests, slow down", "type": "rate_limit"}
    assert error.text == ("kind: rate_limit\ncode: 1302\nstatus: 429\n"
                          "message: Too many requests, slow down")


def test_exact_document_for_a_tiny_run(tmp_path: Path) -> None:
    one_failure = [dict(FAILED_EXPECTATIONS[1])]
    write_junit([transcript("a", "x.yaml", "passed", messages=[]),
                 transcript("b", "x.yaml", "failed", expectations=one_failure)],
                tmp_path / "j.xml")
    assert (tmp_path / "j.xml").read_text(encoding="utf-8") == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<testsuites name="glmrun" tests="2" failures="1" errors="0" time="3.000">\n'
        '  <testsuite name="x.yaml" tests="2" failures="1" errors="0" skipped="0" time="3.000"'
        ' timestamp="2025-01-02T03:04:05">\n'
        '    <testcase name="a" classname="x" time="1.500"/>\n'
        '    <testcase name="b" classname="x" time="1.500">\n'
        '      <failure message="reply differs" type="expectation">equals exact (turn 0): reply'
        " differs\n--- expected\n+++ actual\n-Hi\n+Hello</failure>\n"
        "      <system-out>reply of b</system-out>\n"
        "    </testcase>\n"
        "  </testsuite>\n"
        "</testsuites>\n"
    )


def test_an_error_without_details_still_says_error(tmp_path: Path) -> None:
    write_junit([transcript("e", "x.yaml", "error")], tmp_path / "j.xml")
    error = assert_valid(tmp_path / "j.xml").find("testsuite/testcase/error")
    assert dict(error.attrib) == {"message": "error", "type": "error"}


def test_hostile_text_survives_as_data(tmp_path: Path) -> None:
    reply = 'a\x00b\x1bc ]]> <tag attr="1"> & \r\n\ud800 \U0001f600 “ok”'
    reason = 'line one\nline "two"\t& <three>'
    t = transcript("weird", "convos/w.yaml", "failed",
                   messages=[{"role": "assistant", "content": reply}],
                   expectations=[{"turn": 0, "kind": "equals", "name": None, "spec": {},
                                  "passed": False, "reason": reason, "diff": None}])
    write_junit([t], tmp_path / "j.xml")
    case = assert_valid(tmp_path / "j.xml").find("testsuite/testcase")
    assert case.findtext("system-out") == (
        'a\\u0000b\\u001bc ]]> <tag attr="1"> & \r\n\\ud800 \U0001f600 “ok”')
    assert case.find("failure").get("message") == 'line one line "two" & <three>'
    assert case.findtext("failure") == 'equals (turn 0): line one\nline "two"\t& <three>'


def test_long_messages_are_cut_but_bodies_are_not(tmp_path: Path) -> None:
    reason = "x" * 2000
    t = transcript("long", "a.yaml", "failed",
                   expectations=[{"turn": None, "kind": "judge", "name": None, "spec": {},
                                  "passed": False, "reason": reason, "diff": None}])
    write_junit([t], tmp_path / "j.xml")
    failure = assert_valid(tmp_path / "j.xml").find("testsuite/testcase/failure")
    assert failure.get("message") == "x" * 499 + "…"
    assert failure.text == f"judge: {reason}"


def test_no_transcripts_is_an_empty_valid_report(tmp_path: Path) -> None:
    write_junit(iter(()), tmp_path / "j.xml")
    root = assert_valid(tmp_path / "j.xml")
    assert dict(root.attrib) == {"name": "glmrun", "tests": "0", "failures": "0", "errors": "0",
                                 "time": "0.000"}


class Transcript(dict[str, Any]):
    """A dict that can be weakly referenced, to see whether write_junit keeps it."""


@pytest.mark.slow
def test_transcripts_are_not_kept_while_streaming(tmp_path: Path) -> None:
    refs: list[weakref.ref[Transcript]] = []
    alive_during: list[int] = []

    def stream() -> Iterator[Transcript]:
        for i in range(50):
            gc.collect()
            alive_during.append(sum(r() is not None for r in refs))
            t = Transcript(transcript(f"c{i}", f"f{i % 3}.yaml", "passed",
                                      messages=[{"role": "assistant", "content": "z" * 10_000}]))
            refs.append(weakref.ref(t))
            yield t

    write_junit(stream(), tmp_path / "j.xml")
    assert max(alive_during) <= 1  # at most the one just handed over
    root = assert_valid(tmp_path / "j.xml")
    assert [s.get("tests") for s in root.findall("testsuite")] == ["17", "17", "16"]
    assert [c.get("name") for c in root.find("testsuite").findall("testcase")][:3] == [
        "c0", "c3", "c6"]


def test_a_failed_write_keeps_the_old_report_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "junit.xml"
    path.write_text("old report")

    def fail(*args: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        write_junit(mixed_run(), path)
    assert os.listdir(tmp_path) == ["junit.xml"]
    assert path.read_text() == "old report"


def test_a_failing_stream_writes_nothing(tmp_path: Path) -> None:
    def stream() -> Iterator[dict[str, Any]]:
        yield transcript("a", "x.yaml", "passed")
        raise RuntimeError("runner crashed")

    with pytest.raises(RuntimeError):
        write_junit(stream(), tmp_path / "j.xml")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("source", "classname"),
    [("convos/greeting.yaml", "convos.greeting"), ("./a/b.v2.yml", "a.b.v2"),
     ("/abs/x.yaml", "abs.x"), ("win\\dir\\c.yaml", "win.dir.c"), ("noext", "noext"),
     ("", "glmrun")],
)
def test_classname_of(source: str, classname: str) -> None:
    assert classname_of(source) == classname
