from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tokenstream


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("name", tokenstream.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(tokenstream, name)
    if name != "__version__":
        assert getattr(value, "__name__", name) == name  # the object itself, not a module
        assert not isinstance(value, ModuleType)


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(tokenstream) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(tokenstream, name), ModuleType)}
    assert set(tokenstream.__all__) == (public - modules) | {"__version__"}


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'pace'"):
        _ = tokenstream.pace


def test_the_names_type_checkers_see_are_the_names_resolved_at_run_time() -> None:
    """The ``if TYPE_CHECKING:`` imports and the lazy name -> module map say the same."""
    tree = ast.parse(Path(tokenstream.__file__).read_text(encoding="utf-8"))
    typing_block = next(node for node in tree.body if isinstance(node, ast.If))
    imported = {
        alias.name: node.module
        for node in typing_block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == tokenstream._MODULE_OF
    assert set(imported) == set(tokenstream.__all__) - {"__version__"}


def test_import_is_light() -> None:
    """``import tokenstream`` imports no sub-package, so neither aiohttp nor tiktoken;
    using a name imports what it needs."""
    heavy = "sorted({'aiohttp', 'tiktoken'} & set(sys.modules))"
    assert _run(f"import sys, tokenstream; print({heavy})") == "[]"
    assert _run(f"import sys, tokenstream; tokenstream.create_app; print({heavy})") == (
        "['aiohttp', 'tiktoken']"
    )


def test_import_has_no_side_effects() -> None:
    """Importing the package loads no encoding, starts nothing and reads no config."""
    code = (
        "import tokenstream, tokenstream.engine.tokenizer as t, asyncio; "
        "assert t.load_encoding.cache_info().currsize == 0; "
        "print('ok')"
    )
    assert _run(code) == "ok"


def test_package_ships_type_information() -> None:
    from importlib.resources import files

    assert files("tokenstream").joinpath("py.typed").is_file()
