"""How Go's net/http reads a multipart/form-data request, for the double's /v1/audio/transcriptions.

Ollama's TranscriptionMiddleware (ollama/ollama middleware/openai.go) calls Request.ParseMultipartForm, then
FormValue and FormFile (golang/go src/net/http/request.go, src/mime/multipart/formdata.go):
  * the Content-Type must be multipart/form-data with a boundary, or ParseMultipartForm fails with
    "request Content-Type isn't multipart/form-data" / "no multipart boundary param in Content-Type";
  * a part counts when its Content-Disposition is form-data with a name; with a non-empty filename it is a file,
    otherwise a value;
  * Request.Form holds the query string's values first, then the multipart values (ParseForm, then
    ParseMultipartForm appends), so FormValue returns a field's query value when the query has one;
  * FormFile returns the first file of a name, or ErrMissingFile ("http: no such file");
  * ReadForm reads at most 1000 parts (ErrMessageTooLarge: "multipart: message too large").
The body is split with python-multipart. Where a malformed body makes Go fail, the message after
"failed to parse multipart form: " is python-multipart's, not Go's; Go's decoding of RFC 2231 `name*=` parameters
and quoted-printable parts is not played (the service never relies on either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MISSING_FILE = "http: no such file"
MAX_PARTS = 1000  # ReadForm's maxParts: ErrMessageTooLarge beyond


@dataclass
class Form:
    values: dict[str, list[str]] = field(default_factory=dict)  # Request.Form: the query's values first
    files: dict[str, list[bytes]] = field(default_factory=dict)  # MultipartForm.File: each file's content

    def value(self, name: str) -> str:
        """Request.FormValue."""
        return (self.values.get(name) or [""])[0]

    def file(self, name: str) -> bytes:
        """The content of Request.FormFile; ValueError(ErrMissingFile's text) when there is none."""
        files = self.files.get(name)
        if not files:
            raise ValueError(MISSING_FILE)
        return files[0]


def parse(content_type: str | None, body: bytes, query: str) -> Form:
    """Request.ParseMultipartForm; ValueError with the reason it fails."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise ValueError("request Content-Type isn't multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("no multipart boundary param in Content-Type")
    form = Form(values={k: list(v) for k, v in parse_qs(query, keep_blank_values=True).items()})
    part: dict = {}
    parts: list[None] = []

    def part_begin() -> None:
        parts.append(None)
        if len(parts) > MAX_PARTS:
            raise ValueError("multipart: message too large")
        part.clear()
        part.update(headers=[], field=b"", value=b"", data=[])

    def header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def header_end() -> None:
        part["headers"].append((part["field"].lower(), part["value"]))
        part["field"] = part["value"] = b""

    def part_data(data: bytes, start: int, end: int) -> None:
        part["data"].append(data[start:end])

    def part_end() -> None:
        disposition = next((v for k, v in part["headers"] if k == b"content-disposition"), b"")
        kind, params = parse_options_header(disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            return  # FormName() is "": the part is skipped
        content = b"".join(part["data"])
        if params.get(b"filename"):
            form.files.setdefault(name, []).append(content)
        else:
            form.values.setdefault(name, []).append(content.decode("utf-8", "replace"))

    ended = []
    callbacks = {
        "on_part_begin": part_begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_part_data": part_data,
        "on_part_end": part_end,
        "on_end": lambda: ended.append(True),
    }
    try:
        MultipartParser(boundary, callbacks).write(body)
    except FormParserError as exc:
        raise ValueError(str(exc)) from None
    if not ended:
        raise ValueError("multipart: NextPart: EOF")
    return form
