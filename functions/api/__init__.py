"""The classification API: one FastAPI app, served by uvicorn locally and by Mangum on Lambda.

`functions.api.app:create_app` builds it (uvicorn: `--factory`), `functions.api.handler:handler`
is the Lambda entry point; `python -m tools.lambda_zip` builds the deployment zip.
"""
