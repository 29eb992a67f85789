"""HoloCine's prompt format and its token-span rule, with a word-level and a SentencePiece-style tokenizer.

The expected spans are written out by hand from HoloCine's rule (``WanPrompter.encode_prompt``): each
``[shot cut]`` belongs to the shot before it, and a token to the first span its characters overlap.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from curation.prompt_format import (
    char_spans,
    clean_prompt,
    count_shots,
    parse_prompt,
    render_prompt,
    tokenize_prompt,
    truncate_prompt,
)

PROMPT = render_prompt("a woman in a red coat walks at night.",
                       ["medium shot of the woman", "close up of her face", "wide shot of the street"])


def _fast(core: Tokenizer) -> PreTrainedTokenizerFast:
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per word or bracket: ``[shot cut]`` is four tokens, none straddles a boundary."""
    words = sorted(set(PROMPT.replace("[", " [ ").replace("]", " ] ").replace(".", " . ").split()))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return _fast(core)


# Lines that make BPE merge across the markers' edges where no space separates them, so that
# tokens straddle span boundaries: "shots.[per" (global | shot 0) and "cut]close" (shot 0 | shot 1).
_SP_LINES = ["[global caption] a woman walks. This scene contains 2 shots.[per shot caption] medium shot "
             "of the woman [shot cut]close up of her face"] * 20


@pytest.fixture(scope="module")
def sp_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style: pieces carry a leading ``▁`` for the space before them (Metaspace), as umT5's do."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False,
                                  initial_alphabet=list("▁abcdefghijklmnopqrstuvwxyz[].,0123456789"))
    core.train_from_iterator(_SP_LINES, trainer=trainer)
    return _fast(core)


def span_texts(tokens) -> list[str]:
    """The cleaned prompt's characters covered by the global span and each shot span."""
    offsets = tokens.offsets
    spans = [tokens.spans.global_span, *tokens.spans.shot_spans]
    return [tokens.text[offsets[a][0]:offsets[b - 1][1]].strip() for a, b in spans]


def tokenize(tokenizer, prompt: str, max_length: int = 128):
    return tokenize_prompt(tokenizer, prompt, max_length)


def test_each_shot_cut_marker_belongs_to_the_shot_before_it(word_tokenizer):
    tokens = tokenize(word_tokenizer, PROMPT)
    assert span_texts(tokens) == [
        "[global caption] a woman in a red coat walks at night. This scene contains 3 shots.",
        "[per shot caption] medium shot of the woman [shot cut]",
        "close up of her face [shot cut]",
        "wide shot of the street",
    ]
    # Spans tile the prompt's tokens: the global span starts at the first, the last shot ends before </s>.
    spans = [tokens.spans.global_span, *tokens.spans.shot_spans]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == sum(tokens.attention_mask) - 1
    # [shot cut] is 4 word tokens: giving each marker to the shot after it would make these 10, 9, 9.
    assert [b - a for a, b in tokens.spans.shot_spans] == [14, 9, 5]


def test_tokens_straddling_a_boundary_go_to_the_earlier_span(sp_tokenizer):
    prompt = ("[global caption] a woman walks. This scene contains 2 shots.[per shot caption] medium shot of the woman "
              "[shot cut]close up of her face")
    tokens = tokenize(sp_tokenizer, prompt)
    pieces = sp_tokenizer.convert_ids_to_tokens(tokens.input_ids)
    chars = char_spans(tokens.text)
    # The tokenizer really merged across both boundaries: some piece starts before and ends after each.
    straddlers = [(i, p) for i, (p, (a, b)) in enumerate(zip(pieces, tokens.offsets))
                  if any(a < edge < b for edge in (chars.shot_spans[0][0], chars.shot_spans[0][1]))]
    assert len(straddlers) == 2, straddlers
    (first, _), (second, _) = straddlers
    global_span, (shot0, shot1) = tokens.spans.global_span, tokens.spans.shot_spans
    assert global_span[1] == first + 1, "the piece across 'shots.[per' belongs to the global span"
    assert shot0 == (first + 1, second + 1), "the piece across 'cut]close' belongs to shot 0"
    assert shot1 == (second + 1, sum(tokens.attention_mask) - 1)


def test_sentencepiece_pieces_carry_their_leading_space_into_the_next_span(sp_tokenizer):
    # With spaces, "▁[" of "[per shot caption]" covers " [": its space is the global span's last
    # character and its "[" shot 0's first, so it straddles and goes to the global span.
    prompt = ("[global caption] a woman walks. This scene contains 2 shots. [per shot caption] medium shot "
              "[shot cut] close up")
    tokens = tokenize(sp_tokenizer, prompt)
    pieces = sp_tokenizer.convert_ids_to_tokens(tokens.input_ids)
    (_, g1), (s0, s1), (t0, t1) = tokens.spans.global_span, *tokens.spans.shot_spans
    per_at = tokens.text.index("[per")
    owner = next(i for i, (a, b) in enumerate(tokens.offsets) if a <= per_at < b)
    assert tokens.offsets[owner][0] < per_at, f"expected a piece carrying the space before '[per': {pieces[owner]!r}"
    assert owner == g1 - 1 and s0 == g1
    # The space after "[shot cut]" starts the next shot: "▁close" opens shot 1, "]" closes shot 0.
    assert pieces[s1 - 1].endswith("]") and pieces[t0].startswith("▁")
    assert t1 == sum(tokens.attention_mask) - 1


def test_one_shot_spans_to_the_end_of_the_prompt(word_tokenizer):
    tokens = tokenize(word_tokenizer, render_prompt("a woman walks.", ["wide shot of the street"]))
    assert span_texts(tokens) == ["[global caption] a woman walks. This scene contains 1 shots.",
                                  "[per shot caption] wide shot of the street"]


def test_truncated_to_fewer_shots_keeps_the_kept_shots_spans(word_tokenizer):
    full = tokenize(word_tokenizer, PROMPT)
    short = tokenize(word_tokenizer, truncate_prompt(PROMPT, 2))
    assert short.text.endswith("close up of her face") and count_shots(short.text) == 2
    assert "This scene contains 2 shots." in short.text
    assert short.spans.global_span == full.spans.global_span
    # Shot 0 still owns the marker after it; the last kept shot now ends at the prompt's end.
    assert short.spans.shot_spans[0] == full.spans.shot_spans[0]
    assert short.spans.shot_spans[1] == (full.spans.shot_spans[1][0], full.spans.shot_spans[1][1] - 4)


def test_text_len_truncation_drops_nothing_silently(word_tokenizer):
    full = tokenize(word_tokenizer, PROMPT)
    last_start = full.spans.shot_spans[2][0]
    # Room for one token of the last shot, plus </s>: its span is that one token.
    cut = tokenize_prompt(word_tokenizer, PROMPT, last_start + 2)
    assert cut.spans.shot_spans[2] == (last_start, last_start + 1)
    with pytest.raises(ValueError, match=r"shot\(s\) \[2\] of 3 have no token"):
        tokenize_prompt(word_tokenizer, PROMPT, last_start + 1)


def test_extra_whitespace_is_cleaned_before_search_and_tokenization(word_tokenizer):
    messy = "  " + PROMPT.replace(" ", "  ").replace("[shot cut]", "\n[shot cut]\t") + " \n"
    clean, dirty = tokenize(word_tokenizer, PROMPT), tokenize(word_tokenizer, messy)
    assert dirty.text == PROMPT == clean_prompt(messy)
    assert dirty.input_ids == clean.input_ids and dirty.spans == clean.spans


def test_text_before_the_global_marker_is_in_no_span(word_tokenizer):
    tokens = tokenize(word_tokenizer, "night . " + PROMPT)
    assert tokens.spans.global_span[0] == 2


def test_a_prompt_without_markers_has_no_spans(word_tokenizer):
    tokens = tokenize_prompt(word_tokenizer, "a woman walks at night .", 32)
    assert tokens.spans.global_span is None and tokens.spans.shot_spans == ()


def test_render_parse_round_trip():
    parsed = parse_prompt(PROMPT)
    assert parsed.global_caption == "a woman in a red coat walks at night."
    assert parsed.shot_captions == ("medium shot of the woman", "close up of her face", "wide shot of the street")
    assert parsed.render() == PROMPT
    # A stale count sentence in the global caption is replaced by the true one.
    assert render_prompt("g. This scene contains 5 shots.", ["a", "b"]) == \
        "[global caption] g. This scene contains 2 shots. [per shot caption] a [shot cut] b"
    with pytest.raises(ValueError):
        parse_prompt("[global caption] g only")
