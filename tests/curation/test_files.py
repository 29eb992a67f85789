"""Outputs appear complete or not at all, under temporary names no two writers share."""

from __future__ import annotations

import pytest

from curation.files import atomic_path, is_partial, partial_path, remove_partials


def test_each_writer_gets_its_own_temporary_name(tmp_path):
    target = tmp_path / "shard-000000.tar"
    names = {partial_path(target) for _ in range(100)}
    assert len(names) == 100 and all(is_partial(n) and not n.name.endswith(".tar") for n in names)


def test_a_straggler_never_writes_into_the_reruns_file(tmp_path):
    target = tmp_path / "record.json"
    with atomic_path(target) as straggler, atomic_path(target) as rerun:
        rerun.write_text("rerun")
        straggler.write_text("straggler")
        assert rerun.read_text() == "rerun"
    assert target.read_text() == "straggler"  # the last complete write wins; never a mix


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    leftover = partial_path(tmp_path / "sub" / "a.json")
    leftover.write_text("{")
    (tmp_path / "sub" / "b.json").write_text("{}")
    assert remove_partials(tmp_path) == 1
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["b.json"]
