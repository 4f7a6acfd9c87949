"""The refs pickle is read with a restricted unpickler: plain data loads, anything that could run code is refused."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct

import pytest

from epng.data.refer_pickle import RestrictedUnpickler, load_refs_pickle, restricted_loads
from epng.errors import DataError


class _RunsCommand:
    """Pickles to ``os.system(<command>)``: unpickling it with the standard unpickler runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "refs(unc).p"
    payload = [{"ref_id": 1, "sentences": [{"sent": "hi"}], "x": _RunsCommand(f"touch {marker}")}]
    path.write_bytes(pickle.dumps(payload, protocol=2))
    assert b"system" in path.read_bytes()
    with pytest.raises(DataError) as err:
        load_refs_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg and "system" in msg  # names the file and the global
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_every_global_is_refused_whatever_the_protocol(tmp_path, protocol):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([_CallsEval()], protocol=protocol))
    with pytest.raises(DataError, match="eval"):
        load_refs_pickle(path)
    # even a harmless class is a global and is refused
    path.write_bytes(pickle.dumps([{"s": {1, 2}}, range(3)], protocol=protocol))
    with pytest.raises(DataError, match="refused"):
        load_refs_pickle(path)


def test_persistent_ids_are_refused():
    data = b"\x80\x02]q\x00X\x01\x00\x00\x00aQa."  # [persistent_load("a")]
    with pytest.raises(pickle.UnpicklingError, match="persistent"):
        restricted_loads(data)


def _py2_str(b: bytes) -> bytes:
    """SHORT_BINSTRING: how Python 2 pickles a byte string ``str`` at protocol 2."""
    return b"U" + bytes([len(b)]) + b


def _py2_unicode(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def test_python2_byte_strings_become_text(tmp_path):
    # [{"sent": <py2 str of UTF-8 bytes>, "raw": <py2 str, Latin-1 bytes>, "tokens": [u"caf\xe9"], "ref_id": 7}]
    data = (
        b"\x80\x02]}("
        + _py2_str(b"sent")
        + _py2_str("café".encode())
        + _py2_str(b"raw")
        + _py2_str("café".encode("latin-1"))
        + _py2_str(b"tokens")
        + b"]"
        + _py2_unicode("café")
        + b"a"
        + _py2_str(b"ref_id")
        + b"K\x07ua."
    )
    pickletools.dis(data, out=io.StringIO())  # a well-formed pickle
    path = tmp_path / "refs(unc).p"
    path.write_bytes(data)
    assert load_refs_pickle(path) == [{"sent": "café", "raw": "café", "tokens": ["café"], "ref_id": 7}]


def test_plain_refs_load(tmp_path):
    refs = [
        {
            "ref_id": 0,
            "ann_id": 5,
            "image_id": 3,
            "split": "testA",
            "category_id": 1,
            "sent_ids": [0, 1],
            "sentences": [
                {"sent": "man on left", "raw": "Man on left.", "tokens": ["man", "on", "left"], "sent_id": 0}
            ],
            "box": (1.5, 2.0, 3.0, 4.0),
            "flag": None,
            "ok": True,
            "big": 2**70,
        }
    ]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_refs_pickle(path) == refs
    with open(path, "rb") as f:
        assert RestrictedUnpickler(f).load() == refs


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a readable refs pickle"),
        (b"this is not a pickle", "not a readable refs pickle"),
        (pickle.dumps([{"ref_id": 1, "sentences": ["a" * 50]}], protocol=2)[:-7], "not a readable refs pickle"),
        (pickle.dumps({"ref_id": 1}, protocol=2), "expected a list of refs"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "refs(umd).p"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        load_refs_pickle(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="refs file not found"):
        load_refs_pickle(tmp_path / "refs(unc).p")
