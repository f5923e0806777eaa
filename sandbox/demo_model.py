"""A tiny, randomly initialised Llama built locally, for tests and demos (no model hub).

The tokenizer is a byte-level BPE trained on a few built-in sentences, so any text encodes.
The output rows of the special tokens are zeroed: their logits are always 0 while ordinary
tokens get random logits, so greedy decoding practically never ends on its own and
``max_tokens`` bounds every generation (handy for streaming and cancellation tests).
"""

from __future__ import annotations

from pathlib import Path

# One line per message; an assistant message's tool calls follow its content as
# `[call NAME ARGUMENTS-AS-JSON]`, and the names of the tools offered come first, so that the
# model sees everything the gateway scanned (tool schemas are not shown: the context is small).
CHAT_TEMPLATE = (
    "{% if tools %}<s>tools: {{ tools | map(attribute='function') | map(attribute='name') | join(', ') }}"
    "{{ '\n' }}{% endif %}"
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}"
    "{% if m['tool_calls'] is defined %}{% for c in m['tool_calls'] %}"
    " [call {{ c['function']['name'] }} {{ c['function']['arguments'] | tojson }}]"
    "{% endfor %}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_CORPUS = (
    "Hello world, this is llmos.",
    "The quick brown fox jumps over the lazy dog.",
    "An authenticated, audited gateway to sandboxed local language models.",
    "user: What is the capital of France?\nassistant: Paris is the capital of France.",
    "Every request is checked by policy, redacted, and written to a tamper-evident log.",
    "Numbers 0123456789 and punctuation: ; , . ! ? ( ) [ ] { } < > = + - * / \\ | _ # @ & % $",
)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def build_demo_model(dest_dir: Path, seed: int = 0) -> None:
    """Write a tiny Llama (safetensors) and its tokenizer into ``dest_dir``; deterministic per seed."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        for token_id in (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id):
            model.lm_head.weight[token_id].zero_()
    dest_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest_dir, safe_serialization=True)
    fast.save_pretrained(dest_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.demo_model DEST``: build the demo model in its own process, so the
    gateway process never loads torch."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sandbox.demo_model", description=main.__doc__)
    parser.add_argument("dest", type=Path, help="directory to create")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_demo_model(args.dest, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
