"""The post-training tasks' shapes: what each reads and writes, as doit sees them."""

from __future__ import annotations

from afs_build import graph
from afs_build.manifest import load
from afs_build.paths import Layout
from afs_build.uptodate import OutputsIntact


def doit_tasks(manifest):
    """The tasks as doit loads and checks them (a target claimed twice is an error there)."""
    from doit.control import TaskControl
    from doit.loader import load_tasks

    namespace = graph.namespace(manifest)
    tasks = load_tasks(namespace, config=namespace["DOIT_CONFIG"])
    TaskControl(tasks)
    return {t.name: t for t in tasks if t.actions}


def test_float_types_in_quantize_are_the_gguf_tasks_files(project, minimal):
    minimal["specialists"]["alpha"]["quantize"] = ["F16", "BF16", "Q8_0"]
    manifest = load(project.write(minimal))
    tasks = doit_tasks(manifest)
    post = Layout.of(manifest).post("alpha")
    assert sorted(tasks["gguf:alpha"].targets) == sorted(
        str(p) for p in (post.gguf_report, post.gguf("F16"), post.gguf("BF16")))
    assert sorted(tasks["quantize:alpha"].targets) == sorted(
        str(p) for p in (post.quantize_report, post.gguf("Q8_0")))
    checks = {name: [c for c, _, _ in tasks[name].uptodate if isinstance(c, OutputsIntact)]
              for name in ("gguf:alpha", "quantize:alpha")}
    assert [(c.report, c.files) for c in checks["gguf:alpha"]] == [
        (post.gguf_report, [post.gguf("F16"), post.gguf("BF16")])]
    assert [(c.report, c.files) for c in checks["quantize:alpha"]] == [
        (post.quantize_report, [post.gguf("Q8_0")])]


def test_no_task_writes_a_merged_model(project, minimal):
    manifest = load(project.write(minimal))
    layout = Layout.of(manifest)
    tasks = doit_tasks(manifest)
    merge = tasks["merge:alpha"]
    assert merge.targets == [str(layout.post("alpha").merge_report)]
    assert all(str(layout.post("alpha").merged) not in t.targets for t in tasks.values())
    # the GGUF is made from the adapter and the base: both are inputs of its task
    gguf = tasks["gguf:alpha"]
    assert {str(layout.train("alpha").summary), str(layout.base("tiny").report),
            str(layout.post("alpha").merge_report)} <= gguf.file_dep
    assert "merge:alpha" in gguf.task_dep and "train:alpha" in merge.task_dep
