"""Locally built tokenizers and models with a chat template, several EOS ids and a BOS that the
tokenizer adds itself: what hub instruct and base models look like, without the hub."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tempo.models.tokenizer import CHARACTERS

CHAT_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>", "<think>")

# A Qwen-style template: system turn (if any), the user turn, then the assistant's opening.
# Qwen3's `enable_thinking=False` pre-fills an empty think block, as its real template does.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def char_tokenizer(
    *, chat_template: bool = False, adds_bos: bool = False, pad: bool = True, eos: bool = True
) -> PreTrainedTokenizerFast:
    """One token per character plus special tokens matched whole (`<|im_end|>` is one id).

    `adds_bos`: a post-processor that prepends `<bos>` (as Llama's tokenizer does);
    `chat_template`: the template above; `pad` / `eos` = False leave those tokens unset.
    """
    vocab = {tok: i for i, tok in enumerate([*CHAT_SPECIALS, *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    if adds_bos:
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        unk_token="<unk>",
        pad_token="<pad>" if pad else None,
        eos_token="<eos>" if eos else None,
        padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<think>"]})
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def save_chat_model(
    folder: Path,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    eos_ids: list[int] | None = None,
    context: int = 256,
    weights: bool = True,
    seed: int = 0,
) -> Path:
    """A 2-layer Llama with `tokenizer` (default: chat template, `<eos>` + `<|im_end|>` as
    generation EOS ids) saved as a hub model directory; `weights=False` writes the config and
    tokenizer only (anything that loads the weights then fails).

    Llama, not Qwen2: transformers 5 loads any tokenizer saved beside a Qwen2 config as its own
    byte-level Qwen2Tokenizer, which drops this character vocabulary's whitespace."""
    import torch

    tok = tokenizer or char_tokenizer(chat_template=True)
    config = LlamaConfig(
        vocab_size=-(-len(tok) // 64) * 64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    ids = (
        eos_ids
        if eos_ids is not None
        else [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    )
    if weights:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(eos_token_id=ids, pad_token_id=tok.pad_token_id)
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
        GenerationConfig(eos_token_id=ids).save_pretrained(folder)
    return folder
