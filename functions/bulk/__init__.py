"""Bulk classification in the cloud: the batch handler a Step Functions Distributed Map calls.

`functions.bulk.handler.handler` classifies one batch of S3 objects per invocation; it ships in
the same Lambda package as the API and loads models through the API's own `ModelState`.
"""
