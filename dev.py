#!/usr/bin/env python3
"""Set up the project's virtualenv if needed, then run the demo or the tests.

    python3 dev.py demo [vitrine demo options]   # the main job on the embedded stack
    python3 dev.py test [pytest options]         # the test suite
    python3 dev.py lint                          # ruff (lint + format check) and the import contract
    python3 dev.py setup                         # only (re)install

Only the standard library is used here, so this works on a fresh machine with Python 3.11+.
The venv is reinstalled when pyproject.toml changes (a hash stamp in .venv/).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VITRINE_VENV", ROOT / ".venv"))
STAMP = VENV / ".vitrine-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def setup() -> None:
    """Create .venv and install the project with its dev extras, unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036  this script must say so on an older Python, not crash
        sys.exit(f"vitrine needs Python 3.11+, this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing vitrine and its dependencies (first time: a few minutes, torch is large)", flush=True)
    subprocess.run([BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([BIN / "python", "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "lint", "setup"):
        print(__doc__)
        return 2
    setup()
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup":
        return 0
    if cmd == "demo":
        return subprocess.run([BIN / "vitrine", "demo", *rest], cwd=ROOT).returncode
    if cmd == "lint":
        checks = ([BIN / "ruff", "check", "."], [BIN / "ruff", "format", "--check", "."], [BIN / "lint-imports"])
        failed = [
            c[0].name + " " + c[1] if len(c) > 1 else c[0].name
            for c in checks
            if subprocess.run(c, cwd=ROOT).returncode != 0
        ]
        if failed:
            print(f"error: {', '.join(failed)} failed", file=sys.stderr)
        return 1 if failed else 0
    code = subprocess.run([BIN / "python", "-m", "pytest", *rest], cwd=ROOT).returncode
    if code == 5:  # pytest: no tests collected; a run that tests nothing must not pass
        print("error: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
