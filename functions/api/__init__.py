"""The classification API: one FastAPI app, served by uvicorn locally and by Mangum on Lambda.

`functions.api.app:create_app` builds it, `functions.api.handler:handler` is the Lambda entry
point, `python -m functions.api.package` builds the deployment zip.
"""
