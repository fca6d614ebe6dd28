"""SOAP 1.1 / EWS XML plumbing: namespaces, envelope, response messages and faults.

Shapes follow Microsoft's published EWS examples: every response carries the
``ServerVersionInfo`` SOAP header, every operation answers
``<m:{Op}Response><m:ResponseMessages><m:{Op}ResponseMessage ResponseClass=...>``, and
request-level errors (throttling, impersonation) are SOAP faults with the EWS error code in
``detail/e:ResponseCode`` (HTTP 500), as Exchange sends them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

NSMAP = {"s": SOAP, "m": MNS, "t": TNS}

# Exchange Server 2016 CU23. Real 2016 servers report the schema version string "V2017_07_11",
# which clients (exchangelib included) map back to the "Exchange2016" API version they asked for.
SERVER_VERSION = {
    "MajorVersion": "15",
    "MinorVersion": "1",
    "MajorBuildNumber": "2507",
    "MinorBuildNumber": "6",
    "Version": "V2017_07_11",
}

# Exchange's own wording for the errors the sandbox produces.
MESSAGES = {
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorImpersonateUserDenied": "The account does not have permission to impersonate the requested user.",
    "ErrorInternalServerError": "An internal server error occurred. The operation failed.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorInvalidOperation": "The requested operation is not valid.",
    "ErrorInvalidPropertySet": "The property cannot be set on this item.",
    "ErrorInvalidRequest": "The request is invalid.",
    "ErrorInvalidRestriction": "The restriction or sort order is too complex for this operation.",
    "ErrorInvalidSyncStateData": "Synchronization state data is corrupt or otherwise invalid.",
    "ErrorIrresolvableConflict": "The send or update operation could not be performed because the change key "
    "passed in the request does not match the current change key for the item.",
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorNameResolutionMultipleResults": "Multiple results were found.",
    "ErrorNameResolutionNoResults": "No results were found.",
    "ErrorNonExistentMailbox": "The SMTP address has no mailbox associated with it.",
    "ErrorSchemaValidation": "The request failed schema validation.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorUnsupportedPathForQuery": "The property path is not supported for restrictions or sort orders.",
    "ErrorUnsupportedQueryFilter": "The query filter is not supported.",
}


class EwsError(Exception):
    """An error that becomes one ``ResponseClass="Error"`` response message."""

    def __init__(self, code: str, text: str | None = None, values: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.text = text or MESSAGES.get(code, code)
        self.values = values or {}


class SoapFault(Exception):
    """A request-level error that becomes a SOAP fault (HTTP 500), as Exchange answers it."""

    def __init__(self, code: str, text: str | None = None, values: dict[str, str] | None = None,
                 status: int = 500) -> None:
        super().__init__(code)
        self.code = code
        self.text = text or MESSAGES.get(code, code)
        self.values = values or {}
        self.status = status


def m(tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    el = etree.Element(f"{{{MNS}}}{tag}", {k: _attr(v) for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def t(tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    el = etree.Element(f"{{{TNS}}}{tag}", {k: _attr(v) for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


# -- characters XML 1.0 cannot carry ----------------------------------------------------------
# Exchange (.NET's XmlWriter without character checking) writes a control character in a
# subject, body or name as a character reference (``&#x7;``), which is not well-formed XML
# 1.0 but what clients such as exchangelib meet and parse with a recovering parser. lxml
# refuses such characters in text, so they travel through the tree as a marker built from
# the noncharacters U+FDD0/U+FDD1 (legal in XML) and become references in ``serialize``.
# A real U+FDD0/U+FDD1 is marked too, so the markers are unambiguous.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ufdd0\ufdd1\ud800-\udfff]")
_MARKED = re.compile("\ufdd0([0-9a-f]+)\ufdd1".encode())


def xml_text(value: str) -> str:
    """``value`` with every character XML cannot hold marked for a character reference."""
    if _XML_ILLEGAL.search(value) is None:
        return value
    return _XML_ILLEGAL.sub(lambda m: f"\ufdd0{ord(m.group()):x}\ufdd1", value)


def _references(data: bytes) -> bytes:
    if b"\xef\xb7\x90" not in data:  # U+FDD0 in UTF-8: no marker, nothing to do
        return data
    return _MARKED.sub(lambda m: b"&#x" + m.group(1) + b";", data)


_T_TAGS: dict[str, str] = {}
_SubElement = etree.SubElement


def sub_t(parent: etree._Element, tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    qname = _T_TAGS.get(tag)
    if qname is None:
        qname = _T_TAGS.setdefault(tag, f"{{{TNS}}}{tag}")
    el = _SubElement(parent, qname, {k: _attr(v) for k, v in attrs.items()}) if attrs else _SubElement(parent, qname)
    if text is not None:
        el.text = xml_text(text)
    return el


def sub_m(parent: etree._Element, tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    el = etree.SubElement(parent, f"{{{MNS}}}{tag}", {k: _attr(v) for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return xml_text(str(value))


def xml_bool(value: bool) -> str:
    return "true" if value else "false"


def xml_datetime(value: datetime) -> str:
    """EWS answers datetimes in UTC with whole seconds: ``2024-05-01T09:30:00Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# -- envelopes ---------------------------------------------------------------------------------

def _envelope(with_header: bool = True) -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    if with_header:
        header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
        etree.SubElement(header, f"{{{TNS}}}ServerVersionInfo", SERVER_VERSION,
                         nsmap={"h": TNS, "xsi": XSI, "xsd": "http://www.w3.org/2001/XMLSchema"})
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    return envelope, body


def serialize(envelope: etree._Element) -> bytes:
    return _references(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def response_envelope(operation: str, messages: list[etree._Element]) -> bytes:
    envelope, body = _envelope()
    response = etree.SubElement(body, f"{{{MNS}}}{operation}Response", nsmap={"m": MNS, "t": TNS})
    container = etree.SubElement(response, f"{{{MNS}}}ResponseMessages")
    container.extend(messages)
    return serialize(envelope)


def success_message(operation: str) -> etree._Element:
    msg = m(f"{operation}ResponseMessage", ResponseClass="Success")
    sub_m(msg, "ResponseCode", "NoError")
    return msg


def error_message(operation: str, error: EwsError, response_class: str = "Error") -> etree._Element:
    msg = m(f"{operation}ResponseMessage", ResponseClass=response_class)
    sub_m(msg, "MessageText", error.text)
    sub_m(msg, "ResponseCode", error.code)
    sub_m(msg, "DescriptiveLinkKey", "0")
    if error.values:
        xml = sub_m(msg, "MessageXml")
        for name, value in error.values.items():
            sub_t(xml, "Value", str(value), Name=name)
    return msg


def fault_envelope(code: str, text: str, values: dict[str, str] | None = None) -> bytes:
    """A SOAP fault in Exchange's shape (the one exchangelib's ``_raise_soap_errors`` reads)."""
    envelope, body = _envelope()
    fault = etree.SubElement(body, f"{{{SOAP}}}Fault")
    faultcode = etree.SubElement(fault, "faultcode", nsmap={"a": TNS})
    faultcode.text = f"a:{code}"
    faultstring = etree.SubElement(fault, "faultstring")
    faultstring.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    faultstring.text = text
    detail = etree.SubElement(fault, "detail")
    etree.SubElement(detail, f"{{{ENS}}}ResponseCode", nsmap={"e": ENS}).text = code
    etree.SubElement(detail, f"{{{ENS}}}Message", nsmap={"e": ENS}).text = text
    if values:
        xml = etree.SubElement(detail, f"{{{TNS}}}MessageXml", nsmap={"t": TNS})
        for name, value in values.items():
            etree.SubElement(xml, f"{{{TNS}}}Value", Name=name).text = str(value)
    return serialize(envelope)


def client_fault(text: str) -> bytes:
    """A plain SOAP client fault (unparseable request), without EWS detail."""
    envelope, body = _envelope(with_header=False)
    fault = etree.SubElement(body, f"{{{SOAP}}}Fault")
    etree.SubElement(fault, "faultcode").text = "s:Client"
    etree.SubElement(fault, "faultstring").text = text
    return serialize(envelope)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)


def parse_request(body: bytes) -> tuple[etree._Element | None, etree._Element]:
    """Return (SOAP Header or None, the operation element inside Body)."""
    root = etree.fromstring(body, _PARSER)
    if root.tag != f"{{{SOAP}}}Envelope":
        raise ValueError("not a SOAP 1.1 envelope")
    header = root.find(f"{{{SOAP}}}Header")
    body_el = root.find(f"{{{SOAP}}}Body")
    if body_el is None or len(body_el) == 0:
        raise ValueError("SOAP Body is empty")
    return header, body_el[0]
