"""Read a sweep file (safe YAML) and turn every failure into a line or field-path message."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.reader import ReaderError
from yaml.scanner import ScannerError

from didray.config import inputs
from didray.config.fields import models_in, nearest
from didray.config.paths import KeyPath, dotted, parse, put
from didray.config.regimes import REGIME_KINDS
from didray.config.schema import Sweep, SweepSearch
from didray.config.search import AXIS_TAGS
from didray.errors import BadInput

MAX_BYTES = 1 << 20  # sweep files are a few kB; this bounds what `validate` reads and parses
MAX_DEPTH = 20  # sections nest 4 deep; deeper YAML would recurse until Python's stack gives out
# The numbers YAML 1.1 (PyYAML) and YAML 1.2 read alike, `_` digit groups as Python reads them;
# PyYAML's other integer forms (`010` octal, `0x10`, `0b10`, `1:30` base 60) are text in YAML
# 1.2 and nothing a researcher means by `steps: 010` (docs/design.md §3.3).
DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9_]*)")
YAML11_PREFIXES = {"0b": "binary", "0x": "hexadecimal", "0": "octal"}


class SweepFileError(BadInput):
    """A sweep file that cannot be used; `errors` holds one `path: reason` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, errors
        super().__init__(f"{source}: " + "; ".join(errors))

    def report(self) -> str:
        lines = "\n".join(f"  {e}" for e in self.errors)
        return f"{self.source}: {len(self.errors)} error(s)\n{lines}"


def shown(value: object) -> str:
    """A value for a message: its repr, shortened (an integer past Python's 4300-digit limit
    for int-to-string conversion has no repr at all)."""
    if isinstance(value, int) and abs(value).bit_length() > 64:
        return f"an integer of about {int(abs(value).bit_length() * math.log10(2)):,} digits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def yaml11_form(text: str) -> str | None:
    """The YAML 1.1 number form of an int or float scalar that YAML 1.2 reads otherwise."""
    digits = text.lstrip("+-")
    if "." in digits:  # a float: only its base-60 form (`1:30.5`) is YAML 1.1's own
        return "base-60" if ":" in digits else None
    if DECIMAL.fullmatch(text):
        return None
    if ":" in digits:
        return "base-60"
    # PyYAML reads any other integer as one of these (`!!int abc` was refused before)
    return next(name for prefix, name in YAML11_PREFIXES.items() if digits.startswith(prefix))


def node_paths(node: yaml.Node, path: tuple = ()) -> Iterator[tuple[int, tuple]]:
    """(id of a value node, its key path) for every node of a document: errors name the field."""
    yield id(node), path
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from node_paths(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from node_paths(item, (*path, i))


class SweepLoader(yaml.SafeLoader):
    """Safe YAML refusing what a sweep file never needs and PyYAML gets wrong or crashes on:
    duplicate keys (YAML keeps the last silently), aliases (cycles, exponential expansion),
    deep nesting, YAML 1.1's number forms (`1:30` is 90, `010` is 8); a scalar its tag cannot
    hold (`!!int abc`, `2024-02-30`) is an error at its line, naming its field, instead of a
    Python exception out of the constructor."""

    depth = 0
    paths: dict[int, tuple] = {}  # noqa: RUF012 (replaced per document, never mutated)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not supported in sweep files",
                                event.start_mark)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        return node

    def scan_flow_scalar_non_spaces(self, double, start_mark):
        try:
            return super().scan_flow_scalar_non_spaces(double, start_mark)
        except ValueError:  # PyYAML hands escapes like "\U0011FFFF" to chr() unchecked
            raise ScannerError("while scanning a quoted scalar", start_mark,
                               "an escape beyond U+10FFFF", self.get_mark()) from None

    def construct_document(self, node):
        self.paths = dict(node_paths(node))
        return super().construct_document(node)

    def refuse(self, node: yaml.Node, problem: str) -> ConstructorError:
        path = dotted(self.paths.get(id(node), ()))
        field = f"{path if path.isprintable() else repr(path)}: " if path else ""
        return ConstructorError(None, None, f"{field}{problem}", node.start_mark)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, IndexError, AttributeError) as err:
            why = f" ({str(err).split(';')[0]})" if isinstance(err, ValueError) else ""
            kind = node.tag.rsplit(":", 1)[-1]
            raise self.refuse(node, f"{shown(node.value)} is not a valid {kind}{why}") from None

    def construct_yaml_number(self, node):
        number = self.construct_yaml_int if node.tag.endswith(":int") else \
            self.construct_yaml_float
        value = number(node)  # a bad literal (`!!int abc`) is refused by construct_object
        if form := yaml11_form(node.value.replace("_", "")):
            raise self.refuse(node, f"{shown(node.value)} is read as {shown(value)} ({form}) by "
                              "YAML 1.1 and as text by YAML 1.2: write the number in decimal, "
                              "or quote the text")
        return value

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)
        if len(mapping) < len(node.value):
            first = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node)  # cached: built once by the call above
                if key in first:
                    raise ConstructorError("first set", first[key], f"duplicate key {shown(key)}",
                                           key_node.start_mark)
                first[key] = key_node.start_mark
        return mapping


for tag in ("int", "float"):
    SweepLoader.add_constructor(f"tag:yaml.org,2002:{tag}", SweepLoader.construct_yaml_number)


def where(text: str | bytes, index: int) -> str:
    newline = "\n" if isinstance(text, str) else b"\n"
    line = text.count(newline, 0, index) + 1
    return f"line {line}, column {index - text.rfind(newline, 0, index)}"


def yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """PyYAML's error at a 1-based line and column, without its `in "<unicode string>"`."""
    if isinstance(err, ReaderError):
        return f"not valid YAML at {where(text, err.position)}: character " \
               f"{err.character:#06x} is not allowed (a binary file?)"
    # Every other error of loading is a MarkedYAMLError with a problem_mark.
    context, at = err.context, err.context_mark
    tail = f" ({context} at {where(text, at.index)})" if context and at else ""
    return f"not valid YAML at {where(text, err.problem_mark.index)}: {err.problem}{tail}"


def read_yaml(path: Path) -> object:
    """The document in `path`; a SweepFileError for anything that is not a small UTF-8 YAML file."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise SweepFileError(str(path), [f"cannot read: {err.strerror or err}"]) from None
    if len(raw) > MAX_BYTES:
        raise SweepFileError(str(path), [f"larger than {MAX_BYTES:,} bytes: not a sweep file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text: byte {raw[err.start]:#04x} at {where(raw, err.start)}"
        raise SweepFileError(str(path), [problem]) from None
    try:
        return yaml.load(text, SweepLoader)  # SweepLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise SweepFileError(str(path), [yaml_problem(err, text)]) from None


def field_path(loc: tuple) -> str:
    """('search', 'beta', 2) -> 'search.beta[2]'; discriminator tags are dropped."""
    kept = []
    for before, part in zip((None, *loc), loc, strict=False):
        if part in REGIME_KINDS and isinstance(before, int):
            continue  # pydantic adds the union member's tag to the path; it says nothing new
        if part in AXIS_TAGS and isinstance(before, str) and "." in before:
            continue  # likewise for a search axis (`search.train.lr`): list or distribution
        # "\e[2J" must not reach a terminal
        kept.append(part if isinstance(part, int) or part.isprintable() else repr(part))
    return dotted(tuple(kept)) or "(top level)"


SHOWS_INPUT = ("greater_than", "greater_than_equal", "less_than_equal", "finite_number",
               "invalid_key", "string_too_long")


# TRL's DPOConfig names of `train` settings that mean what didray's do: accepted for them
# (`trl_names`); the resolved sweep and its manifest carry didray's name.
TRL_ALIASES = {
    "learning_rate": "lr",
    "gradient_accumulation_steps": "grad_accum",
    "max_steps": "steps",
    "max_prompt_length": "max_prompt_tokens",
    "max_completion_length": "max_response_tokens",
    "lr_scheduler_type": "lr_schedule",
}
# TRL names whose meaning differs here: refused, pointing to what is closest.
TRL_NAMES = {
    "per_device_train_batch_size": "`train.batch_size` is pairs per optimizer step over all "
    "workers (not per device)",
    "num_train_epochs": "`train.steps` counts optimizer steps (didray has no epochs)",
    "max_length": "`train.max_prompt_tokens` and `train.max_response_tokens` cap the two parts",
    "rpo_alpha": "didray's losses (train.loss_type) have no NLL term",
    "beta": "the training beta is a search axis, `search.beta`",
}


def trl_names(data: object) -> object:
    """`data` with `train`'s TRL names (TRL_ALIASES) renamed to didray's; a name given both
    ways is left for validation to refuse."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return data
    train = data["train"]
    renamed = {TRL_ALIASES[k] if k in TRL_ALIASES and TRL_ALIASES[k] not in train else k: v
               for k, v in train.items()}
    return {**data, "train": renamed}


def model_at(loc: tuple) -> type[BaseModel] | None:
    """The model an error location points into: ('regimes', 1, 'powerlaw') -> PowerLaw."""
    models: list[type[BaseModel]] = [Sweep]
    for part in loc:
        if isinstance(part, int):
            continue  # a list item: models_in already looked inside the list
        tagged = [m for m in models if part in REGIME_KINDS and m.model_fields.get("kind")
                  and get_args(m.model_fields["kind"].annotation) == (part,)]
        if tagged:
            models = tagged
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [m for f in fields for m in models_in(f.annotation)]
    return models[0] if len(models) == 1 else None


def hint(loc: tuple) -> str:
    """For an unknown field: TRL's name pointed to didray's, or the nearest valid name."""
    name = loc[-1] if loc else None
    if not isinstance(name, str):
        return ""
    if name in TRL_NAMES:
        return f"; TRL's `{name}`: {TRL_NAMES[name]}"
    if name in TRL_ALIASES:
        both = loc[:-1] == ("train",)  # elsewhere, TRL's name is in the wrong section
        return (f"; TRL's `{name}` is `train.{TRL_ALIASES[name]}`"
                + (", which is given too" if both else " here"))
    model = model_at(loc[:-1])
    return nearest(name, list(model.model_fields)) if model else ""


def reason(error: dict) -> str:
    """Pydantic's message, phrased as a rule where it has a plain one."""
    # Limits as the field descriptions state them: 100,000 and 16, not 100000 and 16.0.
    ctx = {k: f"{v:,}" if isinstance(v, int) else f"{v:,g}" if isinstance(v, float) else v
           for k, v in (error.get("ctx") or {}).items()}
    rules = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than_equal": "must be <= {le}",
        "finite_number": "must be a finite number",
        "invalid_key": "keys must be text (field names)",
        "extra_forbidden": "unknown field (not in the schema)",
        "missing": "required field is missing",
        "too_short": "must have at least {min_length} item(s)",
        "string_too_long": "must be at most {max_length} characters",
        "string_pattern_mismatch": "must match {pattern}",
    }
    rule = rules.get(error["type"])
    text = rule.format(**ctx) if rule else error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        text += hint(error["loc"])
    return f"{text} (got {shown(error['input'])})" if error["type"] in SHOWS_INPUT else text


def visible(text: str) -> str:
    """`text` with what a terminal would act on (`\\e[2J`, NUL, line separators) escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def typed(override: str) -> str:
    """An override as a message names it: as typed, but escaped (`visible`) and a 5000-digit
    value shortened."""
    text = visible(override)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def blame(line_path: str, overrides: Sequence[str]) -> str:
    """The error's field path, or the override that set it (the last one wins, as they are
    applied): a bad value typed on the command line is named as typed."""
    for text in reversed(overrides):
        key = dotted(parse(text.partition("=")[0]))
        if line_path == key or line_path.startswith((f"{key}.", f"{key}[")):
            return typed(text)
    return line_path


def parse_sweep(data: object, source: str = "<sweep>", overrides: Sequence[str] = ()) -> Sweep:
    try:
        return Sweep.model_validate(trl_names(data))
    except ValidationError as err:
        lines = [f"{blame(field_path(e['loc']), overrides)}: {reason(e)}" for e in err.errors()]
        raise SweepFileError(source, lines) from None


def override_value(text: str) -> object:
    """An override's value, read as YAML by the loader that reads the file (`[0,1]` is a list,
    `${x}` text: a sweep file has no interpolation)."""
    try:
        return yaml.load(text, SweepLoader)  # SweepLoader is a SafeLoader
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        # A value the loader refused says why itself; YAML it cannot parse is named as such.
        raise ValueError(problem if isinstance(err, ConstructorError)
                         else f"not a YAML value ({problem})") from None


# Search axes whose value is a list of values; an override may give one value for a
# one-value axis (`search.beta=0.1`).
LIST_AXES = ("beta", "seed", "regime")


def override_target(key: str, value: object) -> tuple[KeyPath, object]:
    """Where an override goes and what it sets. A search axis over a setting is one key of
    `search` named by the setting's dotted path, so `search.train.lr=[...]` sets the key
    `train.lr` there (as the file writes it); a single value for an axis is a one-value
    list. `train.learning_rate=...` (TRL's name, TRL_ALIASES) sets `train.lr`."""
    path = parse(key)
    if len(path) == 2 and path[0] == "train" and path[1] in TRL_ALIASES:
        return ("train", TRL_ALIASES[path[1]]), value  # TRL's name overrides didray's setting
    if path[:1] != ("search",) or len(path) < 2:
        return path, value
    if len(path) > 2 and path[1] in SweepSearch.sections:
        path = ("search", dotted(path[1:]))
    axis = len(path) == 2 and (path[1] in LIST_AXES or "." in str(path[1]))
    return path, [value] if axis and not isinstance(value, list | dict) else value


def apply_overrides(data: dict, overrides: Sequence[str], source: str) -> dict:
    """`data` with each `key.path=value` set, in order: list items as `regimes[0].tau` or
    `regimes.0.tau`, a missing section created, a list value replacing the whole list, search
    axes as `override_target` places them."""
    for text in overrides:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise SweepFileError(source, [f"{typed(text)}: an override is key.path=value"])
        try:
            data = put(data, *override_target(key, override_value(value)))
        except ValueError as err:  # a PathError or a bad value
            raise SweepFileError(source, [f"{typed(text)}: {visible(str(err))}"]) from None
    return data


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Load, apply command-line overrides (`train.lr=1e-4`) and validate; every failure is a
    SweepFileError naming the file and the field, line or override. Local input paths are read
    from the file's directory, an override's from the working directory (didray.config.inputs),
    and one that does not exist is refused here."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SweepFileError(str(path), ["top level must be a mapping of sections"])
    data = inputs.read_from(data, path.parent)
    if overrides:
        data = inputs.read_from(apply_overrides(data, overrides, str(path)), Path("."))
    sweep = parse_sweep(data, str(path), overrides)
    if missing := inputs.missing(sweep, path.parent):
        raise SweepFileError(str(path), [f"{blame(field, overrides)}: {problem}"
                                         for field, problem in missing])
    return sweep
