"""XMP packets: the shapes real writers produce, and the ones attackers do."""

from __future__ import annotations

from services.metadata.text import Notes
from services.metadata.xmp import MAX_PROPERTIES, MAX_VALUE_CHARS, MAX_XMP_BYTES, parse

NAMESPACES = (
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    'xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
)


def packet(body: str, attributes: str = "") -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {NAMESPACES}>'
        f'<rdf:Description rdf:about="" {attributes}>{body}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def read(data: bytes | str) -> tuple[dict[str, str], list[str]]:
    notes = Notes()
    return parse(data, notes), notes.items


def test_simple_values_arrays_alternatives_and_structs() -> None:
    body = (
        "<dc:creator><rdf:Seq><rdf:li>Ada</rdf:li><rdf:li>Grace</rdf:li></rdf:Seq></dc:creator>"
        "<dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>snow</rdf:li></rdf:Bag></dc:subject>"
        '<dc:title><rdf:Alt><rdf:li xml:lang="fr">Chat</rdf:li>'
        '<rdf:li xml:lang="x-default">Cat</rdf:li></rdf:Alt></dc:title>'
        '<exif:Flash rdf:parseType="Resource"><exif:Fired>True</exif:Fired>'
        "<exif:Mode>2</exif:Mode></exif:Flash>"
        '<photoshop:City rdf:resource="https://example.org/paris"/>'
    )

    props, notes = read(packet(body, 'xmp:CreatorTool="Darktable 4.6" xmp:Rating="4"'))

    assert props == {
        "xmp:CreatorTool": "Darktable 4.6",
        "xmp:Rating": "4",
        "dc:creator[1]": "Ada",
        "dc:creator[2]": "Grace",
        "dc:subject[1]": "cat",
        "dc:subject[2]": "snow",
        "dc:title": "Cat",
        "exif:Flash/exif:Fired": "True",
        "exif:Flash/exif:Mode": "2",
        "photoshop:City": "https://example.org/paris",
    }
    assert notes == []


def test_text_packets_and_trailing_garbage_are_fine() -> None:
    data = packet("<dc:format>image/jpeg</dc:format>") + b"\x00\x00 junk after the trailer"

    assert read(data) == ({"dc:format": "image/jpeg"}, [])
    assert read(packet("<dc:format>image/png</dc:format>").decode())[0] == {
        "dc:format": "image/png"
    }


def test_empty_packet_has_no_properties_and_no_notes() -> None:
    assert read(b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * 64_000 + b"</x:xmpmeta>") == (
        {},
        [],
    )


def test_entity_expansion_is_refused_before_parsing() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<x:xmpmeta>&lol2;</x:xmpmeta>"
    )
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'

    for data in (bomb, external):
        assert read(data) == ({}, ["xmp: DTD or entity declarations are not allowed; skipped"])


def test_huge_packets_are_skipped() -> None:
    data = packet("<dc:format>" + "x" * MAX_XMP_BYTES + "</dc:format>")

    props, notes = read(data)

    assert props == {}
    assert notes == [f"xmp: packet of {len(data)} bytes is over the {MAX_XMP_BYTES} limit; skipped"]


def test_malformed_xml_is_noted() -> None:
    assert read(b"<x:xmpmeta><rdf:RDF><unclosed") == ({}, ["xmp: malformed XML; skipped"])


def test_non_utf8_bytes_are_replaced_and_noted() -> None:
    data = packet("<dc:rights>(c) Jos\xe9</dc:rights>").replace("Jos\xe9".encode(), b"Jos\xe9")

    props, notes = read(data)

    assert props == {"dc:rights": "(c) Jos\ufffd"}
    assert notes == ["xmp: not valid UTF-8; undecodable bytes replaced"]


def test_counts_lengths_and_depth_are_capped() -> None:
    many = "".join(f"<dc:k{i}>v</dc:k{i}>" for i in range(MAX_PROPERTIES + 50))
    long = "<dc:description>" + "d" * (MAX_VALUE_CHARS * 3) + "</dc:description>"
    deep = '<dc:a rdf:parseType="Resource">' * 40 + "<dc:leaf>x</dc:leaf>" + "</dc:a>" * 40

    props, notes = read(packet(long + many + deep))

    assert len(props) == MAX_PROPERTIES
    assert props["dc:description"] == "d" * MAX_VALUE_CHARS
    assert not any(key.endswith("dc:leaf") for key in props)
    assert set(notes) == {
        f"xmp: values truncated to {MAX_VALUE_CHARS} characters",
        f"xmp: more than {MAX_PROPERTIES} properties; the rest skipped",
        "xmp: nested deeper than 16 levels; inner values skipped",
    }


def test_tabs_and_newlines_are_kept_and_carriage_returns_dropped() -> None:
    props, _ = read(packet("<dc:format>a&#x9;b&#xD;&#xA;c</dc:format>"))

    assert props == {"dc:format": "a\tb\nc"}
