from __future__ import annotations

import subprocess
import sys

import tokenstream


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(tokenstream) if not name.startswith("_")}
    modules = {
        name for name, value in vars(tokenstream).items() if type(value).__name__ == "module"
    }
    assert set(tokenstream.__all__) == (public - modules) | {"__version__"}


def test_import_has_no_side_effects() -> None:
    """Importing the package loads no encoding, starts nothing and reads no config."""
    code = (
        "import tokenstream, tokenstream.engine.tokenizer as t, asyncio; "
        "assert t.load_encoding.cache_info().currsize == 0; "
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_package_ships_type_information() -> None:
    from importlib.resources import files

    assert files("tokenstream").joinpath("py.typed").is_file()
