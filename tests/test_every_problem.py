"""Every problem of every stage of every file, at once: `glmrun validate` and `glmrun run` list
the same problems, each at file:line:column, then exit 2 having sent nothing.

Each case is a folder of files with problems of several stages; the expected problems are
listed by stage, and the output must be exactly those (sorted by file and position).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fixtures.e2e.harness import glmrun, write

from glmrun.mock import MockServer

SCHEMA_AND_TEMPLATES = {
    "s/one.yaml": """
        model: glm-4-flash
        mode: telepathy
        vars: {user: 小明}
        messages:
          - {role: usr, content: "hi {{ user }}"}
          - {role: user, content: "{{ nope }}"}
        turns:
          - "{{ user }"
        params: {tempreature: 1}
        expect:
          - {regex: "([a-z"}
    """,
}
SCHEMA_AND_TEMPLATES_PROBLEMS = {
    "schema": [
        "s/one.yaml:2:7: mode: 'telepathy' is not one of ['sync', 'stream', 'async', 'batch']",
        "s/one.yaml:5:12: messages[0].role: 'usr' is not one of "
        "['system', 'user', 'assistant', 'tool']",
        "s/one.yaml:9:10: params.tempreature: unknown key 'tempreature' "
        "(did you mean 'temperature'?)",
    ],
    "templates": [  # in the messages after the refused one: named as in the file
        "s/one.yaml:6:27: messages[1].content: undefined variable 'nope' (conversation 'one')",
        "s/one.yaml:8:5: turns[0]: template syntax error (line 1): unexpected '}' "
        "(conversation 'one')",
    ],
    "expectations": [
        "s/one.yaml:11:13: expect[0].regex: invalid regular expression: missing ]: [a-z "
        "(conversation 'one')",
    ],
}

EVERY_STAGE_OF_A_SUITE = {
    "s/suite.yaml": """
        model: glm-4-flash
        messages:
          - {role: user, content: "{{ question }}"}
        conversations:
          - name: greet
            vars: {question: hi}
            params: {max_tokens: 0}
            expect: [{contains: "{{ answer }}"}]
          - name: greet
            vars: {question: again}
          - name: rows
            cases: _data/nowhere.csv
          - name: picture
            vars: {question: look}
            messages:
              - role: user
                content:
                  - {type: text, text: "{{ question }}"}
                  - {type: image_url, image_url: {url: _data/missing.png}}
          - name: ids
            cases:
              - {id: a, question: x}
              - {id: a, question: y}
          - name: typo
            modle: glm-4
            vars: {question: "q"}
            turns: ["{{ later }}"]
    """,
    "s/broken.yaml": """
        model: m
        messages:
          - {role: user, content: "x"
    """,
    "s/run.yaml": """
        model: m
        messages: [{role: user, content: x}]
    """,
}
EVERY_STAGE_OF_A_SUITE_PROBLEMS = {
    "yaml": [
        "s/broken.yaml:4:1: did not find expected ',' or '}' "
        "(while parsing a flow mapping at line 3)",
    ],
    "schema": [
        "s/suite.yaml:7:26: conversations[0].params.max_tokens: 0 is less than the minimum of 1",
        "s/suite.yaml:25:5: conversations[5].modle: unknown key 'modle' "
        "(did you mean 'model'?)",
    ],
    "names and cases files": [
        "s/suite.yaml:9:11: conversations[1].name: duplicate conversation name 'greet' "
        "(first at line 5)",
        "s/suite.yaml:12:5: conversations[2].cases: cases file '_data/nowhere.csv': not found",
    ],
    "templates": [
        "s/suite.yaml:8:25: conversations[0].expect[0].contains: undefined variable 'answer' "
        "(conversation 'greet')",
        "s/suite.yaml:27:13: conversations[5].turns[0]: undefined variable 'later' "
        "(conversation 'typo')",
    ],
    "media": [
        "s/suite.yaml:19:48: conversations[3].messages[0].content[1].image_url.url: image "
        "'_data/missing.png' not found (conversation 'picture')",
    ],
    "ids": [
        "s/suite.yaml:22:7: conversations[4].cases: case id 'a' of row 2 is already row 1's: "
        "case ids must be unique (conversation 'ids', case 2)",
        "s/run.yaml:1:1: the run id 'run' is taken by the run's manifest (run.json): "
        "rename the file",
    ],
}

REFUSED_ITEMS_AND_INPUTS = {
    "s/items.yaml": """
        model: glm-4-flash
        messages: [{role: user, content: "{{ q }}"}]
        conversations:
          - vars: {q: 1}
          - name: b
            messages:
              - {role: user}
              - {role: user, content: "{{ r }}"}
    """,
    "s/vars.yaml": """
        model: glm-4-flash
        vars: [not, a, mapping]
        messages: [{role: user, content: "{{ user }}"}]
        expect: [{regex: "("}]
    """,
    "s/shape.yaml": """
        model: glm-4-flash
        messages: [{role: user, content: "{{ q }}"}]
        conversations: {name: a, vars: {q: 1}}
    """,
    "s/fallback.yaml": """
        model: glm-4-flash
        messages: [{role: user, content: "{{ topic }}"}]
        conversations:
          - name: a
            vars: {topic: x}
          - name: b
            messages: not a list
    """,
    "s/other.yaml": """
        model: glm-4-flash
        messages: [{role: user, content: "{{ fine }} {{ missing }}"}]
        vars: {fine: 1}
        conversations:
          - name: ok
          - name: bad_vars
            vars: [fine]
    """,
}
REFUSED_ITEMS_AND_INPUTS_PROBLEMS = {
    "schema": [
        "s/items.yaml:4:5: conversations[0]: 'name' is a required property",
        "s/items.yaml:7:9: conversations[1].messages[0]: 'content' is a required property",
        # a refused vars takes its conversation's templates with it: 'missing' once, not twice
        "s/other.yaml:7:11: conversations[1].vars: ['fine'] is not of type 'object'",
        # a refused vars takes the file's templates with it: no 'user' undefined, no regex
        "s/vars.yaml:2:7: vars: ['not', 'a', 'mapping'] is not of type 'object'",
        # b's own messages refused: the file's, which b never sends, are not checked for b
        "s/fallback.yaml:7:15: conversations[1].messages: 'not a list' is not of type 'array'",
        # and a refused conversations the file's: its top level is no conversation ('q')
        "s/shape.yaml:3:16: conversations: {'name': 'a', 'vars': {'q': 1}} is not of type "
        "'array'",
    ],
    "templates": [  # the conversation and message after the refused ones, named as in the file
        "s/items.yaml:8:31: conversations[1].messages[1].content: undefined variable 'r' "
        "(conversation 'b')",
        "s/other.yaml:2:34: messages[0].content: undefined variable 'missing' "
        "(conversation 'ok')",
    ],
}

CASES = {
    "schema_and_templates": (SCHEMA_AND_TEMPLATES, SCHEMA_AND_TEMPLATES_PROBLEMS),
    "every_stage_of_a_suite": (EVERY_STAGE_OF_A_SUITE, EVERY_STAGE_OF_A_SUITE_PROBLEMS),
    "refused_items_and_inputs": (REFUSED_ITEMS_AND_INPUTS, REFUSED_ITEMS_AND_INPUTS_PROBLEMS),
}


def expected_output(by_stage: dict[str, list[str]]) -> str:
    lines = sorted((line for stage in by_stage.values() for line in stage), key=_position)
    return "".join(f"{line}\n" for line in lines) + f"{len(lines)} problems found\n"


def _position(line: str) -> tuple[str, int, int]:
    file, row, column, _ = line.split(":", 3)
    return file, int(row), int(column)


@pytest.mark.parametrize("name", list(CASES))
def test_validate_and_run_list_every_problem_of_every_stage_at_once(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: MockServer) -> None:
    files, by_stage = CASES[name]
    for file, text in files.items():
        write(tmp_path, file, textwrap.dedent(text).lstrip("\n"))
    monkeypatch.chdir(tmp_path)
    want = expected_output(by_stage)
    checked = glmrun("validate", "s")
    assert (checked.exit_code, checked.stdout) == (2, "")
    assert checked.stderr == want
    run = glmrun("run", "s", "--base-url", api.base_url, "-o", "out", "--no-progress")
    assert (run.exit_code, run.stdout, run.stderr) == (2, "", want)  # the same list
    assert api.requests == [] and not Path("out").exists()  # nothing sent, nothing written


def test_files_given_one_by_one_report_as_the_folder_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, by_stage = CASES["every_stage_of_a_suite"]
    for file, text in files.items():
        write(tmp_path, file, textwrap.dedent(text).lstrip("\n"))
    monkeypatch.chdir(tmp_path)
    checked = glmrun("validate", *sorted(files))
    assert checked.exit_code == 2
    assert checked.stderr == expected_output(by_stage)


def test_a_clash_of_ids_is_one_problem_per_conversation_among_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "model: m\nmessages: [{role: user, content: '{{ q }}'}]\ncases: [{q: 1}, {q: 2}]\n"
    write(tmp_path, "a/chat.yaml", text)
    write(tmp_path, "b/chat.yaml", text)
    write(tmp_path, "c.yaml", text + "expect: [{regex: '('}]\n")
    monkeypatch.chdir(tmp_path)
    checked = glmrun("validate", "a/chat.yaml", "b/chat.yaml", "c.yaml")
    assert checked.exit_code == 2
    assert checked.stderr == (
        "b/chat.yaml:1:1: two runs would share the id 'chat--case1' (a/chat.yaml and "
        "b/chat.yaml): rename one, or run the folder above both so that their ids carry their "
        "folders\n"
        "c.yaml:4:18: expect[0].regex: invalid regular expression: missing ): ( "
        "(conversation 'c', cases 1, 2)\n2 problems found\n")
