"""The service's routers, one module per concern; each ``router(S, settings)`` builds an ``APIRouter``
whose handlers read the loaded index, encoders and calibration from ``request.app.state``
(set by :func:`gcl.service.app.create_app`). ``S`` is :func:`gcl.service.schemas.build_schemas`'s
namespace: the models carry the settings' limits, so routers are built per app."""
