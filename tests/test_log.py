"""The JSON-lines log: one object per event, with run id, task and duration; no secrets."""

from __future__ import annotations

import json
import logging

import pytest

from afs_build import log


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AFS_RUN_ID", "run-1")
    path = tmp_path / "logs" / "afs.jsonl"
    logger = log.setup(path, console=False)
    yield path
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_step_logs_start_and_end_with_duration(log_file):
    with log.step("ingest:chat", "converting", source="chat") as summary:
        summary["count"] = 3
    start, end = records(log_file)
    assert start["event"] == "converting: start" and end["event"] == "converting: done"
    assert {start["run"], end["run"]} == {"run-1"}
    assert end["task"] == "ingest:chat" and end["source"] == "chat" and end["count"] == 3
    assert isinstance(end["duration_s"], float) and end["duration_s"] >= 0


def test_failed_step_is_logged_as_an_error(log_file):
    with pytest.raises(ValueError):
        with log.step("mix:alpha", "mixing", specialist="alpha"):
            raise ValueError("group 'expert' is empty")
    failed = records(log_file)[-1]
    assert failed["level"] == "error" and failed["specialist"] == "alpha"
    assert failed["event"] == "mixing: failed"
    assert failed["data"]["error"] == "group 'expert' is empty"


def test_secrets_never_reach_the_log(log_file, monkeypatch):
    monkeypatch.setenv("TEACHER_API_KEY", "not-a-real-key-123456")
    log.event("calling teacher with not-a-real-key-123456", task="ingest:synth",
              header="Bearer sk-abcdefghijklmnopqrstuvwx", token="hf_abcdefghijklmnopqrstuvwxyz")
    text = log_file.read_text()
    assert "not-a-real-key-123456" not in text and "sk-abcdef" not in text and "hf_abcdef" not in text
    assert text.count("[redacted]") == 3


def test_log_rotates_by_size(log_file, monkeypatch):
    logger = logging.getLogger(log.LOGGER)
    handler = next(h for h in logger.handlers if hasattr(h, "maxBytes"))
    handler.maxBytes = 2000
    for i in range(100):
        log.event(f"event {i}", task="t")
    assert log_file.with_name("afs.jsonl.1").exists()
    assert log_file.stat().st_size <= 2000
