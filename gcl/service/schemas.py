"""Request and response models of the HTTP API, with the limits of a :class:`ServiceSettings` built in.

The limits live in the models (and so in the OpenAPI spec) rather than in the handlers, so a
client, the spec and the validator agree on them. Unknown keys in a request body are a 422.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gcl.service.settings import ServiceSettings

MAX_ID_CHARS = 256


def build_schemas(s: ServiceSettings) -> SimpleNamespace:
    """The pydantic models for settings ``s`` (a namespace of classes)."""
    DocId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    FieldName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
    FieldValue = Union[
        Annotated[str, StringConstraints(max_length=s.max_field_chars)],
        bool,
        int,
        Annotated[float, Field(allow_inf_nan=False)],
        None,
    ]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class SearchRequest(Strict):
        """A text query; results ``offset .. offset + k - 1`` of the ranking (``offset + k <= max_k``)."""

        query: Annotated[str, StringConstraints(min_length=1, max_length=s.max_query_chars, pattern=r"\S")] = Field(
            description="query text (not blank)")
        k: int = Field(default=s.page_size, ge=1, le=s.max_k, description="results to return")
        offset: int = Field(default=0, ge=0, le=s.max_k - 1, description="results to skip (paging)")
        filters: Optional[dict[FieldName, Annotated[str, StringConstraints(max_length=s.max_field_chars)]]] = Field(
            default=None, max_length=s.max_fields,
            description="keep documents whose field equals the string exactly (all pairs must match)")

        @model_validator(mode="after")
        def _window(self):
            if self.offset + self.k > s.max_k:
                raise ValueError(f"offset + k must be <= {s.max_k} (got {self.offset} + {self.k})")
            return self

    class Hit(BaseModel):
        rank: int = Field(description="1-based rank in the whole ranking (offset included)")
        doc_id: str
        score: float = Field(description="cosine similarity")
        fields: dict[str, Any]

    class SearchResponse(BaseModel):
        query: Optional[str] = None
        k: int
        offset: int
        hits: list[Hit]
        has_more: bool = Field(description="whether a next page exists (within max_k)")
        took_ms: float

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

    class Health(BaseModel):
        status: str
        documents: int
        dim: int
        model: Optional[str]
        image_search: bool

    class Error(BaseModel):
        detail: Any

    return SimpleNamespace(**{c.__name__: c for c in (
        SearchRequest, Hit, SearchResponse, DocumentIn, DocumentWithId, DocumentBatch, WriteResponse, DocumentOut,
        DeleteResponse, Health, Error)}, DocId=DocId)
