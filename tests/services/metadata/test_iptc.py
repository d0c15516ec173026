"""IPTC-IIM blocks in JPEG (APP13), well-formed and not."""

from __future__ import annotations

from services.metadata.extract import extract
from services.metadata.iptc import MAX_TEXT_CHARS

from .images import insert_segment, iptc_app13, jpeg


def with_iptc(datasets: list[tuple[int, int, bytes]]) -> bytes:
    return insert_segment(jpeg(), 0xED, iptc_app13(datasets))


def test_common_fields_and_repeated_keywords() -> None:
    data = with_iptc(
        [
            (1, 90, b"\x1b%G"),  # UTF-8
            (2, 5, b"Harbour at dawn"),
            (2, 25, b"boats"),
            (2, 25, "m\u00e5ke".encode()),
            (2, 80, b"Ada"),
            (2, 80, b"Grace"),
            (2, 90, b"Bergen"),
            (2, 101, b"Norway"),
            (2, 116, b"(c) 2024 Ada"),
            (2, 120, "Early boats, \u00e6\u00f8\u00e5".encode()),
            (2, 55, b"20240501"),
            (2, 60, b"063000+0200"),
        ]
    )

    md = extract(data)

    iptc = md.iptc
    assert iptc.object_name == "Harbour at dawn"
    assert list(iptc.keywords) == ["boats", "m\u00e5ke"]
    assert iptc.byline == "Ada; Grace"
    assert (iptc.city, iptc.country) == ("Bergen", "Norway")
    assert iptc.copyright == "(c) 2024 Ada"
    assert iptc.caption == "Early boats, \u00e6\u00f8\u00e5"
    assert iptc.date_created == "20240501 063000+0200"
    assert not iptc.HasField("headline")
    assert list(md.warnings) == []


def test_legacy_latin1_text_is_decoded_and_noted() -> None:
    md = extract(with_iptc([(2, 120, "Caf\u00e9 cr\u00e8me".encode("latin-1"))]))

    assert md.iptc.caption == "Caf\u00e9 cr\u00e8me"
    assert list(md.warnings) == ["iptc: Caption is not UTF-8; decoded as Latin-1"]


def test_overlong_and_control_characters() -> None:
    md = extract(with_iptc([(2, 105, b"\x00Head\x07line\x00"), (2, 120, b"c" * 5000)]))

    assert md.iptc.headline == "Headline"
    assert md.iptc.caption == "c" * MAX_TEXT_CHARS
    assert list(md.warnings) == [f"iptc: Caption truncated to {MAX_TEXT_CHARS} characters"]


def test_garbage_iptc_block_is_noted_and_the_rest_read() -> None:
    resource = b"8BIM\x04\x04\x00\x00\x00\x00\x00\x10" + b"\x1c\x02\x78\xff\xff" + b"x" * 11
    data = insert_segment(jpeg(size=(20, 10)), 0xED, b"Photoshop 3.0\x00" + resource)

    md = extract(data)

    assert (md.width, md.height) == (20, 10)
    assert not md.HasField("iptc")
    assert list(md.warnings) == ["iptc: unreadable IPTC block"]
