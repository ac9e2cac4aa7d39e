"""A script's output made safe for a terminal (``logs`` on a TTY).

A log holds whatever the script printed.  Written raw to a terminal, escape sequences
could retitle the window, move the cursor over earlier lines, or plant a hyperlink
(OSC 8) whose text hides its target.  Like ``less -R``, colours (SGR, ``ESC[...m``)
are kept and every other control character is shown visibly in caret notation
(``ESC`` as ``^[``), so nothing the script wrote acts on the terminal but colour.
"""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO

SGR = re.compile(r"(\x1b\[[0-9;:]{0,64}m)")
PARTIAL_SGR = re.compile(r"\x1b(\[[0-9;:]{0,64})?\Z")
KEEP = "\n\t"
CONTROLS = {c: f"^{chr(c + 64)}" for c in range(32) if chr(c) not in KEEP}
CONTROLS[0x7F] = "^?"
CONTROLS.update({c: f"<U+{c:04X}>" for c in range(0x80, 0xA0)})  # C1: CSI, OSC as one char


def visible(text: str) -> str:
    """``text`` with every control character but newline, tab and SGR colours shown."""
    parts = SGR.split(text)
    parts[::2] = [p.translate(CONTROLS) for p in parts[::2]]
    return "".join(parts)


class TerminalOut:
    """A binary writer that decodes UTF-8 (replacing bad bytes) and writes ``visible``
    text, holding back a colour sequence split between two chunks."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.carry = ""

    def write(self, chunk: bytes) -> None:
        text = self.carry + self.decoder.decode(chunk)
        m = PARTIAL_SGR.search(text)
        cut = m.start() if m else len(text)
        self.carry = text[cut:]
        self.out.write(visible(text[:cut]).encode())

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        self.out.write(visible(self.carry + self.decoder.decode(b"", final=True)).encode())
        self.carry = ""
        self.out.flush()
