"""Request and response models of the HTTP API, with the limits of a :class:`ServiceSettings` built in.

The limits live in the models (and so in the OpenAPI spec) rather than in the handlers, so a
client, the spec and the validator agree on them. Unknown keys in a request body are a 422, and
types are strict: ``"10"``, ``true`` or ``10.0`` for an integer is a 422, not a 10 or a 1.

Text is Unicode: a lone UTF-16 surrogate (``"\\ud800"`` in JSON) anywhere is a 422 (pydantic
refuses it as ``string_unicode``). Document ids are 1..``MAX_ID_CHARS`` characters, none of them a
control character (Unicode category Cc: U+0000..U+001F, U+007F..U+009F), a surrogate (Cs) or
U+FFFD, the character that undecodable bytes become. Integer field values lie within
``+-MAX_FIELD_INT`` (2**53 - 1: JavaScript and most JSON readers hold numbers as doubles).
"""

from __future__ import annotations

import unicodedata
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from gcl.index.hybrid import FUSIONS, MODES, HybridParams
from gcl.service.settings import ServiceSettings

MAX_ID_CHARS = 256
MAX_FIELD_INT = 2**53 - 1


def check_doc_id(doc_id: str) -> str:
    """``doc_id`` if every character is in the id alphabet (see the module docstring), else ValueError."""
    for i, c in enumerate(doc_id):
        if c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs"):
            raise ValueError(f"document ids may not hold control characters, surrogates or U+FFFD "
                             f"(U+{ord(c):04X} at position {i})")
    return doc_id


def _float_not_int(value: Any) -> Any:
    """A float field value must be sent as a float: an integer out of range is refused, not rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"integer field values must lie within +-{MAX_FIELD_INT}")
    return value


class Strict(BaseModel):  # a request body: unknown keys and loose types are 422s
    model_config = ConfigDict(extra="forbid", strict=True)


def _field_types(s: ServiceSettings) -> SimpleNamespace:
    """The annotated types with ``s``'s limits: ``DocId``, ``FieldName``, ``FieldValue``, ``FilterValue``,
    and ``Filters`` (/search/image's filters form field, a JSON text)."""
    DocId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(check_doc_id)]
    FieldName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
    FieldValue = Union[
        Annotated[str, StringConstraints(max_length=s.max_field_chars)],
        bool,
        Annotated[int, Field(ge=-MAX_FIELD_INT, le=MAX_FIELD_INT)],
        Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_float_not_int)],
        None,
    ]
    FilterValue = Annotated[str, StringConstraints(max_length=s.max_field_chars)]
    Filters = TypeAdapter(Annotated[dict[FieldName, FilterValue], Field(max_length=s.max_fields)],
                          config=ConfigDict(strict=True))
    return SimpleNamespace(DocId=DocId, FieldName=FieldName, FieldValue=FieldValue, FilterValue=FilterValue,
                           Filters=Filters)


def _search_request(s: ServiceSettings, T: SimpleNamespace) -> type:
    """``SearchRequest`` with ``s``'s limits (``T``: :func:`_field_types`)."""
    FieldName, FilterValue = T.FieldName, T.FilterValue

    class SearchRequest(Strict):
        """A text query; results ``offset .. offset + k - 1`` of the ranking (``offset + k <= max_k``)."""

        query: Annotated[str, StringConstraints(min_length=1, max_length=s.max_query_chars, pattern=r"\S")] = Field(
            description="query text (not blank)")
        k: int = Field(default=s.page_size, ge=1, le=s.max_k, description="results to return")
        offset: int = Field(default=0, ge=0, le=s.max_k - 1, description="results to skip (paging)")
        filters: Optional[dict[FieldName, FilterValue]] = Field(
            default=None, max_length=s.max_fields,
            description="keep documents whose field equals the string exactly (all pairs must match)")
        mode: Literal[MODES] = Field(
            default=MODES[0], description="dense: cosine of the query vector; lexical: BM25 over the stored text "
                                         "fields; hybrid: both, fused by `fusion` (directory index only)")
        fusion: Literal[FUSIONS] = Field(
            default=HybridParams.fusion, description="mode hybrid: rrf (sum of 1/(60 + rank)) or convex "
                                                     "(alpha * min-max cosine + (1 - alpha) * min-max BM25)")
        alpha: float = Field(default=HybridParams.alpha, ge=0, le=1, allow_inf_nan=False,
                             description="mode hybrid, fusion convex: the weight of the dense score")
        min_relevance: Optional[float] = Field(
            default=None, allow_inf_nan=False,
            description="keep only hits whose calibrated relevance (expected judged grade) is at least this; needs "
                        "a calibrated model and mode dense; must lie in the calibration's grade range")

        @model_validator(mode="after")
        def _window(self):
            if self.offset + self.k > s.max_k:
                raise ValueError(f"offset + k must be <= {s.max_k} (got {self.offset} + {self.k})")
            return self

        @model_validator(mode="after")
        def _fusion_options(self):
            given = self.model_fields_set
            if self.mode != "hybrid" and given & {"fusion", "alpha"}:
                raise ValueError(f"fusion and alpha apply to mode 'hybrid', not {self.mode!r}")
            if "alpha" in given and self.fusion != "convex":
                raise ValueError("alpha applies to fusion 'convex' (rrf uses ranks only)")
            return self

    return SearchRequest


def _documents(s: ServiceSettings, T: SimpleNamespace) -> SimpleNamespace:
    """The document request and write-response models with ``s``'s limits."""
    DocId, FieldName, FieldValue = T.DocId, T.FieldName, T.FieldValue

    class DocumentIn(Strict):
        fields: dict[FieldName, FieldValue] = Field(
            max_length=s.max_fields,
            description="stored fields; the model's document fields are encoded (fused) into the vector")

    class DocumentWithId(DocumentIn):
        id: DocId

    class DocumentBatch(Strict):
        documents: list[DocumentWithId] = Field(min_length=1, max_length=s.max_batch)

    class WriteResponse(BaseModel):
        created: list[str]
        updated: list[str]

    class DocumentOut(BaseModel):
        id: str
        fields: dict[str, Any]
        vector: Optional[list[float]] = None

    class DeleteResponse(BaseModel):
        deleted: str

    return SimpleNamespace(**{c.__name__: c for c in (
        DocumentIn, DocumentWithId, DocumentBatch, WriteResponse, DocumentOut, DeleteResponse)})


def _responses() -> SimpleNamespace:
    """The response models (no limits: they describe what the service sends)."""

    class Hit(BaseModel):
        rank: int = Field(description="1-based rank in the whole ranking (offset included)")
        doc_id: str
        score: float = Field(description="cosine similarity (mode dense), BM25 score (lexical) or fused score (hybrid)")
        relevance: Optional[float] = Field(
            default=None, description="calibrated relevance: the expected judged grade for this cosine (mode dense, "
                                      "when the model has a calibration; else null)")
        fields: dict[str, Any]

    class SearchResponse(BaseModel):
        query: Optional[str] = None
        k: int
        offset: int
        hits: list[Hit]
        has_more: bool = Field(description="whether a next page exists (within max_k)")
        took_ms: float

    class Health(BaseModel):
        status: str
        documents: int
        dim: int
        model: Optional[str]
        image_search: bool

    class Error(BaseModel):
        detail: Any

    return SimpleNamespace(**{c.__name__: c for c in (Hit, SearchResponse, Health, Error)})


def build_schemas(s: ServiceSettings) -> SimpleNamespace:
    """The pydantic models for settings ``s`` (a namespace of classes, plus ``DocId`` and ``Filters``)."""
    T = _field_types(s)
    return SimpleNamespace(SearchRequest=_search_request(s, T), **vars(_responses()), **vars(_documents(s, T)),
                           DocId=T.DocId, Filters=T.Filters)
