"""``PUT/GET/DELETE /documents/{id}`` and ``POST /documents`` (a batch, all or none)."""

from gcl.service.routers.auth import error_responses, key_dependencies
from gcl.service.settings import ServiceSettings


def router(S, settings: ServiceSettings):
    from fastapi import APIRouter, HTTPException, Query, Request, Response

    api = APIRouter(tags=["documents"], dependencies=key_dependencies(settings))
    errors, not_found = error_responses(S), error_responses(S, 404)

    @api.put("/documents/{doc_id:path}", response_model=S.WriteResponse,
             responses={**errors, 201: {"model": S.WriteResponse}})
    def put_document(doc_id: S.DocId, doc: S.DocumentIn, response: Response, request: Request):
        """Add a document (201) or replace one (200): vector re-encoded, fields replaced."""
        state, fields = request.app.state, [dict(doc.fields)]
        result = state.store.upsert([doc_id], state.encoders.documents([doc_id], fields), fields)
        response.status_code = 201 if result.created else 200
        return S.WriteResponse(created=result.created, updated=result.updated)

    @api.post("/documents", response_model=S.WriteResponse, responses=errors)
    def post_documents(batch: S.DocumentBatch, request: Request):
        """Add or replace a batch of documents; all or none (one logged write)."""
        state, ids = request.app.state, [d.id for d in batch.documents]
        if len(set(ids)) != len(ids):
            dup = next(d for i, d in enumerate(ids) if d in ids[:i])
            raise HTTPException(422, f"document id {dup!r} appears twice in the batch")
        fields = [dict(d.fields) for d in batch.documents]
        result = state.store.upsert(ids, state.encoders.documents(ids, fields), fields)
        return S.WriteResponse(created=result.created, updated=result.updated)

    @api.get("/documents/{doc_id:path}", response_model=S.DocumentOut, responses=not_found)
    def get_document(doc_id: S.DocId, request: Request,
                     vector: bool = Query(False, description="include the stored unit vector")):
        doc = request.app.state.store.get(doc_id)
        if doc is None:
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return S.DocumentOut(id=doc.doc_id, fields=doc.fields, vector=doc.vector.tolist() if vector else None)

    @api.delete("/documents/{doc_id:path}", response_model=S.DeleteResponse, responses=not_found)
    def delete_document(doc_id: S.DocId, request: Request):
        if not request.app.state.store.delete([doc_id]):
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return S.DeleteResponse(deleted=doc_id)

    return api
