"""The documentation: the configuration reference agrees with the shipped TOML and the Config
dataclasses, every relative link in README.md and docs/ resolves, and the README stays short.

That the shipped TOML equals the built-in defaults and lists every key of ``Config`` is checked in
``tests/test_config.py`` (``test_shipped_config_equals_defaults``,
``test_shipped_config_documents_every_key``).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay_bridge.config import load

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "relay-bridge.toml"
DOCS = REPO / "docs"
REFERENCE = DOCS / "configuration.md"
README = REPO / "README.md"
README_MAX_LINES = 230

KEY_LINE = re.compile(r"([a-z_]+) = (.+)")
TABLE_HEADER = re.compile(r"\|\s*Key\s*\|\s*Default\s*\|")
CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`]*`")
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def dotted(section: str, key: str) -> str:
    """``server.listen``; a key of the array of tables ``[[languages]]`` is ``languages[].code``."""
    return f"{section}.{key}"


def shipped_values() -> dict[str, str]:
    """Every key of the shipped TOML, dotted, with its value as written there."""
    keys: dict[str, str] = {}
    section = ""
    for line in SHIPPED.read_text(encoding="utf-8").splitlines():
        if line.startswith("[["):
            section = line.strip("[] ") + "[]"
        elif line.startswith("["):
            section = line.strip("[] ")
        elif m := KEY_LINE.fullmatch(line.rstrip()):
            key = dotted(section, m[1])
            assert key not in keys, f"{key} is set twice in {SHIPPED.name} (one [[languages]] table expected)"
            keys[key] = m[2]
    return keys


def parsed_keys(data: dict[str, Any]) -> dict[str, Any]:
    """The same, from tomllib: to check the line reader above missed nothing."""
    keys: dict[str, Any] = {}
    for section, table in data.items():
        if isinstance(table, list):
            for entry in table:
                keys.update({dotted(section + "[]", k): v for k, v in entry.items()})
        else:
            keys.update({dotted(section, k): v for k, v in table.items()})
    return keys


def config_keys() -> set[str]:
    """Every key of ``relay_bridge.config.Config``, walked from the built-in defaults."""
    cfg = load(None)
    keys: set[str] = set()
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if isinstance(value, tuple):  # an array of tables
            keys |= {dotted(section.name + "[]", f.name) for f in dataclasses.fields(value[0])}
        else:
            keys |= {dotted(section.name, f.name) for f in dataclasses.fields(value)}
    return keys


def documented() -> dict[str, str]:
    """The rows of configuration.md's ``| Key | Default | ...`` tables: dotted key -> default as written."""
    rows: dict[str, str] = {}
    in_table = False
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if TABLE_HEADER.match(line):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key, default = (CODE.fullmatch(c) for c in cells[:2])
        assert key is not None and default is not None, f"configuration.md: key and default in backticks: {line}"
        assert key[1] not in rows, f"configuration.md documents {key[1]} twice"
        rows[key[1]] = default[1]
    return rows


def test_line_reader_matches_tomllib() -> None:
    keys = shipped_values()
    parsed = parsed_keys(tomllib.loads(SHIPPED.read_text(encoding="utf-8")))
    assert set(keys) == set(parsed)
    for key, text in keys.items():
        assert tomllib.loads(f"v = {text}")["v"] == parsed[key], key


def test_reference_documents_every_shipped_key_with_its_default() -> None:
    docs = documented()
    for key, value in shipped_values().items():
        assert key in docs, f"{key} is in {SHIPPED.name} but not in docs/configuration.md"
        assert docs[key] == value, f"{key}: docs/configuration.md says {docs[key]}, {SHIPPED.name} says {value}"


def test_reference_documents_only_real_keys() -> None:
    docs = set(documented())
    assert docs, "no key tables found in docs/configuration.md"
    assert not docs - set(shipped_values()), f"documented but not in {SHIPPED.name}: {docs - set(shipped_values())}"
    assert not docs - config_keys(), f"documented but not in relay_bridge.config.Config: {docs - config_keys()}"


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the file's headings: lowercased, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    for line in prose(path):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m[1].lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            seen[f"{slug}-{n}"] = 1
    return set(seen)


def links(path: Path) -> list[str]:
    return [target for line in prose(path) for target in LINK.findall(CODE_SPAN.sub("", line))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    for target in links(path):
        if SCHEME.match(target):
            continue  # a web address
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.is_relative_to(REPO), f"{path.name}: {target} points outside the repository"
        assert dest.exists(), f"{path.name}: {target} does not exist"
        if anchor:
            assert dest.suffix == ".md", f"{path.name}: {target}: an anchor into a file that is not markdown"
            assert anchor in anchors(dest), f"{path.name}: {target}: no heading with that anchor"


def test_readme_is_short_and_says_how_to_start() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text and "make test" in text


def test_readme_links_every_doc() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if not SCHEME.match(t)}
    for doc in sorted(DOCS.glob("*.md")):
        assert doc.resolve() in linked, f"README.md does not link {doc.relative_to(REPO)}"


def test_operations_lists_every_metric_with_its_labels() -> None:
    """The metrics table in docs/operations.md names exactly the metrics the process exports."""
    from relay_bridge.metrics import Metrics

    exported = set()
    for family in Metrics().registry.collect():
        labels = sorted({k for s in family.samples for k in s.labels if k not in ("le",)})
        name = family.name + ("_total" if family.type == "counter" else "")  # a counter's family drops it
        exported.add(name + (f"{{{','.join(labels)}}}" if labels else ""))
    text = (DOCS / "operations.md").read_text()
    rows = set(re.findall(r"^\| `(relay_bridge_[a-z_]+(?:\{[a-z_,]+\})?)` \|", text, flags=re.MULTILINE))
    assert rows == exported
