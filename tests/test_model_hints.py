"""Issue 12, model hints: a model name the table does not know but one of its models is close
to gets a warning with "did you mean ...?" from `validate` and `run`, never an error: new
models pass through, sent as written."""

from __future__ import annotations

from pathlib import Path

from fixtures.e2e.harness import chat_bodies, glmrun, run, write

from glmrun.mock import MockServer
from glmrun.plan.hints import model_hint

SUITE = """
    model: glm-4.8
    messages: [{role: user, content: hi}]
    conversations:
      - name: typo
        model: glm-4-flsh
      - name: own
        model: my-finetune-v3
      - name: known
        model: glm-4.7
      - name: inherits
"""


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_the_hint_names_the_closest_known_model() -> None:
    assert model_hint("glm-4.7") is None and model_hint("GLM-4.7") is None  # known
    assert model_hint("my-finetune-v3") is None  # nothing close: no noise
    assert model_hint("{{ model }}") is None  # a template: its value is not known yet
    assert model_hint("glm-5v-trubo") == (
        "model 'glm-5v-trubo' is not in glmrun's model table — did you mean 'glm-5v-turbo'? "
        "(it is sent as written)")


def test_validate_warns_at_the_model_line_and_still_passes(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", SUITE)
    result = glmrun("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 1 file valid\n"
    assert warnings(result.stderr) == [
        f"warning: {path}:2:8: model 'glm-4.8' is not in glmrun's model table — did you mean "
        "'glm-4.7'? (it is sent as written)",
        f"warning: {path}:6:12: model 'glm-4-flsh' is not in glmrun's model table — did you "
        "mean 'glm-4-flash'? (it is sent as written)",
    ]


def test_run_warns_and_sends_the_names_as_written(api: MockServer, tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", SUITE)
    result = run(api, path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert [w.split(": model ")[1].split(" is")[0] for w in warnings(result.stderr)] == [
        "'glm-4.8'", "'glm-4-flsh'"]
    assert sorted(b["model"] for b in chat_bodies(api)) == [
        "glm-4-flsh", "glm-4.7", "glm-4.8", "my-finetune-v3"]
    api.requests.clear()
    result = run(api, path, tmp_path / "out2", "--model", "glm-4-plux")
    assert result.exit_code == 0, result.output
    assert warnings(result.stderr) == [  # the files' models are not used: no hint for them
        "warning: --model: model 'glm-4-plux' is not in glmrun's model table — did you mean "
        "'glm-4-plus'? (it is sent as written)"]
    assert {b["model"] for b in chat_bodies(api)} == {"glm-4-plux"}
