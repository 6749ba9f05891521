"""Property: `didray validate` on any mutation of a sweep file, or with any `key.path=value`
overrides, exits 0 or 2 and never raises.

Documents are the shipped sweeps/*.yaml, mutated through their fields (drop, add, swap types,
and out-of-bounds numbers taken from the schema's own JSON schema), then as YAML text (tags,
duplicate keys, stray bytes, deep nesting, huge integers, truncation). A mutation that must be
refused carries what its error has to say, down to the line and column.
"""

import contextlib
import copy
import io
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

from didray.cli import main
from didray.config.load import load_sweep, parse_sweep
from didray.config.schema import Sweep

ROOT = Path(__file__).parents[2]
SWEEPS = [yaml.safe_load(p.read_text()) for p in sorted(ROOT.glob("sweeps/*.yaml"))]
SCHEMA = Sweep.model_json_schema()
FIELDS = sorted({name for d in SCHEMA["$defs"].values() for name in d["properties"]}
                | set(SCHEMA["properties"]))
KEY_LINE = re.compile(r"^(?P<lead> *(?:- )*)(?P<key>[A-Za-z_][\w.-]*): (?P<value>.+)$")

# No control characters or line separators: every scalar stays on its own line of the dump.
words = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
scalars = st.one_of(st.booleans(), st.none(), st.integers(), st.floats(), words)
shallow = st.one_of(scalars, st.lists(scalars, max_size=3),
                    st.dictionaries(words, scalars, max_size=3))
values = st.one_of(shallow, st.lists(shallow, max_size=2))  # 3 levels at most: far from 20
keys = st.one_of(st.sampled_from(FIELDS), words)


class NoAliases(yaml.SafeDumper):
    """Values drawn once and placed twice are written twice, not as aliases (refused)."""

    def ignore_aliases(self, data):
        return True


def positions(node, path=()):
    """Every mapping key and list index in a document, outermost first."""
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in items:
        yield (*path, key)
        yield from positions(child, (*path, key))


def at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def dotted(path) -> str:
    """('regimes', 1, 'tau') -> 'regimes[1].tau', as the error report spells it."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


def definition(ref: str) -> dict:
    return SCHEMA["$defs"][ref.rsplit("/", 1)[-1]]


def numbers(node: dict, schema: dict, path=()):
    """(path, rule) of every number the schema allows under `node`, following the document's
    sections, lists and regime kinds (model.toy is being replaced in another branch)."""
    for name, prop in schema["properties"].items():
        child = node.get(name)
        for rule in prop.get("anyOf", [prop]):
            if rule.get("type") in ("integer", "number"):
                yield (*path, name), rule
            elif "$ref" in rule and isinstance(child, dict) and name != "model":
                yield from numbers(child, definition(rule["$ref"]), (*path, name))
            elif rule.get("type") == "array" and isinstance(child, list):
                items = rule["items"]
                for i, item in enumerate(child):
                    if items.get("type") in ("integer", "number"):
                        yield (*path, name, i), items
                    elif isinstance(item, dict) and isinstance(item.get("kind"), str):
                        ref = items.get("discriminator", {}).get("mapping", {}).get(item["kind"])
                        if ref:
                            yield from numbers(item, definition(ref), (*path, name, i))


def out_of_bounds(rule: dict) -> list:
    """Values no number field may take: every one is bounded below by 0 (test_schema)."""
    bad = [True, False, math.inf, -math.inf, math.nan, -1]
    if "maximum" in rule:
        bad.append(rule["maximum"] + 1)
    if rule["type"] == "integer":
        bad.append(1.5)
    return bad


def within(rule: dict):
    """Numbers a field takes: in its bounds (cross-field rules may still refuse them)."""
    open_low = "exclusiveMinimum" in rule
    low, high = rule.get("minimum", rule.get("exclusiveMinimum")), rule.get("maximum", 10**6)
    if rule["type"] == "integer":
        return st.integers(low + open_low, high)
    return st.floats(low, high, exclude_min=open_low)


def mutate_fields(doc: dict, data) -> list[str]:
    """Drop, replace and add values anywhere, set numbers within their bounds; maybe one number
    out of its bounds, last, whose field the error must then name."""
    for _ in range(data.draw(st.integers(0, 3), label="field mutations")):
        spots = list(positions(doc))
        op = data.draw(st.sampled_from(["drop", "set", "add", "number", "number"]))
        if op == "number":
            path, rule = data.draw(st.sampled_from(list(numbers(doc, SCHEMA))))
            at(doc, path[:-1])[path[-1]] = data.draw(within(rule))
        elif op == "add":
            maps = [()] + [p for p in spots if isinstance(at(doc, p), dict)]
            at(doc, data.draw(st.sampled_from(maps)))[data.draw(keys)] = data.draw(values)
        elif spots:
            path = data.draw(st.sampled_from(spots))
            if op == "drop":
                del at(doc, path[:-1])[path[-1]]
            else:
                at(doc, path[:-1])[path[-1]] = data.draw(values)
    targets = list(numbers(doc, SCHEMA))
    if not targets or not data.draw(st.booleans(), label="bad number"):
        return []
    path, rule = data.draw(st.sampled_from(targets))
    at(doc, path[:-1])[path[-1]] = data.draw(st.sampled_from(out_of_bounds(rule)))
    return [f"\n  {dotted(path)}: "]


NASTY = [  # (scalar, what the error says), written after `key: `
    ("!!int abc", "'abc' is not a valid int"),
    ("!!bool maybe", "'maybe' is not a valid bool"),
    ("!!float ''", "'' is not a valid float"),
    ("!!timestamp x", "'x' is not a valid timestamp"),
    ("2024-02-30", "'2024-02-30' is not a valid timestamp (day is out of range for month)"),
    ("!!python/name:os.system ''", "could not determine a constructor for the tag"),
    ("*nowhere", "aliases (*name) are not supported in sweep files"),
    ("9" * 4301, "is not a valid int (Exceeds the limit (4300 digits)"),
]


def mutate_text(raw: bytes, data) -> tuple[bytes, list[str]]:
    """One change to the file's bytes, and what the error must then contain (nothing when the
    change may leave a valid file)."""
    lines = raw.decode().split("\n")
    keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]
    kind = data.draw(st.sampled_from(["none", "truncate", "insert", "scalar", "nesting",
                                      "duplicate", "not-utf8", "control", "utf16"]))
    offset = data.draw(st.integers(0, len(raw)), label="offset")
    line, column = raw.count(b"\n", 0, offset) + 1, offset - raw.rfind(b"\n", 0, offset)
    if kind == "truncate":
        return raw[:offset], []
    if kind == "insert":
        return raw[:offset] + data.draw(st.binary(min_size=1, max_size=8)) + raw[offset:], []
    if kind == "not-utf8":
        byte = data.draw(st.integers(0x80, 0xFF))
        return raw[:offset] + bytes([byte]) + raw[offset:], [
            f"not UTF-8 text: byte {byte:#04x} at line {line}, column {column}\n"]
    if kind == "control":
        char = data.draw(st.sampled_from("\x00\x01\x08\x0b\x0c\x1b\x7f"))
        return raw[:offset] + char.encode() + raw[offset:], [
            f"not valid YAML at line {line}, column {column}: character {ord(char):#06x}"]
    if kind == "utf16":
        return raw.decode().encode("utf-16"), ["not UTF-8 text: byte 0xff at line 1, column 1\n"]
    if kind == "none" or not keyed:
        return raw, []
    i = data.draw(st.sampled_from(keyed))
    lead, key, value = KEY_LINE.match(lines[i]).groups()
    column = len(lead) + len(key) + 3
    if kind == "scalar":
        scalar, says = data.draw(st.sampled_from(NASTY))
        lines[i] = f"{lead}{key}: {scalar}"
        expected = [f"not valid YAML at line {i + 1}, column {column}: ", says]
    elif kind == "nesting":
        depth = data.draw(st.integers(20, 3000))
        lines[i] = f"{lead}{key}: {'[' * depth}{']' * depth}"
        expected = [f"not valid YAML at line {i + 1}, column ", "nested deeper than 20 levels"]
    else:  # a second `key:` in the same mapping (after "- ", the mapping's first key)
        lines.insert(i + 1, f"{' ' * len(lead)}{key}: {value}")
        expected = [f"not valid YAML at line {i + 2}, column {len(lead) + 1}: duplicate key ",
                    f"(first set at line {i + 1}, column {len(lead) + 1})"]
    return "\n".join(lines).encode(), expected


def validate(path: Path, overrides: list[str] = ()) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path), *overrides])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "sweep.yaml"


# No explain phase: it reruns a failure hundreds of times (minutes) for little more insight.
@settings(max_examples=1000, deadline=None, phases=set(Phase) - {Phase.explain})
@given(base=st.sampled_from(SWEEPS), data=st.data())
def test_validate_exits_0_or_2_and_names_the_problem(sweep_file, base, data):
    doc = copy.deepcopy(base)
    field_errors = mutate_fields(doc, data)
    dumped = yaml.dump(doc, Dumper=NoAliases, sort_keys=False, width=math.inf).encode()
    raw, text_errors = mutate_text(dumped, data)
    sweep_file.write_bytes(raw)

    code, out, err = validate(sweep_file)

    assert code in (0, 2)
    event(f"exit {code}")  # pytest --hypothesis-show-statistics: how many were accepted
    # YAML errors come first; the field's error is certain only when the text is untouched.
    expected = text_errors or (field_errors if raw == dumped else [])
    if code == 0:
        assert expected == [] and err == ""
        assert out.startswith(f"{sweep_file}: valid sweep")
        sweep = load_sweep(sweep_file)  # what was accepted reads back the same from its dump
        assert parse_sweep(sweep.model_dump(mode="json", exclude_unset=True)) == sweep
        return
    head, *lines = err.encode().decode().splitlines()  # encodable: no lone surrogates
    assert head == f"{sweep_file}: {len(lines)} error(s)"  # one paragraph, a line per error
    assert lines and all(line.startswith("  ") and line.strip() for line in lines)
    event("error named" if expected else "error unchecked")
    for needle in expected:
        assert needle in err, (needle, err)


# Override values: what a shell passes, control characters and extreme numbers included, and
# the YAML 1.1 forms and bad tags whose error is certain: (text, what the error says).
KEY_PATHS = sorted({dotted(path) for doc in SWEEPS for path in positions(doc)})
CERTAIN = [*NASTY[:-2], ("1:30", "'1:30' is read as 90 (base-60) by YAML 1.1"),
           ("010", "'010' is read as 8 (octal)"), ("-0x10", "'-0x10' is read as -16 (hex"),
           ("0b11", "'0b11' is read as 3 (binary)"), ("1:0.5", "'1:0.5' is read as 60.5"),
           ("9" * 5000, "is not a valid int (Exceeds the limit (4300 digits)")]
EXTREME = ["1e308", "-1e308", "1.0e+309", "1e-300", "4.9e-324", "-0.0", ".nan", "-.inf",
           str(2**63), str(-(2**64)), "0x" + "f" * 600, "[1e308, 1e-300]"]
raw_text = st.text(st.characters(max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
                   max_size=12)  # C0 and C1 controls, NUL, line separators, escapes
override_values = st.one_of(
    st.sampled_from(EXTREME), raw_text, st.integers().map(str), st.floats().map(repr),
    values.map(lambda v: yaml.dump(v, Dumper=NoAliases, default_flow_style=True,
                                   width=math.inf).removesuffix("\n...\n").strip()))
override_keys = st.one_of(st.sampled_from(KEY_PATHS), st.sampled_from(FIELDS), raw_text)


def printable(text: str) -> bool:
    """No character a terminal would act on (str.splitlines would split at some): a message
    shows them escaped."""
    return all(line.isprintable() for line in text.split("\n"))


@settings(max_examples=300, deadline=None, phases=set(Phase) - {Phase.explain})
@given(base=st.sampled_from(SWEEPS), data=st.data())
def test_overrides_exit_0_or_2_and_name_the_problem(sweep_file, base, data):
    sweep_file.write_text(yaml.dump(base, Dumper=NoAliases, sort_keys=False, width=math.inf))
    overrides = [f"{data.draw(override_keys)}={data.draw(override_values)}"
                 for _ in range(data.draw(st.integers(0, 3), label="overrides"))]
    expected = []
    if data.draw(st.booleans(), label="certain error first"):
        value, says = data.draw(st.sampled_from(CERTAIN))
        overrides.insert(0, f"{data.draw(st.sampled_from(KEY_PATHS))}={value}")
        expected = [says]

    code, out, err = validate(sweep_file, overrides)

    assert code in (0, 2)
    event(f"exit {code}")
    if code == 0:
        assert expected == [] and err == ""
        return
    assert printable(err), err
    if any(o.startswith("-") for o in overrides) and err.startswith("didray: "):
        assert err.count("\n") == 1  # argparse took it for an option: a usage error's line
        return
    head, *lines = err.splitlines()
    assert head == f"{sweep_file}: {len(lines)} error(s)"
    assert lines and all(line.startswith("  ") and line.strip() for line in lines)
    for needle in expected:
        assert needle in err, (needle, err)
