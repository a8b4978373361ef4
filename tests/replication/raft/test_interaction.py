"""Scripted interactions with golden output (after etcd's ``interaction_test.go``).

Each ``testdata/*.txt`` file is a sequence of blocks::

    command arg...
    ----
    expected output

separated by blank lines. ``stabilize`` prints every message delivered and
every entry applied; ``status`` prints each node's state. Regenerate the
expected output after an intended change with ``BLIZZARD_REWRITE=1 pytest
tests/replication/raft/test_interaction.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blizzard.replication.raft.messages import (
    ConfChange,
    ConfChangeType,
    EntryType,
    Message,
    MsgApp,
    MsgSnap,
)

from .harness import Network

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

TESTDATA = Path(__file__).parent / "testdata"
REWRITE = os.environ.get("BLIZZARD_REWRITE", "") not in ("", "0")


def describe(m: Message) -> str:
    """One line per message: kind, route, term, then the fields that matter."""
    fields = []
    for key in type(m).__match_args__:
        if key in ("source", "target", "term"):
            continue
        value = getattr(m, key)
        if type(m) is MsgApp and key == "entries":
            value = "[" + ",".join(f"{e.term}/{e.index}" for e in value) + "]"
        elif type(m) is MsgSnap:
            meta = value.meta
            value = f"{meta.index}/{meta.term} voters={list(meta.conf_state.voters)}"
        elif key == "entries":
            value = len(value)
        fields.append(f"{key}={value}")
    head = f"{m.source}->{m.target} {type(m).__name__} term={m.term}"
    return " ".join([head, *fields])


class Script:
    def __init__(self) -> None:
        self.net: Network | None = None

    def run(self, command: str) -> str:
        name, *args = command.split()
        handler = getattr(self, "cmd_" + name.replace("-", "_"))
        return handler(*args) or ""

    def cmd_add_nodes(self, count: str, *options: str) -> None:
        settings = dict(option.split("=") for option in options)
        self.net = Network(int(count), **{k: v == "true" for k, v in settings.items()})

    def cmd_campaign(self, node: str) -> None:
        self.net.nodes[int(node)].campaign()

    def cmd_propose(self, node: str, data: str) -> None:
        self.net.nodes[int(node)].propose(data.encode())

    def cmd_read_index(self, node: str, context: str) -> None:
        self.net.nodes[int(node)].read_index(context.encode())

    def cmd_transfer(self, node: str, target: str) -> None:
        self.net.nodes[int(node)].transfer_leadership(int(target))

    def cmd_compact(self, node: str, index: str) -> None:
        self.net.nodes[int(node)].compact(int(index), b"snapshot")

    def cmd_conf_change(self, node: str, kind: str, member: str) -> None:
        change = ConfChange(ConfChangeType[kind.upper()], int(member))
        self.net.nodes[int(node)].propose_conf_change(change)

    def cmd_tick(self, node: str, count: str = "1") -> None:
        self.net.tick(int(node), int(count))

    def cmd_isolate(self, node: str) -> None:
        self.net.isolate(int(node))

    def cmd_recover(self) -> None:
        self.net.recover()

    def cmd_stabilize(self) -> str:
        net = self.net
        lines = []
        # After a snapshot the applied list is rebuilt: count from its new length.
        before = {node: len(applied) for node, applied in net.applied.items()}
        reads_before = {node: len(states) for node, states in net.read_states.items()}
        restored_before = {node: len(metas) for node, metas in net.restored.items()}
        start = len(net.delivered)
        net.stabilize()
        lines += [describe(m) for m in net.delivered[start:]]
        for node, applied in net.applied.items():
            for meta in net.restored[node][restored_before[node] :]:
                lines.append(f"{node} restores snapshot {meta.term}/{meta.index}")
            for entry in applied[before[node] :]:
                if entry.term == 0:
                    continue  # covered by the snapshot
                kind = "conf" if entry.type == EntryType.CONF_CHANGE else "data"
                lines.append(f"{node} applies {entry.term}/{entry.index} {kind} {entry.data!r}")
            for state in net.read_states[node][reads_before[node] :]:
                lines.append(f"{node} read {state.context!r} at index {state.index}")
        return "\n".join(lines)

    def cmd_status(self) -> str:
        lines = []
        for node in self.net.nodes.values():
            log = node.log
            lines.append(
                f"{node.id} {node.role.name} term={node.term} lead={node.lead}"
                f" last={log.last_index()} commit={log.committed} applied={log.applied}"
                f" voters={sorted(node.voters)} learners={sorted(node.learners)}"
            )
        return "\n".join(lines)


def parse(text: str) -> list[tuple[str, str]]:
    blocks = []
    for chunk in text.strip("\n").split("\n\n"):
        lines = chunk.split("\n")
        if lines[0].startswith("#"):
            lines = [line for line in lines if not line.startswith("#")]
            if not lines:
                continue
        assert lines[1] == "----", f"malformed block: {chunk!r}"
        blocks.append((lines[0], "\n".join(lines[2:])))
    return blocks


def render(blocks: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"{command}\n----\n{output}".rstrip("\n") for command, output in blocks)


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_interaction(path: Path):
    script = Script()
    expected = parse(path.read_text())
    actual = [(command, script.run(command)) for command, _ in expected]
    if REWRITE:
        path.write_text(render(actual) + "\n")
        return
    for (command, want), (_, got) in zip(expected, actual, strict=True):
        assert got == want, f"{path.name}: {command}"
