"""Snapshot images in a node directory: received into a file, made durable, copied
over the live pool; refused (that install only) for another pool size or no room;
an install a crash interrupted is done again before the pool is opened."""

from __future__ import annotations

from collections import namedtuple

import pytest

from blizzard.cluster import images as images_module
from blizzard.cluster.images import INCOMING, READY, FileImages, finish_interrupted_install
from blizzard.pmem import Pool
from blizzard.pmem.image import PoolImage
from blizzard.replication.sessions import SessionStateMachine
from blizzard.replication.snapshots import SnapshotInstallError
from blizzard.structures import PHashMap, registry_for


def _node_pool(path, entries: int):
    pool = Pool.create(path, 8 << 20, layout="blizzard.data")
    machine = SessionStateMachine(registry_for(pool), pool)
    m = PHashMap(pool, "m")
    for i in range(entries):
        m[b"k%d" % i] = b"v%d" % i
    return pool, machine


def _image_of(pool) -> PoolImage:
    image = PoolImage(pool)
    while image.step():
        pass
    return image.finish()


def _receive(images: FileImages, image: PoolImage, index: int) -> None:
    pieces = list(image.pieces())
    images.begin(index, image.size, sum(n for _, n in pieces))
    for off, n in pieces:
        images.write(off, bytes(image.image[off:off + n]))
    images.complete(index, 1)


def test_an_image_installs_over_the_live_pool_and_handles_follow(tmp_path):
    (tmp_path / "leader").mkdir()
    (tmp_path / "follower").mkdir()
    leader, _ = _node_pool(tmp_path / "leader" / "data.pool", 300)
    pool, machine = _node_pool(tmp_path / "follower" / "data.pool", 5)
    handle = PHashMap(pool, "m")
    image = _image_of(leader)
    images = FileImages(tmp_path / "follower", pool, machine.reload)
    _receive(images, image, registry_for(leader).last_applied)
    assert (tmp_path / "follower" / READY).exists()
    with pytest.raises(SnapshotInstallError, match="waits to be installed"):
        images.begin(99, pool.size, 1)
    images.install(registry_for(leader).last_applied)
    assert not (tmp_path / "follower" / READY).exists()
    assert not (tmp_path / "follower" / INCOMING).exists()
    assert len(handle) == 300 and handle[b"k299"] == b"v299"
    assert machine.last_applied == registry_for(leader).last_applied
    pool.check()
    registry_for(pool).check()
    image.close()


def test_an_install_cut_short_by_a_crash_is_done_again_at_open(tmp_path):
    (tmp_path / "leader").mkdir()
    node = tmp_path / "follower"
    node.mkdir()
    leader, _ = _node_pool(tmp_path / "leader" / "data.pool", 200)
    pool, machine = _node_pool(node / "data.pool", 5)
    image = _image_of(leader)
    _receive(FileImages(node, pool, machine.reload), image, 7)
    pool.buf[pool._heap_off:pool._heap_off + 4096] = bytes(4096)  # the copy, cut short
    pool.close()
    assert finish_interrupted_install(node, node / "data.pool")
    again = Pool.open(node / "data.pool", layout="blizzard.data")
    assert len(PHashMap(again, "m")) == 200
    again.check()
    assert not finish_interrupted_install(node, node / "data.pool")
    image.close()


def test_another_pool_size_or_no_room_fails_the_install_only(tmp_path, monkeypatch):
    pool, machine = _node_pool(tmp_path / "data.pool", 1)
    images = FileImages(tmp_path, pool, machine.reload)
    with pytest.raises(SnapshotInstallError, match="pool_size must be the same"):
        images.begin(5, pool.size * 2, 1000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(images_module.shutil, "disk_usage",  # a full filesystem
                        lambda path: usage(1 << 30, (1 << 30) - 4096, 4096))
    with pytest.raises(SnapshotInstallError, match="no room"):
        images.begin(5, pool.size, 1 << 20)
    assert not (tmp_path / INCOMING).exists()
    PHashMap(pool, "m")[b"after"] = b"fine"  # the node's state is untouched
