"""Types: the public modules type-check, and users' type checkers see them.

``blizzard`` ships ``py.typed`` (PEP 561), so a type checker reading an
application that uses Blizzard checks its calls against Blizzard's
annotations instead of treating every name as ``Any``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_the_public_modules_have_no_type_errors():
    """`make lint` runs the same check: pyproject's [tool.mypy] lists the files
    (pmem, structures, the Store, the remote client)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert {"blizzard/pmem", "blizzard/structures", "blizzard/cluster/store.py",
            "blizzard/cluster/client.py"} <= set(config["files"])
    result = mypy(cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_a_users_type_checker_reads_blizzards_annotations(tmp_path):
    """Blizzard installed as a package (not as source on the path): without
    py.typed mypy would skip it ("missing library stubs or py.typed marker")
    and see Any; with it, a wrong argument is caught."""
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    site = next(env.glob("lib/python*/site-packages"))
    (site / "blizzard").symlink_to(ROOT / "blizzard", target_is_directory=True)
    (tmp_path / "app.py").write_text(
        "from blizzard.pmem import Pool\n"
        "from blizzard.structures import PHashMap\n"
        "pool = Pool.create('/dev/shm/app.pool', '64M')\n"
        "users = PHashMap(pool, 'users')\n"
        "reveal_type(users.pool)\n")
    result = mypy("--python-executable", str(env / "bin" / "python"), "--no-incremental",
                  "app.py", cwd=tmp_path)
    out = result.stdout
    assert "py.typed" not in out and "import-untyped" not in out, out
    assert 'Argument 2 to "create" of "Pool" has incompatible type "str"' in out, out
    assert 'Revealed type is "blizzard.pmem.pool.Pool"' in out, out


def test_py_typed_is_packaged():
    assert (ROOT / "blizzard" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in data["package-data"]["blizzard"]
