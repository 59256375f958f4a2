"""Source.line_chunks cuts a file into chunks on line ends and numbers them: whatever the
chunk size, the chunks are the file's lines in order and each starts at its true line number
(locators in rejects and evidence depend on it)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from forensics.parsers.base import Source

LINES = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=60)


@settings(max_examples=200, deadline=None)
@given(lines=LINES, chunk=st.integers(1, 300), final_newline=st.booleans(), bom=st.booleans())
def test_chunks_are_the_lines_numbered(tmp_path_factory, lines, chunk, final_newline, bom):
    body = b"\n".join(lines) + (b"\n" if final_newline else b"")
    # files that open with a BOM or gzip's magic are read as such on purpose: a UTF-16 BOM
    # makes it UTF-16, gzip's magic a compressed file, a UTF-8 BOM is dropped (`bom` does it)
    assume(bom or not body.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\x1f\x8b")))
    path = tmp_path_factory.mktemp("src") / "x.log"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
    chunks = list(Source(path, "x.log").line_chunks(chunk))
    # the lines: the file's last newline ends its last line, it opens no new one
    text = body[:-1] if body.endswith(b"\n") else body
    if not body:  # nothing, or a BOM alone: one blank line
        assert chunks == ([(1, b"")] if bom else [])
        return
    assert b"\n".join(data for _, data in chunks) == text
    line_no = 1
    for first, data in chunks:
        assert first == line_no
        line_no += data.count(b"\n") + 1
    assert line_no - 1 == len(text.split(b"\n"))
