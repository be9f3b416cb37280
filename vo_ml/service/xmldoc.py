"""Building and sending the XML documents of the service (UWS, VOSI) with lxml.

One way to add an element (attributes left out when None, text from any value), to set the
XML Schema instance attributes the IVOA schemas use (``xsi:type``, ``xsi:nil``), and to send a
document, so every document is written alike.
"""

from __future__ import annotations

from flask import Response
from lxml import etree

__all__ = ["XSI", "sub", "xsi", "xml_response"]

XSI = "http://www.w3.org/2001/XMLSchema-instance"


def sub(parent: etree._Element, tag: str, text: object = None,
        **attributes: str | None) -> etree._Element:
    """A new last child of ``parent``; attributes given as None are left out."""
    element = etree.SubElement(parent, tag,
                               {k: v for k, v in attributes.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def xsi(element: etree._Element, name: str, value: str) -> etree._Element:
    """``element`` with the XML Schema instance attribute ``name`` (``type``, ``nil``) set."""
    element.set(f"{{{XSI}}}{name}", value)
    return element


def xml_response(root: etree._Element) -> Response:
    """The document under ``root``, with its declaration, as a ``text/xml`` response."""
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return Response(body, mimetype="text/xml")
