"""``brownie run`` from a checkout whose path holds a dot (``~/src/edgeledger.v2``).

Brownie 1.22 imports a script by turning its absolute path into a dotted module name
(``/home/me/src/edgeledger.v2/scripts/deploy.py`` becomes ``home.me.src.edgeledger.v2.scripts.deploy``)
with ``/`` on ``sys.path``; a dot inside a folder name then splits it into modules that do not exist
(``No module named 'home.me.src.edgeledger'``). This runner installs, before brownie's own command line
runs, an import finder that answers exactly that dotted name with the script file and the names on the
way to it (``home.me.src.edgeledger``, ...) with empty namespace packages, for names no real package
answers. Nothing else is imported differently, and in a dot-free path it never takes part.

    python -m edgeledger.chain.brownie_run run scripts/deploy.py --network edgeledger-rpc
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType


def brownie_module_name(script: Path) -> str:
    """The module name brownie imports ``script`` under (``brownie.project.scripts._import_from_path``)."""
    resolved = script.resolve()
    return f"{'.'.join(resolved.parts[1:-1])}.{resolved.stem}"


class DottedPathFinder(MetaPathFinder):
    """Finds ``script`` under brownie's dotted name, and the packages on the way to it."""

    def __init__(self, script: Path) -> None:
        self.script = script.resolve()
        self.name = brownie_module_name(script)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == self.name:
            return importlib.util.spec_from_file_location(fullname, self.script)
        if not self.name.startswith(fullname + "."):
            return None
        if importlib.machinery.PathFinder.find_spec(fullname, path) is not None:
            return None  # a real package (or folder) of that name: let the normal import find it
        spec = ModuleSpec(fullname, None, is_package=True)
        spec.submodule_search_locations = []
        return spec


def main(argv: Sequence[str]) -> int:
    """Runs brownie's command line with ``argv``; for ``run SCRIPT`` the finder knows SCRIPT first."""
    if len(argv) >= 2 and argv[0] == "run":
        script = Path(argv[1]).with_suffix(".py")
        if script.exists() and "." in "".join(script.resolve().parts[1:-1]):
            sys.meta_path.insert(0, DottedPathFinder(script))
    from brownie._cli.__main__ import main as brownie_main

    sys.argv = ["brownie", *argv]
    brownie_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
