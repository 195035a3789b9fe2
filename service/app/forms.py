"""What the service reads in a multipart/form-data upload (POST /v1/audio/transcriptions), and how Ollama reads it.

Ollama's TranscriptionMiddleware (ollama/ollama middleware/openai.go) parses the form with Go's net/http and reads
FormValue("model"), FormFile("file"), FormValue("response_format"), FormValue("language") and FormValue("prompt").
FormValue is the first value of a field; a part is a value when its Content-Disposition is form-data with a name
and no filename, a file when it has a filename (golang/go src/mime/multipart/formdata.go). The service reads the
model (checked against the allowlist) and the response format with python-multipart, the parser Starlette uses,
and forwards the body byte for byte.

Two parsers can read one hostile body differently (RFC 2231 `name*=`, which Go decodes and RFC 7578 forbids,
quoted-printable parts, ...). So that Ollama runs the model checked here whatever the body says, the service also
sends that model in the query string: Go's Request.Form holds the query's values before the multipart ones, so
FormValue("model") returns it (golang/go src/net/http/request.go, ParseForm and ParseMultipartForm). The client's
own query string is not forwarded (on no route). The Content-Type sent to Ollama is rebuilt from the boundary read
here, so Go splits the body with the same boundary and never reads it as another kind of form.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MEDIA_TYPE = "multipart/form-data"
# The fields the service reads itself (the first value of each, as FormValue).
READ = ("model", "response_format")
# Go's ReadForm reads at most 1000 parts ("multipart: message too large" beyond). Here it also bounds the time one
# body can take: each part costs a few Python callbacks, and 20 MiB of empty parts would block the loop for seconds.
MAX_PARTS = 1000
# RFC 2046 section 5.1.1: 1 to 70 of these, not ending with a space. Nothing here needs escaping inside quotes.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# python-multipart logs a warning for every malformed body before raising; the client gets that as a 400 and the
# access log has the request, so the warning would only say it a second time.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


class FormError(ValueError):
    """The upload is not a multipart/form-data body the service can read (a 400)."""


@dataclass(frozen=True, slots=True)
class Upload:
    content_type: str  # for Ollama: multipart/form-data with the boundary the body was read with
    fields: dict[str, str]  # the first value of each READ field the body has


def boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type; FormError (in Go's words where Go has them) otherwise."""
    media_type, params = parse_options_header(content_type)
    if media_type != MEDIA_TYPE.encode():
        raise FormError("request Content-Type isn't multipart/form-data")
    value = params.get(b"boundary")
    if not value:
        raise FormError("no multipart boundary param in Content-Type")
    if not _BOUNDARY.fullmatch(value):
        raise FormError("the multipart boundary must be 1 to 70 characters as RFC 2046 allows them")
    return value


def read(content_type: str | None, body: bytes) -> Upload:
    """The boundary and the READ fields of an upload, or FormError saying why it cannot be read."""
    separator = boundary(content_type)
    fields: dict[str, str] = {}
    part: dict = {}
    parts: list[None] = []

    def part_begin() -> None:
        parts.append(None)
        if len(parts) > MAX_PARTS:
            raise FormError("multipart: message too large")
        part.clear()
        part.update(headers=[], field=b"", value=b"", chunks=None)

    def header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def header_end() -> None:
        part["headers"].append((part["field"].lower(), part["value"]))
        part["field"] = part["value"] = b""

    def headers_finished() -> None:
        # textproto's Header.Get: the first Content-Disposition counts.
        disposition = next((v for k, v in part["headers"] if k == b"content-disposition"), b"")
        kind, params = parse_options_header(disposition)
        name = params.get(b"name", b"").decode("latin-1")
        if kind == b"form-data" and name in READ and name not in fields and not params.get(b"filename"):
            part["chunks"] = []
            part["name"] = name

    def part_data(data: bytes, start: int, end: int) -> None:
        if part["chunks"] is not None:
            part["chunks"].append(data[start:end])

    def part_end() -> None:
        if part["chunks"] is not None:
            fields[part["name"]] = b"".join(part["chunks"]).decode("utf-8", "replace")

    ended = []
    parser = MultipartParser(
        separator,
        {
            "on_part_begin": part_begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_headers_finished": headers_finished,
            "on_part_data": part_data,
            "on_part_end": part_end,
            "on_end": lambda: ended.append(True),
        },
    )
    try:
        parser.write(body)
    except FormParserError as exc:
        raise FormError(f"the multipart body is malformed: {exc}") from None
    if not ended:
        raise FormError("the multipart body ends before its closing boundary")
    return Upload(f'{MEDIA_TYPE}; boundary="{separator.decode()}"', fields)
