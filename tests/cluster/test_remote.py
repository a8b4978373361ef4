"""The remote client against a real 3-node cluster (``blizzard serve`` processes):
every structure's API gives what the same calls give on a local Store,
exceptions included; paged scans stay exact across concurrent writes and
across a leader killed between two pages.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

import blizzard
from blizzard.cluster import remote
from blizzard.exceptions import CodecMismatchError, StructureKindError
from tests.cluster.test_processes import ProcessCluster

SEED = 20261201
STEPS = 150


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "tls"])
def cluster(request):
    """A cluster over plain TCP, then one with TLS on every port."""
    c = ProcessCluster(tls=request.param)
    try:
        c.start_all()
        c.wait_for_leader()
        yield c
    finally:
        c.close()


@pytest.fixture
def local():
    directory = Path(tempfile.mkdtemp(prefix="blizzard-test-local-", dir="/dev/shm"))
    with blizzard.open({"data_dir": str(directory), "pool_size": "16M"}) as store:
        yield store
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 3 items: every scan spans many requests."""
    monkeypatch.setattr(remote, "PAGE_ITEMS", 3)


def _outcome(call, structure):
    """What ``call(structure)`` gives: its value (iterators as lists), or the type
    of what it raised (the message may differ: it may name a node)."""
    try:
        value = call(structure)
    except Exception as exc:
        return ("raised", type(exc))
    if isinstance(value, list | tuple | dict | str | bytes | int | float | type(None)):
        return value
    return list(value)


def _compare(name, seed, calls, there, here):
    """The same seeded calls on the remote and the local structure give the same."""
    rng = random.Random(seed)
    for step in range(STEPS):
        what, call = rng.choice(calls)(rng)
        mine, theirs = _outcome(call, there), _outcome(call, here)
        assert mine == theirs, (f"{name}: step {step} {what}: remote {mine!r}, local "
                                f"{theirs!r} (replay: seed {seed})")


def _call(method, universe, *extra):
    """A builder ``rng -> (description, call(structure))`` of ``method(x, *extra)``,
    x drawn from ``universe``."""

    def build(r):
        x = r.choice(universe)
        return f"{method}({x!r}{', ' if extra else ''}{', '.join(map(repr, extra))})", \
            lambda m: getattr(m, method)(x, *extra)

    return build


def _plain(description, call):
    return lambda r: (description, call)


def _map_calls(keys):
    def put(r):
        k, v = r.choice(keys), r.randrange(100)
        return f"[{k!r}] = {v}", lambda m: m.__setitem__(k, v)

    def update(r):
        pairs = {r.choice(keys): r.randrange(100) for _ in range(3)}
        return f"update({pairs})", lambda m: m.update(pairs)

    return [put, put, put, update, _call("__getitem__", keys), _call("get", keys, "none"),
            _call("__contains__", keys), _call("__delitem__", keys), _call("pop", keys),
            _call("pop", keys, 0), _call("setdefault", keys, 7), _plain("len", len)]


def test_the_hash_map_matches_a_local_one(cluster, local, small_pages):
    calls = [*_map_calls([f"k{i}" for i in range(12)]),
             _plain("keys", sorted), _plain("items", lambda m: sorted(m.items())),
             _plain("values", lambda m: sorted(m.values())),
             _plain("page", lambda m: sorted(m.page(limit=100)))]
    with cluster.client() as client:
        there = client.hashmap("hm", key_codec=str, value_codec=int)
        here = local.hashmap("hm", key_codec=str, value_codec=int)
        _compare("hashmap", SEED, calls, there, here)
        there.clear()
        here.clear()
        assert len(there) == len(here) == 0


@pytest.mark.parametrize("kind", ["bptree", "skiplist"])
def test_the_ordered_maps_match_local_ones(cluster, local, small_pages, kind):
    keys = list(range(-6, 18, 2))
    bounds = [None, *range(-8, 20, 3)]

    def irange(r):
        lo, hi = r.choice(bounds), r.choice(bounds)
        inclusive = (r.random() < 0.5, r.random() < 0.5)
        reverse = r.random() < 0.5
        method = "irange_items" if r.random() < 0.5 else "irange"
        return (f"{method}({lo}, {hi}, {inclusive}, {reverse})",
                lambda m: getattr(m, method)(lo, hi, inclusive, reverse))

    def positions(r):
        start, stop = r.choice([None, *range(-8, 9)]), r.choice([None, *range(-8, 9)])
        reverse = r.random() < 0.5
        step = r.choice([None, 1, 2, -1, -3])
        view = r.choice(["keys", "values", "items"])
        i = r.randrange(-9, 9)
        return (f"islice({start}, {stop}, {reverse}), {view}()[{start}:{stop}:{step}], "
                f"{view}()[{i}]",
                lambda m: (list(m.islice(start, stop, reverse)),
                           getattr(m, view)()[start:stop:step], _outcome(
                               lambda m: getattr(m, view)()[i], m)))

    anywhere = list(range(-9, 20))
    calls = [*_map_calls(keys), irange, irange, irange, positions, positions,
             _plain("keys", list), _plain("reversed", lambda m: list(reversed(m))),
             _plain("items", lambda m: list(m.items())),
             _plain("values", lambda m: list(m.values())),
             _call("peekitem", range(-8, 8)), _plain("peekitem()", lambda m: m.peekitem()),
             _call("popitem", range(-4, 4)), _call("bisect_left", anywhere),
             _call("bisect_right", anywhere), _call("index", keys)]
    with cluster.client() as client:
        there = getattr(client, kind)(f"om-{kind}", key_codec=int, value_codec=int)
        here = getattr(local, kind)(f"om-{kind}", key_codec=int, value_codec=int)
        _compare(kind, SEED + 1, calls, there, here)
        assert list(there.items()) == list(here.items())


def test_the_queue_matches_a_local_one(cluster, local, small_pages):
    values = list(range(100))
    calls = [_call("put", values), _call("put", values),
             lambda r: (lambda v: ("put_many", lambda q: q.put_many([v])))(r.randrange(100)),
             _plain("get", lambda q: q.get(block=False)),
             _plain("get_nowait", lambda q: q.get_nowait()),
             _plain("get with a timeout", lambda q: q.get(timeout=0.01)),
             _plain("peek", lambda q: q.peek()), _plain("len", len),
             _plain("empty", lambda q: q.empty()), _plain("list", list),
             _plain("page", lambda q: q.page(limit=2)),
             _plain("page(3)", lambda q: q.page(3, 2)), _plain("page(99)", lambda q: q.page(99)),
             lambda r: ("clear", lambda q: q.clear()) if r.random() < 0.1 else ("len", len)]
    with cluster.client() as client:
        _compare("queue", SEED + 2, calls, client.queue("q", value_codec=int),
                 local.queue("q", value_codec=int))


def test_opening_gives_the_local_errors_and_the_store_surface(cluster, local):
    with cluster.client() as client:
        for store in (client, local):
            store.hashmap("opened", key_codec=str)
            with pytest.raises(StructureKindError):
                store.queue("opened")
            with pytest.raises(CodecMismatchError):
                store.hashmap("opened", key_codec=int)
            with pytest.raises(ValueError, match="ordered key codec"):
                store.bptree("t-opened", key_codec="msgpack")
            tree = store.bptree("t-opened", key_codec=int, fanout=8)
            assert tree.fanout == 8
            tree[1] = b"x"
            with pytest.raises(ValueError, match="fanout is fixed"):
                store.bptree("t-opened", fanout=16)
            assert store.bptree("t-opened").key_codec.name == "int"  # stored codecs
            assert store.names()["t-opened"] == "bptree"
            store.drop("t-opened")
            assert "t-opened" not in store.names()
            with pytest.raises(KeyError):
                store.drop("t-opened")
        status = client.status()
        assert status["backend"] == "remote" and status["role"] == "client"
        assert status["leader"] in cluster.ids and status["term"] >= 1
        assert status["commit"] >= status["applied"] > 0
        assert set(status["nodes"]) == set(cluster.ids)
        assert status["counters"]["requests"] > 0


def test_scans_stay_exact_while_others_write(cluster, small_pages):
    """Keys present throughout a scan are returned once each, however the
    structure changes between its pages (hash splits and merges included)."""
    with cluster.client() as client, cluster.client() as writer:
        hm, tree, q = client.hashmap("scan-hm"), client.bptree("scan-t"), client.queue("scan-q")
        stable = {b"s%03d" % i for i in range(60)}
        hm.update({k: b"1" for k in stable})
        tree.update({k: b"1" for k in stable})
        for item in [b"x"] * 60 + [b"s%03d" % i for i in range(30)]:
            q.put(item)  # in order (put_many is pipelined)
        stop = threading.Event()
        rounds, errors = [0], []

        def churn():
            try:
                write()
            except Exception as exc:  # reported by the test, not lost with the thread
                errors.append(exc)

        def write():
            rng = random.Random(SEED)
            w_hm, w_tree, w_q = writer.hashmap("scan-hm"), writer.bptree("scan-t"), \
                writer.queue("scan-q")
            taken = 0
            while not stop.is_set():
                k = b"n%03d" % rng.randrange(200)
                w_hm.update({b"n%03d" % rng.randrange(200): b"2" for _ in range(20)})
                w_hm.pop(k, None)
                w_tree[k] = b"2"
                w_tree.pop(b"n%03d" % rng.randrange(200), None)
                if taken < 60:
                    assert w_q.get() == b"x"  # the leading b"x" items only
                    taken += 1
                w_q.put(b"tail")
                rounds[0] += 1

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            for _ in range(2):
                keys = list(hm)
                assert len(keys) == len(set(keys)), "a key was returned twice"
                assert stable <= set(keys)
                ordered = list(tree)
                assert ordered == sorted(set(ordered)) and stable <= set(ordered)
                backwards = list(reversed(tree))
                assert backwards == sorted(set(backwards), reverse=True)
                assert stable <= set(backwards)
                queued = [v for v in q if v.startswith(b"s")]
                assert queued == [b"s%03d" % i for i in range(30)]
            churned = rounds[0]
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors
        assert churned >= 3, "the writer did not run during the scans"


def test_a_scan_resumes_on_another_node_after_the_leader_dies(cluster, small_pages):
    with cluster.client() as client:
        hm, tree = client.hashmap("failover-hm"), client.skiplist("failover-sl", key_codec=int)
        hm.update({b"f%03d" % i: b"v" for i in range(40)})
        tree.update({i: b"v" for i in range(40)})
        leader = cluster.wait_for_leader()
        keys, ordered = iter(hm), iter(tree.irange(5, 34))
        first = [next(keys) for _ in range(10)] + [next(ordered) for _ in range(10)]
        cluster.kill(leader)
        try:
            rest = list(keys), list(ordered)
        finally:
            cluster.start(leader)
        got = sorted(first[:10] + rest[0])
        assert got == sorted(b"f%03d" % i for i in range(40))
        assert first[10:] + rest[1] == list(range(5, 35))


@pytest.mark.parametrize("kind", ["hashmap", "bptree", "skiplist"])
def test_remote_key_errors_carry_the_key(cluster, kind):
    """A missing key over the network is ``KeyError(key)``, as locally; a key
    the codec cannot encode is absent there too."""
    with cluster.client() as client:
        m = getattr(client, kind)(f"ke-{kind}", key_codec=str, value_codec=int)
        m["there"] = 1
        for missing in (lambda: m["absent"], lambda: m.pop("absent"),
                        lambda: m.__delitem__("absent")):
            with pytest.raises(KeyError) as info:
                missing()
            assert info.value.args == ("absent",)
        assert 5 not in m and m.get(5) is None
        with pytest.raises(KeyError) as info:
            m[5]
        assert info.value.args == (5,)
