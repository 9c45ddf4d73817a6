"""Running a data stage's action on a project written from a dict, as doit would."""

from __future__ import annotations

import logging

import pytest
from doit.exceptions import TaskFailed

from afs_build import log
from afs_build.manifest import load


@pytest.fixture
def quiet_log():
    """Detach the log handlers a stage's action attaches, so no test writes another's log."""
    yield
    logger = logging.getLogger(log.LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def run_stage(stage, manifest_path, name: str):
    """The result of `stage.run(manifest, name)`: None, or the TaskFailed doit would print."""
    return stage.run(load(manifest_path), name)


def assert_clean_failure(result, *needles: str) -> str:
    """A user error: a TaskFailed naming what is given, never an internal error or a traceback."""
    assert isinstance(result, TaskFailed), f"expected a failed task, got {result!r}"
    message = result.message
    assert "internal error" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message
