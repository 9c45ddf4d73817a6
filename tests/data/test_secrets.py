"""The secrets gate's rules: real-looking keys are caught, look-alikes pass, logs are redacted alike.

The keys below are random strings in each vendor's format (none is a live credential).
"""

from __future__ import annotations

import random

import pytest

from afs_build import log
from afs_build.data.secrets import REDACTED, RULES, entropy, find_secret, redact

CAUGHT = [
    # (text, rule, the secret value that must disappear when redacted)
    ("login = HfApi(token='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')", "huggingface-token",
     "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"),
    ("stripe.api_key = sk_live_51Na1Hedcm4pMbXDuCL1mHoOsFaQfDPr", "stripe-key",
     "sk_live_51Na1Hedcm4pMbXDuCL1mHoOsFaQfDPr"),
    ("SLACK = 'xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx'", "slack-token",
     "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("https://maps.googleapis.com/maps/api/js?key=AIzaSy0kGODKdinZnLXicaBAg8WY1jzIRlNQb0p",
     "google-api-key", "AIzaSy0kGODKdinZnLXicaBAg8WY1jzIRlNQb0p"),
    ("client = OpenAI(api_key='sk-3fA9bC2dE1')", "openai-api-key", "sk-3fA9bC2dE1"),
    ("client = OpenAI(api_key='sk-proj-Ab3xAb3xAb3xAb3xAb3xAb3x')", "openai-api-key",
     "sk-proj-Ab3xAb3xAb3xAb3xAb3xAb3x"),
    ("key = 'sk-ant-api03-q8Zr2vLm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Y'", "anthropic-api-key",
     "sk-ant-api03-q8Zr2vLm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Y"),
    ("aws_id = AKIAIOSFODNN7EXAMPLF", "aws-access-key", "AKIAIOSFODNN7EXAMPLF"),
    ("git clone https://ghp_fnLOpaMxxNDi9LE1Ki3ylOjt6o0NpUmkVO8J@github.com/a/b", "github-token",
     "ghp_fnLOpaMxxNDi9LE1Ki3ylOjt6o0NpUmkVO8J"),
    ("CI_TOKEN: glpat-z2MPKgcjnCqaXNv1syee", "gitlab-token", "glpat-z2MPKgcjnCqaXNv1syee"),
    ("//registry.npmjs.org/:_authToken=npm_ipTgadDZFlRJmCGmUXiAPyhzAnar3ZLt4bnl", "npm-token",
     "npm_ipTgadDZFlRJmCGmUXiAPyhzAnar3ZLt4bnl"),
    ("bot = Bot('1234567890:AAzX9k1gnneGEYG1_LwiqD9jJBAciI05Fhf')", "telegram-bot-token",
     "1234567890:AAzX9k1gnneGEYG1_LwiqD9jJBAciI05Fhf"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
     "private-key", "MIIEowIBAAKCAQEA7"),
    ("curl -H 'Authorization: Bearer 8f3Kq9LmZ2xV7nB1wR4tY6uP' https://api.example.com",
     "bearer-token", "8f3Kq9LmZ2xV7nB1wR4tY6uP"),
    ("DATABASE_URL = 'postgres://app:Zq8v!x2Lm@db.internal:5432/prod'", "url-password",
     "Zq8v!x2Lm"),
    ("token = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
     "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'", "jwt", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"),
    # NAME=value assignments of secret-looking names (shell, .env, Python, JSON, YAML)
    ("export GITHUB_TOKEN=5f2b8c9d1e0a7f3b", "secret-assignment", "5f2b8c9d1e0a7f3b"),
    ('MY_SERVICE_API_KEY = "q8Zr2vLm5Tn1Wx7Y"', "secret-assignment", "q8Zr2vLm5Tn1Wx7Y"),
    ('API_KEY = "f3a9c2e1d4b7a8c0"', "secret-assignment", "f3a9c2e1d4b7a8c0"),
    ("WEBHOOK_SECRET=Ab12Cd34Ef56Gh78", "secret-assignment", "Ab12Cd34Ef56Gh78"),
    ('config = {"client_secret": "9aF3kL0pQ2zX"}', "secret-assignment", "9aF3kL0pQ2zX"),
    ("auth:\n  access_token: 7Hq2Lm9Zx4Vb8Nw1Rt6Y", "secret-assignment", "7Hq2Lm9Zx4Vb8Nw1Rt6Y"),
    ('{"password":"hunter2hunter2"}', "password-assignment", "hunter2hunter2"),
    ("DB_PASSWORD=S3cure!Pass", "password-assignment", "S3cure!Pass"),
    ('connect(host, user="app", password="Tr0ub4dor&3")', "password-assignment", "Tr0ub4dor&3"),
    ("Contact jane.doe@acme-corp.io for access.", "email-address", "jane.doe@acme-corp.io"),
    ("POST https://hooks.slack.com/services/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",
     "slack-webhook", "q8Zr2vLm5Tn1Wx7Yq8Zr2vLm"),
    ("password = pypi-AgEIcHlwaS5vcmcCJGI4YzFhNWY4LWMwZjAtNGQ2Ny1iMjQ0LTU3ZDQ3MzE2MTc2OQACKlsz",
     "pypi-token", "pypi-AgEIcHlwaS5vcmcCJGI4YzFhNWY4LWMwZjAtNGQ2Ny1iMjQ0LTU3ZDQ3MzE2MTc2OQACKlsz"),
    ("sg = SendGridAPIClient('SG.q8Zr2vLm5Tn1Wx7Yq8Zr2v.Lm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Yq')",
     "sendgrid-key", "Lm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Yq8Zr2vLm5Tn1Wx7Yq"),
    ("client = Client('SK2b7f0c9d8e1a3b4c5d6e7f8091a2b3c4', secret)", "twilio-key",
     "SK2b7f0c9d8e1a3b4c5d6e7f8091a2b3c4"),
]

_RNG = random.Random(3)
_BASE64 = "".join(_RNG.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                  for _ in range(4000)) + "=="

LOOKALIKES = [
    'digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
    "git checkout 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "revision: 9fceb02d0ae598e95dc970b74767f19372d61af8",
    '{"id": "123e4567-e89b-12d3-a456-426614174000", "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}',
    'logo = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk'
    'YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="',
    f'ICON = "data:image/png;base64,{_BASE64}"',
    f"<img src='data:image/jpeg;base64,/9j/{_BASE64}'>",
    'password = input("Password: ")',
    "password = getpass.getpass()",
    "def login(user, password=None):\n    if password is None:\n        password = ask()",
    "password: str",
    "PASSWORD=",
    "token = os.environ['HF_TOKEN']",
    "api_key = os.getenv('OPENAI_API_KEY')",
    'api_key = "YOUR_API_KEY_HERE"',
    "password = os.environ['DB_PASSWORD']",
    "SECRET_KEY = settings.SECRET_KEY",
    "tokenizer.pad_token = tokenizer.eos_token",
    'eos_token = "<|im_end|>"',
    'pad_token = "[PAD]"',
    "max_tokens = 512",
    '{"next_page_token": "CAUQAAxyz91Lk3Vb2"}',
    "pip install sk-learn-compatible-transformers",
    '<div className="sk-spinner-2x-large">',
    "hf_hub_download(repo_id='HuggingFaceTB/SmolLM2-135M', filename='config.json')",
    "xoxo-hugs-and-kisses",
    "postgres://postgres:postgres@localhost:5432/app",
    "postgres://user:password@localhost/db",
    "Authorization: Bearer $TOKEN",
    "Authorization: Bearer <your token>",
    "Write to user@example.com or ops@mail.test",
    "git clone git@github.com:afs/afs.git",
    "logo@2x.png and y = x@self.weight",
    "The token is the smallest unit a model reads; the secret of good data is variety.",
    "AKIAIOSFODNN7EXAMPLE",
]


@pytest.mark.parametrize("text, rule, secret", CAUGHT, ids=[c[1] + f"-{i}" for i, c in enumerate(CAUGHT)])
def test_real_looking_secrets_are_caught_and_redacted(text, rule, secret):
    found = find_secret(text)
    assert found is not None and found.rule == rule
    assert secret not in redact(text) and REDACTED in redact(text)


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_pass(text):
    assert find_secret(text) is None
    assert redact(text) == text


def test_every_rule_is_exercised():
    assert {rule for _, rule, _ in CAUGHT} == set(RULES)


def test_assignment_redaction_keeps_the_name():
    assert redact('API_KEY = "f3a9c2e1d4b7a8c0"') == 'API_KEY = "[redacted]"'
    assert redact("export GITHUB_TOKEN=5f2b8c9d1e0a7f3b") == "export GITHUB_TOKEN=[redacted]"


def test_entropy():
    assert entropy("") == 0.0 and entropy("aaaa") == 0.0
    assert entropy("abcd") == pytest.approx(2.0)


def test_huge_inputs_stay_fast():
    import time

    texts = ["sk-" + "a-" * 50_000, "password=" * 20_000, "xoxb-" + "1" * 100_000,
             "-----BEGIN PRIVATE KEY-----" + "A" * 100_000, "a" * 100_000 + "@" + "b." * 1000]
    start = time.perf_counter()
    for text in texts:
        list(redact(text))
    assert time.perf_counter() - start < 2.0


def test_log_redaction_uses_the_same_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("AFS_RUN_ID", "run-1")
    path = tmp_path / "afs.jsonl"
    logger = log.setup(path, console=False)
    try:
        for text, _, secret in CAUGHT:
            log.event(f"read {text}", task="ingest:x", detail=text)
        log.event("clean", task="ingest:x", detail=" | ".join(LOOKALIKES[:10]))
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    written = path.read_text()
    leaked = [secret for _, _, secret in CAUGHT if secret in written]
    assert not leaked
    assert log.redact(" | ".join(LOOKALIKES[:10])) == " | ".join(LOOKALIKES[:10])


# --- the gate: samples with a secret become rejects that do not quote it --------------------

def _sample(answer: str, *, system: str | None = None, calls=None):
    from afs_build.data.records import make_sample

    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": "How do I log in to the service?"},
                 {"role": "assistant", "content": answer, **({"tool_calls": calls} if calls else {})}]
    return make_sample("s", messages, provenance={"file": "data.jsonl", "line": 7})


@pytest.mark.parametrize("text, rule, secret", CAUGHT[::3])
def test_the_gate_rejects_with_position_and_without_the_secret(text, rule, secret):
    import json

    from afs_build.data.records import Reject
    from afs_build.data.secrets import screen

    [reject] = list(screen([_sample(f"Sure.\nFirst line.\n{text}\n")]))
    assert isinstance(reject, Reject)
    assert reject.reason == f"secret: {rule}"
    assert (reject.file, reject.line, reject.excerpt) == ("data.jsonl", 7, "")
    assert reject.detail["field"] == "messages[1].content"
    assert reject.detail["field_line"] == 3 + text[:find_secret(text).start].count("\n")
    assert secret not in json.dumps(reject.to_json())


def test_the_gate_reads_system_prompts_tool_calls_and_tools():
    from afs_build.data.secrets import screen

    leaky = _sample("ok", system="Use key AKIAIOSFODNN7EXAMPLF")
    call = _sample("", calls=[{"name": "login", "arguments": {"password": "hunter2hunter2"}}])
    tool = _sample("ok")
    tool["tools"] = [{"name": "t", "description": "default token ghp_fnLOpaMxxNDi9LE1Ki3ylOjt6o0NpUmkVO8J",
                      "parameters": {}}]
    reasons = [(r.reason, r.detail["field"]) for r in screen([leaky, call, tool])]
    assert reasons == [("secret: aws-access-key", "messages[0].content"),
                       ("secret: password-assignment", "messages[1].tool_calls[0]"),
                       ("secret: github-token", "tools[0]")]


def test_the_gate_cuts_secrets_from_passing_rejects():
    from afs_build.data.records import RECORD, Filtered, Reject
    from afs_build.data.secrets import screen

    key = "ghp_fnLOpaMxxNDi9LE1Ki3ylOjt6o0NpUmkVO8J"
    broken = Reject("s", f"unknown speaker '{key}'", file="f", line=1,
                    excerpt=f'{{"from": "{key}", "value": 1}}', detail={"raw": [key]})
    cut = Reject("s", "malformed JSON", excerpt=("x " * 144) + key[:12])  # cut inside the key
    items = list(screen([RECORD, broken, cut, Filtered("language 'go' not in languages")]))
    assert items[0] is RECORD and items[3] == Filtered("language 'go' not in languages")
    assert key not in repr(items[1]) and "[redacted]" in items[1].excerpt
    assert key[:12] not in items[2].excerpt
