"""The VLM's answer: a JSON schema that both constrains decoding and validates, plus typed objects.

One schema does both jobs on purpose: an answer produced under constrained decoding with this
schema is valid by construction, and any other answer is judged by exactly the same rules.

Rules the schema expresses (so ``jsonschema`` enforces them, not hand-written checks):
- exactly the scene's number of shots (``minItems == maxItems``);
- no empty text (the first character must be visible), every text under its length cap;
- characters are ``[character1]`` … ``[characterN]`` numbered from 1, and a shot (its list or its
  text) may only use tags defined in ``characters``: the schema is an ``anyOf`` over the number of
  defined characters, each branch allowing only its own tags;
- text is printable ASCII without ``"``, ``\\``, ``[`` or ``]`` except inside a defined tag, so an
  answer can never smuggle HoloCine's ``[shot cut]`` markers, line breaks or escapes into a prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, field_validator

# Printable ASCII minus '"', '\\', '[' and ']' (0x22, 0x5B-0x5D); the first character also not a space.
_TEXT_CHAR = r"[ !#-Z^-~]"
_FIRST_CHAR = r"[!#-Z^-~]"
_MAX_TAGS = 9  # keeps a tag one digit, so a branch's tags are the regex class [1-n]


@dataclass(frozen=True)
class Limits:
    """Length caps (characters) and the most characters a scene may define.

    The defaults keep a six-shot HoloCine prompt near 2,000 characters, about the 512 text-encoder
    tokens HoloCine reads before it truncates.
    """

    max_characters: int = 4
    global_chars: int = 400
    shot_chars: int = 200
    camera_chars: int = 48
    description_chars: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.max_characters <= _MAX_TAGS:
            raise ValueError(f"max_characters must be in [0, {_MAX_TAGS}]")


def character_tag(index: int) -> str:
    """The tag of the ``index``-th character, counting from 1."""
    return f"[character{index}]"


def _at_most(unit: str, count: int, chunk: int = 16) -> str:
    """Regex for 0..count repetitions of ``unit``, written as chunks of ``chunk``.

    ``unit{0,400}`` is the plain form, but xgrammar fails to compile repetitions above roughly a
    hundred ("per_rule_fsm_hashes" check); nested repetitions of 16 compile in a fraction of a
    second and accept exactly the same lengths.
    """
    full, rest = divmod(count, chunk)
    if full == 0:
        return f"{unit}{{0,{rest}}}"
    shorter = f"(?:{unit}{{{chunk}}}){{0,{full - 1}}}{unit}{{0,{chunk - 1}}}"  # < full * chunk
    longest = f"(?:{unit}{{{chunk}}}){{{full}}}{unit}{{0,{rest}}}"  # full * chunk .. count
    return f"(?:{shorter}|{longest})"


def _text(max_units: int, num_tags: int = 0) -> dict[str, Any]:
    # The cap lives in the regex: xgrammar ignores maxLength next to a pattern, and one rule for
    # both decoding and validation is the point. A tag counts as one unit of the cap.
    unit, first = _TEXT_CHAR, _FIRST_CHAR
    note = "printable ASCII without quotes, backslashes or square brackets"
    if num_tags:
        tag = rf"\[character[1-{num_tags}]\]"
        unit, first = f"(?:{unit}|{tag})", f"(?:{first}|{tag})"
        note += f", except the tags [character1] to [character{num_tags}] (each counts as one character)"
    return {
        "type": "string",
        "pattern": rf"^{first}{_at_most(unit, max_units - 1)}$",
        "description": f"non-empty, starts with a visible character, at most {max_units} characters, {note}",
    }


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _branch(num_shots: int, num_tags: int, limits: Limits) -> dict[str, Any]:
    tags = [character_tag(i) for i in range(1, num_tags + 1)]
    shot_tags: dict[str, Any] = {"type": "array", "maxItems": num_tags}
    if tags:
        shot_tags["items"] = {"enum": tags}
    shot = _object(
        {
            "caption": _text(limits.shot_chars, num_tags),
            "camera": _text(limits.camera_chars),
            "characters": shot_tags,
        }
    )
    return _object(
        {
            "characters": _object({tag: _text(limits.description_chars) for tag in tags}),
            "global_caption": _text(limits.global_chars, num_tags),
            "shots": {"type": "array", "minItems": num_shots, "maxItems": num_shots, "items": shot},
        }
    )


def caption_schema(num_shots: int, limits: Limits) -> dict[str, Any]:
    """JSON schema of a scene caption with exactly ``num_shots`` shots."""
    if num_shots < 1:
        raise ValueError("a scene has at least one shot")
    return {"anyOf": [_branch(num_shots, n, limits) for n in range(limits.max_characters + 1)]}


def shot_draft_schema(limits: Limits) -> dict[str, Any]:
    """JSON schema of one shot described alone (two-pass strategy): no tags exist yet."""
    return _object({"caption": _text(limits.shot_chars), "camera": _text(limits.camera_chars)})


def max_answer_chars(num_shots: int, limits: Limits) -> int:
    """An upper bound on the length of a compact answer under :func:`caption_schema`.

    A grammar-constrained answer is ASCII and every token spells at least one character, so this
    also bounds its token count: generation capped here can always finish the JSON.
    """
    tag_item = len(json.dumps(character_tag(_MAX_TAGS))) + 2
    per_character = tag_item + limits.description_chars + 4
    per_shot = 64 + limits.shot_chars + limits.camera_chars + limits.max_characters * tag_item
    return 96 + limits.max_characters * per_character + limits.global_chars + num_shots * per_shot


def max_draft_chars(limits: Limits) -> int:
    """Upper bound on a compact answer under :func:`shot_draft_schema`."""
    return 48 + limits.shot_chars + limits.camera_chars


class CaptionError(ValueError):
    """An answer that does not parse or validate; the message is fit to send back to the VLM."""


class ShotCaption(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    caption: str
    camera: str
    characters: tuple[str, ...] = ()

    @field_validator("characters")
    @classmethod
    def _unique(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        # Grammars cannot express uniqueItems; a repeated tag carries no information, so drop it.
        return tuple(dict.fromkeys(tags))


class Caption(BaseModel):
    """A validated scene caption: characters, global caption, one entry per shot."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    characters: dict[str, str]
    global_caption: str
    shots: tuple[ShotCaption, ...]


class ShotDraft(BaseModel):
    """One shot described on its own (two-pass strategy, first pass)."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    caption: str
    camera: str


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaptionError(f"the answer is not valid JSON: {exc}") from None


def _describe(error: jsonschema.ValidationError) -> str:
    # A bare regex mismatch means little to a VLM asked to try again; the rule in words does.
    rule = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f"{error.json_path}: {error.message}" + (f" (rule: {rule})" if rule else "")


def _check(instance: Any, schema: dict[str, Any]) -> None:
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda e: (list(e.absolute_path), e.message),
    )
    if errors:
        lines = [_describe(e) for e in errors[:8]]
        raise CaptionError("the answer does not match the schema:\n" + "\n".join(lines))


def parse_caption(text: str, num_shots: int, limits: Limits) -> Caption:
    """Parse and validate a VLM answer for a scene of ``num_shots`` shots.

    Validates against the schema branch for the number of characters the answer defines, which
    gives the same verdict as the whole ``anyOf`` but names the precise rule that failed.
    """
    data = _load_json(text)
    defined = data.get("characters") if isinstance(data, dict) else None
    num_tags = len(defined) if isinstance(defined, dict) else 0
    if num_tags > limits.max_characters:
        raise CaptionError(f"the answer defines {num_tags} characters; at most {limits.max_characters} are allowed")
    if num_shots < 1:
        raise ValueError("a scene has at least one shot")
    _check(data, _branch(num_shots, num_tags, limits))
    return Caption.model_validate(data)


def parse_shot_draft(text: str, limits: Limits) -> ShotDraft:
    """Parse and validate a first-pass (single shot) answer."""
    data = _load_json(text)
    _check(data, shot_draft_schema(limits))
    return ShotDraft.model_validate(data)
