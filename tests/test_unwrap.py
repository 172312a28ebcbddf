"""The pieces of an upload body the image guard checks (blocklist_addon.hashes.unwrap): a file
is found however the body wraps it, and no body makes the search raise or run unbounded."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.hashes.unwrap import MAX_HITS, unwrap
from testlab.images import draw, encode

PICTURE = encode(draw(3, (64, 48)))
LIMIT = 32 << 20

boundaries = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\;, '),
    min_size=1,
    max_size=40,
)
fillers = st.binary(max_size=300).filter(lambda b: b"\xff\xd8\xff" not in b)


def found(body: bytes, content_type: str | bytes) -> bool:
    return any(
        piece.startswith(PICTURE) for piece in unwrap(body, content_type, max_bytes=LIMIT).files
    )


def form(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    return body + b"--" + boundary + b"--\r\n"


@settings(max_examples=200, deadline=None)
@given(
    boundary=boundaries,
    text=fillers,
    decoy=st.sampled_from(["", 'x="boundary=zzz"; ', "xboundary=q; "]),
)
def test_a_file_part_is_found_whatever_the_boundary_and_the_fields_before_it(
    boundary: str, text: bytes, decoy: str
) -> None:
    raw = boundary.encode()
    body = form(
        raw,
        [
            (b'Content-Disposition: form-data; name="t"', text),
            (b"Content-Type: image/jpeg", PICTURE),
        ],
    )
    assert found(body, f"multipart/form-data; {decoy}boundary={boundary}")


@settings(max_examples=100, deadline=None)
@given(prefix=fillers, suffix=fillers)
def test_a_picture_anywhere_in_any_body_is_carved(prefix: bytes, suffix: bytes) -> None:
    assert found(prefix + PICTURE + suffix, "application/octet-stream")
    encoded = base64.b64encode(PICTURE)
    assert found(prefix.replace(b"/9j/", b"") + b" " + encoded + b" " + suffix, "text/plain")


def test_encodings_a_platform_decodes_are_undone() -> None:
    b64 = base64.b64encode(PICTURE).decode()
    assert found(
        json.dumps({"a": [{"b": "data:image/jpeg;base64," + b64}]}).encode(), "application/json"
    )
    assert found(
        json.dumps({"media": base64.urlsafe_b64encode(PICTURE).decode()}).encode(),
        "application/json",
    )
    assert found(
        b"photo=" + b64.replace("+", "%2B").replace("/", "%2F").encode(),
        "application/x-www-form-urlencoded",
    )
    related = form(b"R", [(b"Content-Transfer-Encoding: base64", base64.encodebytes(PICTURE))])
    assert found(related, "multipart/related; boundary=R")
    nested = form(b"N", [(b"Content-Type: image/jpeg", PICTURE)])
    outer = form(b"O", [(b"Content-Type: multipart/mixed; boundary=N", nested)])
    assert found(outer, "multipart/form-data; boundary=O")


def test_a_malformed_multipart_body_is_reported_and_still_carved() -> None:
    out = unwrap(b"garbage" + PICTURE, "multipart/form-data; boundary=B", max_bytes=LIMIT)
    assert "malformed-multipart" in out.unchecked
    assert any(piece.startswith(PICTURE) for piece in out.files)


def test_a_body_stuffed_with_signatures_is_bounded_and_said() -> None:
    body = b"\xff\xd8\xff\x00" * (MAX_HITS * 4) + PICTURE
    out = unwrap(body, "application/octet-stream", max_bytes=LIMIT)
    assert "too-many-parts" in out.unchecked
    assert len(out.files) <= MAX_HITS + 1


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2000), content_type=st.text(max_size=80))
def test_never_raises(body: bytes, content_type: str) -> None:
    out = unwrap(body, content_type, max_bytes=LIMIT)
    assert out.files[:1] == ([body] if body else [])
