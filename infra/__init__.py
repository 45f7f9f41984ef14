"""The CDK app: one stack per stage composing the model bucket, API, monitoring, devices."""
