"""Imports only point downward (architecture: pure < runtime < process; simulation beside runtime)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "relay_bridge"
PURE = ("relay_bridge.audio", "relay_bridge.protocols", "relay_bridge.speech", "relay_bridge.engines",
        "relay_bridge.conversation", "relay_bridge.settings")
RUNTIME = ("relay_bridge.call", "relay_bridge.net", "relay_bridge.server", "relay_bridge.metrics",
           "relay_bridge.admin")
SIM = ("relay_bridge.sim",)
PROCESS = ("relay_bridge.config", "relay_bridge.daemon", "relay_bridge.cli", "relay_bridge.logs", "relay_bridge.demo",
           "relay_bridge.loopback")
IO_MODULES = ("trio", "trio_websocket", "socket", "logging", "asyncio", "threading", "time")

# What each layer may import from the project.
ALLOWED = {
    "pure": PURE,
    "runtime": PURE + RUNTIME,
    "sim": PURE + SIM,
    "process": PURE + RUNTIME + SIM + PROCESS,
}


def layer(module: str) -> str:
    for name, prefixes in (("pure", PURE), ("runtime", RUNTIME), ("sim", SIM), ("process", PROCESS)):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return "package"


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, path))
    return out


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "relay_bridge" and node.level == 0:
            # from relay_bridge import logs (a module) or __version__ (the package's own)
            found += [f"relay_bridge.{a.name}" for a in node.names if not a.name.startswith("__")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name, _ in modules() if layer(name) == "package" and name != "relay_bridge"]
    assert unplaced == []


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_downward(name: str, path: Path) -> None:
    own = layer(name)
    if own == "package":
        return
    allowed = ALLOWED[own]
    for imported in imports(path):
        if imported.startswith("relay_bridge."):
            assert any(imported == p or imported.startswith(p + ".") for p in allowed), \
                f"{name} ({own}) imports {imported}"
        if own == "pure":
            root = imported.split(".")[0]
            assert root not in IO_MODULES, f"pure module {name} imports {imported}"


def test_loading_the_config_imports_no_runtime() -> None:
    """Settings live at the bottom of the tree: a tool that only reads the config needs no event loop."""
    code = ("import sys, relay_bridge.config; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'trio', 'trio_websocket', 'wsproto'}), "
            "sorted(m for m in sys.modules "
            "if m.startswith(('relay_bridge.call', 'relay_bridge.server', 'relay_bridge.net'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"
