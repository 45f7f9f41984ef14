"""Build tools, run from the repository root (`python -m tools.lambda_zip`).

Not runtime code: the Lambda package copies only `wastesort/` and `functions/`, and the
`wastesort` distribution does not install this folder (a top-level `tools` in site-packages
would claim a generic name).
"""
