"""Small Lambda functions around the API: the CodeDeploy pre-traffic hook."""
