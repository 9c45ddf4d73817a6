"""The wrapper every stage's action runs in: user errors print plainly, bugs say they are bugs."""

from __future__ import annotations

import json

import pytest
from doit.exceptions import TaskFailed

from afs_build.errors import StageError
from afs_build.manifest import load
from afs_build.stages.common import action


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyError("missing"), OSError(5, "I/O error"),
                                   TypeError("no")])
def test_an_unexpected_exception_is_an_internal_error_with_the_log_path(project, minimal, error):
    manifest = load(project.write(minimal))

    @action("demo")
    def run(manifest, name):
        raise error

    result = run(manifest, "alpha")
    assert isinstance(result, TaskFailed)
    message = str(result.message)
    assert message.startswith(f"internal error in demo:alpha: {type(error).__name__}: ")
    log = project.root / "build" / "logs" / "afs.jsonl"
    assert f"please report it with the log: {log}" in message
    assert "Traceback" not in message
    records = [json.loads(line) for line in log.read_text().splitlines()]
    trace = next(r for r in records if r["event"].startswith("internal error"))
    assert trace["task"] == "demo:alpha" and "Traceback" in trace["data"]["traceback"]


def test_a_user_error_is_its_message_alone(project, minimal):
    manifest = load(project.write(minimal))

    @action("demo")
    def run(manifest, name):
        raise StageError("sources.chat: chat.jsonl line 3 is not JSON; fix the line")

    result = run(manifest, "alpha")
    assert isinstance(result, TaskFailed)
    assert str(result.message) == "sources.chat: chat.jsonl line 3 is not JSON; fix the line"


def test_the_result_of_a_good_action_passes_through(project, minimal):
    manifest = load(project.write(minimal))
    assert action("demo")(lambda manifest, name: {"ok": name})(manifest, "alpha") == {"ok": "alpha"}
