"""Every Python block of the README runs as a user would copy it.

Blocks run in the README's order, each in a fresh process; a TOML block whose
first line is ``# NAME.toml`` is written as that file, and the ``blizzard``
lines of shell blocks are run as commands. Only paths (``/dev/shm/`` becomes a
temporary directory) and the TOML's ports (other clusters run on this
machine) are substituted. A block reading ``sys.argv[1]`` is a cluster node:
it runs as three processes, 1, 2 and 3, each let go (Enter) once all three
have printed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from blizzard.cluster.ports import port_block

README = Path(__file__).resolve().parents[1] / "README.md"
TIMEOUT_S = 120
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PORT = re.compile(r"127\.0\.0\.1:(\d+)")


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


def test_the_readme_has_the_blocks_this_test_runs():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("python") >= 5 and kinds.count("toml") >= 2
    assert any("blizzard.open(" in text and "node=node" in text for _, text in blocks())
    assert any("blizzard.client.connect(" in text for _, text in blocks())


@pytest.fixture
def scratch():
    path = Path(tempfile.mkdtemp(prefix="blizzard-test-readme-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _python(code: str, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tempfile.gettempdir())


def _run_nodes(code: str) -> None:
    nodes = {n: _python(code, str(n), stdin=subprocess.PIPE) for n in (1, 2, 3)}
    try:
        for n, proc in nodes.items():
            line = proc.stdout.readline()  # blocks until the node's write committed
            if not (line.startswith(f"node {n}: ")
                    and line.rstrip().endswith("reads back b'up'")):
                proc.kill()  # it may wait for Enter: its output ends only once it is gone
                pytest.fail(f"node {n} printed first: {line!r}\n{proc.stdout.read()}")
        for proc in nodes.values():
            proc.stdin.write("\n")
            proc.stdin.flush()
        for n, proc in nodes.items():
            out = proc.communicate(timeout=TIMEOUT_S)[0]
            assert proc.returncode == 0, f"node {n}:\n{out}"
    finally:
        for proc in nodes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _where(name: str) -> str:
    """Where the README's code looks for the file ``name`` (a /dev/shm path)."""
    found = set(re.findall(rf'"(/dev/shm/[^"]*{re.escape(name)})"', README.read_text()))
    assert len(found) == 1, f"the README names {name} at {found or 'no path'}"
    return found.pop()


def test_every_python_block_runs(scratch):
    def substitute(text: str) -> str:
        return text.replace("/dev/shm/", f"{scratch}/")

    cluster = None
    try:
        for kind, text in blocks():
            text = substitute(text)
            first = text.splitlines()[0] if text else ""
            if kind == "toml" and re.fullmatch(r"# [\w.-]+\.toml", first):
                found = sorted(set(_PORT.findall(text)))
                if found:
                    base = port_block(len(found))
                    ports = {p: str(base + i) for i, p in enumerate(found)}
                    text = _PORT.sub(lambda m, ports=ports: f"127.0.0.1:{ports[m.group(1)]}",
                                     text)
                path = Path(substitute(_where(first[2:])))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                if "[[nodes]]" in text:
                    cluster = path
            elif kind == "sh":
                for line in text.splitlines():
                    if line.startswith("blizzard "):
                        command = shlex.split(line.split("#")[0])
                        done = subprocess.run([sys.executable, "-m", "blizzard", *command[1:]],
                                              capture_output=True, text=True,
                                              timeout=TIMEOUT_S)
                        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
            elif kind == "python":
                if "sys.argv[1]" in text:
                    _run_nodes(text)
                    continue
                proc = _python(text)
                out = proc.communicate(timeout=TIMEOUT_S)[0]
                assert proc.returncode == 0, f"block failed:\n{text}\n{out}"
    finally:
        if cluster is not None and (cluster.parent / "pids.json").exists():
            subprocess.run([sys.executable, "-m", "blizzard", "cluster", "down", "--config",
                            str(cluster), "--grace", "5"], capture_output=True,
                           timeout=TIMEOUT_S)
