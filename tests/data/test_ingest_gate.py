"""A secret in any source never reaches a file under build/: doit ingest, score and mix, then grep.

The keys are random strings in each vendor's format (none is a live credential).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from conftest import CHAT, REPO

HF = "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"
STRIPE = "sk_live_51Na1Hedcm4pMbXDuCL1mHoOsFaQfDPr"
SLACK = "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIzaSy0kGODKdinZnLXicaBAg8WY1jzIRlNQb0p"
OPENAI = "sk-3fA9bC2dE1"
AWS = "AKIAIOSFODNN7EXAMPLF"
GITHUB = "ghp_fnLOpaMxxNDi9LE1Ki3ylOjt6o0NpUmkVO8J"
PASSWORD = "Tr0ub4dor&3x"
EMAIL = "jane.doe@acme-corp.io"
SECRETS = (HF, STRIPE, SLACK, GOOGLE, OPENAI, AWS, GITHUB, PASSWORD, EMAIL)

CODE = f'''"""Helpers to reach the deploy service."""


def connect(host, token="{GITHUB}"):
    """Open a session on `host` with the deploy token."""
    return host


def region():
    """The default region (ask ops, {EMAIL})."""
    return "eu"
'''
BROKEN_CODE = f'key = "{AWS}"\ndef broken(:\n    pass\n'
TOOLBENCH = [{
    "id": 1,
    "conversations": [
        {"from": "system", "value": "You are a helper.\nSpecifically, you have access to the following APIs: "
                                    "[{'name': 'post', 'description': 'Posts with " + SLACK + "', "
                                    "'parameters': {'type': 'object', 'properties': {}}}]"},
        {"from": "user", "value": "Post hello to the channel, please."},
        {"from": "assistant", "value": "Done: the message is posted."},
    ],
}]
FACTS = ("- {name: maps, key: " + GOOGLE + "}\n"
         "- {name: clean, key: none-needed}\n")
TEMPLATES = ("- name: key\n  questions: ['Which key does {{ name }} use?']\n"
             "  answer: '{{ name }} uses the key {{ key }}.'\n")
CSN = {"repo": "a/b", "path": "x.py", "func_name": "client", "language": "python", "partition": "train",
       "code": "def client():\n    \"\"\"Make a client.\"\"\"\n    return Client('" + OPENAI + "')",
       "docstring": "Make a client.", "url": "https://github.com/a/b"}


def test_no_secret_reaches_any_file_under_build(project, minimal):
    rows = CHAT + [
        {"instruction": "How do I call the model hub?", "output": f"Use HfApi(token='{HF}')."},
        {"instruction": f'Why does connect(password="{PASSWORD}") fail?', "output": "The host is down."},
        {"instruction": "Who runs billing?", "output": f"Write to {EMAIL} for billing."},
    ]
    chat = "".join(json.dumps(r) + "\n" for r in rows) + '{"instruction": "pay", "output": "' + STRIPE + '"\n'
    minimal["sources"] = {
        "chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"},
        "repo": {"kind": "codebase", "path": "repo"},
        "tools": {"kind": "toolbench", "path": "tools.json"},
        "facts": {"kind": "synthetic", "facts": "facts.yaml", "templates": "templates.yaml"},
        "csn": {"kind": "codesearchnet", "paths": ["csn.jsonl.gz"]},
    }
    minimal["mixes"]["general"] = {"samples": 6, "groups": {
        "all": {"share": 1.0, "sources": ["chat", "repo", "tools", "facts", "csn"]}}}
    project.write(minimal, {
        "chat.jsonl": chat, "repo/deploy.py": CODE, "repo/broken.py": BROKEN_CODE,
        "tools.json": json.dumps(TOOLBENCH), "facts.yaml": FACTS, "templates.yaml": TEMPLATES,
        "csn.jsonl.gz": gzip.compress((json.dumps(CSN) + "\n").encode())})
    env = {**os.environ, "AFS_MANIFEST": "afs.yaml"}
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "ingest", "score", "mix"],
                            cwd=project.root, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    build = project.root / "build"

    leaks = []
    for path in sorted(p for p in build.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaks += [f"{path.relative_to(build)}: {secret[:16]}" for secret in SECRETS
                  if secret[:16].encode() in data]
    assert not leaks
    assert all(secret[:16] not in result.stdout + result.stderr for secret in SECRETS)

    rejects = [json.loads(line) for line in (build / "data/mix/alpha/rejects.jsonl").read_text().splitlines()]
    found = {(r["source"], r["reason"], r.get("file"), r.get("line")) for r in rejects if r["reason"].startswith("secret")}
    assert {("chat", "secret: huggingface-token", "chat.jsonl", 7),
            ("chat", "secret: password-assignment", "chat.jsonl", 8),
            ("chat", "secret: email-address", "chat.jsonl", 9),
            ("tools", "secret: slack-token", "tools.json", 1),
            ("facts", "secret: google-api-key", "facts.yaml", 1),
            ("csn", "secret: openai-api-key", "csn.jsonl.gz", 1)} <= found
    assert {r[1] for r in found if r[0] == "repo"} >= {"secret: github-token", "secret: email-address"}
    assert all(r["detail"]["rule"] == r["reason"][len("secret: "):] and "field" in r["detail"]
               for r in rejects if r["reason"].startswith("secret"))
    # rejects of other kinds that held a secret keep their reason, with the secret cut out
    broken = [r for r in rejects if r["reason"].startswith(("malformed JSON", "Python syntax error"))]
    assert len(broken) == 2
    meta = json.loads((build / "data/ingest/chat/meta.json").read_text())
    assert meta["reject_reasons"] == {"secret": 3, "malformed JSON": 1}
    assert meta["records"] == {"read": 10, "kept": 6, "rejected": 4, "filtered": 0}
