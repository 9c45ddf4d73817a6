"""Base-model folders shaped like real ones, without weights: what afs fetches from the hub.

Each holds the files :data:`afs_build.training.inspection.HUB_FILES` names: the published
config.json and generation_config.json of the model (its real sizes), a small BPE tokenizer
trained here with the model's special tokens, and its chat template. Built offline in a
fraction of a second; no weights, so they also show that the checks never need them.

    qwen25(folder)    Qwen2.5-0.5B-Instruct: ChatML, <|im_end|>, no BOS, no generation markers
    llama3(folder)    Llama-3.2-1B-Instruct: header tokens, <|eot_id|>, a BOS added and templated
    mistral(folder)   Mistral-7B-Instruct-v0.3: [INST], an architecture afs cannot convert
"""

from __future__ import annotations

import json
from pathlib import Path

from tinymodel import CORPUS, QWEN2_SPLIT

QWEN25_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = """\
{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_TEMPLATE = """\
{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {{- '[INST] ' + message['content'] + ' [/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token }}
    {%- endif %}
{%- endfor %}
"""


def _tokenizer(folder: Path, special: list[str], *, bos: str | None, eos: str, pad: str | None,
               template: str, tokenizer_class: str, add_bos: bool) -> dict[str, int]:
    """Train and save a small byte-level BPE tokenizer; the special tokens' ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(CORPUS * 10, trainer=trainer)
    ids = {token: raw.token_to_id(token) for token in special}
    if add_bos:
        raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, ids[bos])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token=eos,
                                        pad_token=pad, unk_token=None)
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(tokenizer_class=tokenizer_class, add_bos_token=add_bos, add_eos_token=False)
    config.pop("chat_template", None)
    path.write_text(json.dumps(config, indent=2))
    (folder / "chat_template.jinja").write_text(template)
    return ids


def _write(folder: Path, name: str, value: dict) -> None:
    (folder / name).write_text(json.dumps(value, indent=2))


def qwen25(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(folder, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>", template=QWEN25_TEMPLATE,
                     tokenizer_class="Qwen2Tokenizer", add_bos=False)
    _write(folder, "config.json", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
        "tie_word_embeddings": True, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "hidden_act": "silu", "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "bfloat16"})
    _write(folder, "generation_config.json", {
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"], "do_sample": True, "temperature": 0.7})
    return folder


def llama3(folder: Path) -> Path:
    """Llama 3 ships no pad token; this folder sets the one Meta reserved for it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>", "<|eom_id|>", "<|finetune_right_pad_id|>"]
    ids = _tokenizer(folder, special, bos="<|begin_of_text|>", eos="<|eot_id|>",
                     pad="<|finetune_right_pad_id|>", template=LLAMA3_TEMPLATE,
                     tokenizer_class="PreTrainedTokenizerFast", add_bos=True)
    _write(folder, "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "max_position_embeddings": 131072, "tie_word_embeddings": True, "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        "torch_dtype": "bfloat16"})
    _write(folder, "generation_config.json", {
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        "do_sample": True, "temperature": 0.6, "top_p": 0.9})
    return folder


def mistral(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(folder, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>"], bos="<s>",
                     eos="</s>", pad="<pad>", template=MISTRAL_TEMPLATE,
                     tokenizer_class="PreTrainedTokenizerFast", add_bos=True)
    _write(folder, "config.json", {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32768,
        "max_position_embeddings": 32768, "tie_word_embeddings": False, "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "sliding_window": None, "hidden_act": "silu",
        "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "torch_dtype": "bfloat16"})
    _write(folder, "generation_config.json", {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]})
    return folder
