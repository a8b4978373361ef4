"""The put-path layers benchmark runs end to end, accounts for the whole put and
leaves no pool files behind. Small runs: these check the harness, not the speed."""

from __future__ import annotations

import json

import pytest

from blizzard.bench import layers
from blizzard.structures.registry import registry_for


def test_the_layers_add_up_to_the_put(shm_dir):
    per_layer, best = layers.run(ops=500, repeats=2, directory=str(shm_dir))
    assert set(per_layer) == {*layers.LAYERS, "total"}
    assert sum(per_layer[name] for name in layers.LAYERS) == pytest.approx(per_layer["total"])
    assert all(seconds > 0 for seconds in best.values()), best
    # the core's put writes an entry and undo-logs it: more than an empty transaction
    assert per_layer["structure"] > 0
    # Which of a replica's two entry points took less CPU is not asserted: 500 puts on a
    # busy host once put the registry's alone (2.20 µs) above the registry and the
    # session table together (2.09). What each applied is checked below.
    assert set(layers.apply_rows(best)) == set(layers.APPLY_ROWS)
    assert list(shm_dir.iterdir()) == []  # its pools are gone


def test_every_measurement_applies_what_it_times(tmp_path):
    """The figures are of real work: every timed put lands in its map, and the
    replica's enveloped entries each open a session in the table."""
    ops = 300
    pools = layers._Pools(tmp_path, ops)
    try:
        layers.measure(pools, ops, run=0)
        registry = registry_for(pools.pools["pmem"])
        maps = [registry.core(name) for name in registry.names()]
        # per run: the face's, the replicator's, apply_one's and the two replica batches'
        assert [core.count for core in maps] == [ops] * 5
        sessions = {client: seq for client, seq, *_ in pools.sessions().sessions()}
        assert sessions == {1 << 32 | c: 1 for c in range(ops)}
        plain = registry_for(pools.pools["none"])  # apply_one's map, and the core's own puts
        assert [plain.core(name).count for name in plain.names()] == [ops] * 2
    finally:
        pools.close()


def test_the_command_prints_every_layer_and_writes_json(shm_dir, capsys):
    out = shm_dir / "layers.json"
    assert layers.main(["--ops", "300", "--repeats", "1", "--dir", str(shm_dir), "--quiet",
                        "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for name in (*layers.LAYERS, "total (m[key] = value)", *layers.APPLY_ROWS):
        assert name in text, text
    record = json.loads(out.read_text())
    assert set(record["results"]["layers_us"]) == {*layers.LAYERS, "total"}
    assert set(record["results"]["apply_us"]) == set(layers.APPLY_ROWS)
    assert record["params"]["build"] in ("compiled", "interpreted")


def test_bad_counts_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        layers.main(["--ops", "0"])
    assert exit_.value.code == 2
    assert "--ops and --repeats must be at least 1" in capsys.readouterr().err
