"""Multipart form fields must decode in the request's charset (UTF-8 unless the request names another).

Starlette decodes a form field (not a file) that is invalid in that charset as latin-1 instead,
silently: ``POST /search/image`` with a ``filters`` field of invalid UTF-8 bytes then filtered on
mojibake and answered 200 with no hits. The route class :class:`Utf8FormRoute` reads the body of
a ``multipart/form-data`` request first (it is bounded by the ``BodyLimit`` middleware, and
Starlette parses the form from the cached body afterwards), parses it with the same parser
(``python_multipart``) and answers a 422 naming the first such field (its name, or the part's
position when the name itself is undecodable). File parts are bytes and are not checked.
"""

from __future__ import annotations

import codecs

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def undecodable_fields(content_type: str, body: bytes) -> list[tuple[str, int]]:
    """``(field name, byte offset)`` of each non-file part whose name or value does not decode in
    the request's charset; ``[]`` for anything that is not well-formed multipart (Starlette answers that)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        return []
    try:
        codec = codecs.lookup(params.get(b"charset", b"utf-8").decode("latin-1")).name
    except LookupError:  # Starlette reads an unknown charset as latin-1, which decodes any byte
        return []
    parts: list[dict] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}

    def on_part_begin():
        parts.append({"disposition": b"", "data": bytearray(), "file": False})

    def on_header_field(data, start, end):
        header["field"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        if header["field"].lower() == b"content-disposition":
            parts[-1]["disposition"] = header["value"]
        header["field"], header["value"] = b"", b""

    def on_headers_finished():
        parts[-1]["file"] = b"filename" in parse_options_header(parts[-1]["disposition"])[1]

    def on_part_data(data, start, end):
        if not parts[-1]["file"]:  # a file's bytes are not kept
            parts[-1]["data"] += data[start:end]

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except Exception:  # noqa: BLE001 - malformed multipart: Starlette's own parser refuses it
        return []
    bad = []
    for number, part in enumerate(parts, start=1):
        if part["file"]:
            continue
        raw_name = parse_options_header(part["disposition"])[1].get(b"name", b"")
        try:
            name = raw_name.decode(codec)
        except UnicodeDecodeError:
            bad.append((f"part {number} (its name)", 0))
            continue
        try:
            bytes(part["data"]).decode(codec)
        except UnicodeDecodeError as exc:
            bad.append((name, exc.start))
    return bad


class Utf8FormRoute(APIRoute):
    """A route that refuses (422) multipart form fields not valid in the request's charset (module docstring)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request):
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                bad = undecodable_fields(content_type, await request.body())
                if bad:
                    name, offset = bad[0]
                    raise RequestValidationError([{
                        "type": "unicode_decode", "loc": ("body", name), "input": None,
                        "msg": f"form field {name!r} is not valid UTF-8 (or the request's charset) at byte {offset}",
                    }])
            return await handler(request)

        return checked
