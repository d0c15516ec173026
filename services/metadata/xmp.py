"""XMP packets flattened into {XMP path: text}, e.g. "dc:creator[1]" or "exif:Flash/exif:Fired".

XMP is attacker-controlled XML, so the parser is fenced in: packets over MAX_XMP_BYTES are not
parsed at all, DTDs (and with them entity expansion and external entities) are refused before
expat sees the bytes, and nesting depth, property count and value length are capped. Whatever
is skipped leaves a note; nothing here raises on bad data.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Final

from services.metadata.text import Notes, clean

MAX_XMP_BYTES: Final = 1 << 20
MAX_PROPERTIES: Final = 256
MAX_VALUE_CHARS: Final = 1024
MAX_DEPTH: Final = 16

_RDF: Final = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_XML: Final = "{http://www.w3.org/XML/1998/namespace}"
_ARRAYS: Final = frozenset({f"{_RDF}Bag", f"{_RDF}Seq"})
_DTD: Final = re.compile(rb"<!(DOCTYPE|ENTITY)")
_PACKET_END: Final = re.compile(rb"<\?xpacket\s+end=[^>]*\?>")
_SECTION: Final = "xmp"


def parse(packet: bytes | str, notes: Notes) -> dict[str, str]:
    raw = packet.encode("utf-8", "replace") if isinstance(packet, str) else packet
    if len(raw) > MAX_XMP_BYTES:
        notes.add(
            _SECTION, f"packet of {len(raw)} bytes is over the {MAX_XMP_BYTES} limit; skipped"
        )
        return {}
    if _DTD.search(raw):
        notes.add(_SECTION, "DTD or entity declarations are not allowed; skipped")
        return {}
    # Writers pad packets and some leave bytes after the trailer: keep the packet itself.
    if end := _PACKET_END.search(raw):
        raw = raw[: end.end()]
    raw = raw.rstrip(b"\x00 \t\r\n")
    parsed = _parse_xml(raw)
    if parsed is None:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            # XMP is UTF-8 by definition; Latin-1 from old tools is the usual culprit.
            parsed = _parse_xml(raw.decode("utf-8", "replace").encode("utf-8"))
            if parsed is not None:
                notes.add(_SECTION, "not valid UTF-8; undecodable bytes replaced")
    if parsed is None:
        notes.add(_SECTION, "malformed XML; skipped")
        return {}
    root, prefixes = parsed
    rdf = root if root.tag == f"{_RDF}RDF" else root.find(f".//{_RDF}RDF")
    walker = _Walker(prefixes, notes)
    for description in rdf.findall(f"{_RDF}Description") if rdf is not None else ():
        walker.walk(description, "", 0)
    return walker.properties


def _parse_xml(raw: bytes) -> tuple[ET.Element, dict[str, str]] | None:
    prefixes: dict[str, str] = {}
    try:
        events = ET.iterparse(io.BytesIO(raw), events=("start-ns",))
        for _, (prefix, uri) in events:
            prefixes.setdefault(uri, prefix or "ns")
        root = events.root  # type: ignore[attr-defined]
    except ET.ParseError:
        return None
    return root, prefixes


class _Walker:
    def __init__(self, prefixes: dict[str, str], notes: Notes) -> None:
        self._prefixes = prefixes
        self._notes = notes
        self.properties: dict[str, str] = {}

    def walk(self, element: ET.Element, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self._notes.add(
                _SECTION, f"nested deeper than {MAX_DEPTH} levels; inner values skipped"
            )
            return
        for name, value in element.attrib.items():
            if name == f"{_RDF}resource":
                self._emit(path, value)
            elif not name.startswith((_RDF, _XML)):
                self._emit(_join(path, self._qname(name)), value)
        children = list(element)
        if not children:
            if path and (text := (element.text or "").strip()):
                self._emit(path, text)
            return
        for child in children:
            if child.tag in _ARRAYS:
                for index, item in enumerate(child.findall(f"{_RDF}li"), start=1):
                    self.walk(item, f"{path}[{index}]", depth + 1)
            elif child.tag == f"{_RDF}Alt":
                if (chosen := _default_language(child)) is not None:
                    self.walk(chosen, path, depth + 1)
            elif child.tag == f"{_RDF}Description":
                self.walk(child, path, depth + 1)  # a struct written as a nested description
            else:
                self.walk(child, _join(path, self._qname(child.tag)), depth + 1)

    def _emit(self, path: str, value: str) -> None:
        if not path or path in self.properties:
            return
        if len(self.properties) >= MAX_PROPERTIES:
            self._notes.add(_SECTION, f"more than {MAX_PROPERTIES} properties; the rest skipped")
            return
        text = clean(value, len(value))
        if len(text) > MAX_VALUE_CHARS:
            text = text[:MAX_VALUE_CHARS]
            self._notes.add(_SECTION, f"values truncated to {MAX_VALUE_CHARS} characters")
        self.properties[path] = text

    def _qname(self, tag: str) -> str:
        if not tag.startswith("{"):
            return tag
        uri, _, local = tag[1:].partition("}")
        return f"{self._prefixes.get(uri, 'ns')}:{local}"


def _default_language(alt: ET.Element) -> ET.Element | None:
    items = alt.findall(f"{_RDF}li")
    for item in items:
        if item.get(f"{_XML}lang") == "x-default":
            return item
    return items[0] if items else None


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name
