"""masking.py: secrets replaced in bytes and text, across chunk boundaries, through a pipe."""

from __future__ import annotations

import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from script_monitor.masking import MASK, Masker, Pump, raw_bytes


def test_masks_every_value_longest_first_and_ignores_short_ones():
    m = Masker(["secret", "secret-longer", "ab"])
    assert m.bytes(b"x secret-longer y secret z ab") == b"x " + MASK + b" y " + MASK + b" z ab"
    assert m.text("secret") == MASK.decode()
    assert not Masker(["ab", ""]) and Masker(["abc"])
    assert Masker([]).bytes(b"secret") == b"secret"


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(st.characters(blacklist_characters="*\0"), min_size=3, max_size=8),
    noise=st.lists(st.binary(max_size=20), max_size=6),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_split_never_lets_a_secret_through_a_chunk_boundary(secret, noise, cuts):
    """Fed in arbitrary chunks, the masked stream equals masking the whole at once."""
    m = Masker([secret])
    secret = raw_bytes(secret)  # as a child gets it (lone surrogates included)
    whole = secret.join(noise) if noise else secret
    data = whole
    # Chunk the stream at the drawn cut points, as a pipe would deliver it.
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    out, carry = b"", b""
    for chunk in chunks:
        done, carry = m.split(carry + chunk)
        out += done
    out += m.bytes(carry)
    assert out == m.bytes(whole)
    assert secret not in out


def test_pump_masks_a_pipe_into_a_file(tmp_path):
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    read_end, write_end = os.pipe()
    pump = Pump(read_end, fd, Masker(["hunter2"]), ["hunter2"])
    for piece in (b"pass: hun", b"ter2\n", b"again hunter2 end\n"):
        os.write(write_end, piece)
    os.close(write_end)
    pump.finish(5)  # closes its ends
    assert log.read_bytes() == b"pass: ***\nagain *** end\n"
