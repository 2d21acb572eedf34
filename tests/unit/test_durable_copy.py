"""copy_durable brings a pre-copy up to date block by block, hashing in a thread: the result
is the source byte for byte, with the source's SHA-256, whatever the pre-copy held."""

from __future__ import annotations

import hashlib
import os

import pytest

from orchestrator.host.durable import BLOCK, BUFFER, TMP_SUFFIX, copy_durable

SIZE = 3 * BUFFER + 5 * BLOCK + 123


def _changed(data: bytes, *offsets: int) -> bytes:
    out = bytearray(data)
    for at in offsets:
        out[at] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("seed", ["same", "patched", "shorter", "longer", "none", "empty"])
def test_the_copy_is_the_source_whatever_the_precopy_held(tmp_path, seed):
    src, dst = tmp_path / "index", tmp_path / "new" / "index"
    dst.parent.mkdir()
    data = os.urandom(SIZE)
    src.write_bytes(data)
    tmp = dst.with_name(dst.name + TMP_SUFFIX)
    seeds = {"same": data, "patched": _changed(data, 0, BLOCK + 1, BUFFER + 7, SIZE - 1),
             "shorter": data[:BUFFER + 11], "longer": data + b"stale tail" * 1000,
             "empty": b""}
    if seed in seeds:
        tmp.write_bytes(seeds[seed])
    digest = copy_durable(src, dst)
    assert dst.read_bytes() == data and not tmp.exists()
    assert digest == hashlib.sha256(data).hexdigest()
    assert copy_durable(src, tmp_path / "new" / "again", digest=False) == ""
    assert (tmp_path / "new" / "again").read_bytes() == data


def test_link_all_skips_a_source_deleted_since_it_was_listed_only_when_told(tmp_path):
    from orchestrator.errors import StepError
    from orchestrator.host.durable import link_all

    (tmp_path / "a").write_bytes(b"a")
    pairs = [(tmp_path / "a", tmp_path / "new" / "a"), (tmp_path / "gone", tmp_path / "new" / "gone")]
    assert link_all(pairs, [False, False], missing_ok=True) == 1
    assert os.path.samefile(tmp_path / "a", tmp_path / "new" / "a")
    with pytest.raises(StepError, match="cannot hard-link"):
        link_all(pairs, [False, False])
