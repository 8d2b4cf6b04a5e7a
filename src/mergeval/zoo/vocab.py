"""The zoo's word-level vocabulary, its tokenizers and their chat templates.

Every token is a whitespace-separated word, so a decoded answer is its tokens joined by single
spaces (`17`, `e d f a c`). The judge's vocabulary is the zoo's (ids unchanged) plus the words
of the judge prompt, with the verdict marker and the answer fences as single tokens.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
NUMBERS = [str(n) for n in range(100)]
LETTERS = list(string.ascii_lowercase)
WORDS = (
    "what is plus reverse answer : ? next after repeat count from to letters . , "
    "the cat dog bird sat ran saw on in mat big small red blue ball box and"
).split()
ZOO_VOCAB = SPECIALS + NUMBERS + LETTERS + WORDS

# A zoo model is asked `<s> {question} answer :` and answers `{answer} </s>`. The template
# takes the last user message (string or OpenAI-style text parts) and ignores system turns.
_LAST_USER = (
    "{%- set ns = namespace(text='') -%}"
    "{%- for m in messages if m['role'] == 'user' -%}"
    "{%- if m['content'] is string -%}{%- set ns.text = m['content'] -%}"
    "{%- else -%}{%- set ns.text = m['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- endfor -%}"
)
ZOO_CHAT_TEMPLATE = _LAST_USER + "<s> {{ ns.text | trim }} answer :"
# The judge reads the rendered judge prompt verbatim and writes `[RESULT] n </s>`.
JUDGE_CHAT_TEMPLATE = _LAST_USER + "<s> {{ ns.text }}"

RESULT = "[RESULT]"
FENCES = ["<<<RESPONSE", "RESPONSE>>>"]


def judge_vocab(texts: list[str]) -> list[str]:
    """The zoo vocabulary plus the verdict marker, the fences and every word of `texts`."""
    vocab = list(ZOO_VOCAB)
    seen = set(vocab)
    for text in [" ".join([RESULT, *FENCES]), *texts]:
        for word in text.split():
            if word not in seen:
                seen.add(word)
                vocab.append(word)
    return vocab


def make_tokenizer(vocab: list[str], chat_template: str) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,  # keep `17 .` and `? answer :` exactly as trained
    )
    tok.chat_template = chat_template
    return tok


class Codec:
    """Fast word <-> id mapping for training (the saved tokenizer gives the same ids)."""

    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.pad, self.bos, self.eos, self.unk = (self.ids[t] for t in SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if self.vocab[i] not in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)
