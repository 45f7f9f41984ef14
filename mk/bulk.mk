# make targets for bulk classification in the cloud (infra/constructs/bulk.py, functions/bulk)
# Upload the images under the stage's BulkInputUri (a stack output) first, e.g.
#   aws s3 sync photos/ s3://<BulkBucket>/input/season-2026/
#   make bulk INPUT=s3://<BulkBucket>/input/season-2026/ MODEL=v20261206-e7841cfe STAGE=prod
INPUT ?=
BULK_ARGS ?=
.PHONY: bulk

bulk: $(STAMP)  ## classify an S3 prefix with Step Functions (AWS credentials; INPUT=s3://... MODEL=<version> [STAGE] [BULK_ARGS=--wait])
	@test -n "$(INPUT)" || { echo "bulk: set INPUT=s3://<BulkBucket>/input/<job>/ (see docs/ops.md)"; exit 2; }
	@test -n "$(MODEL)" || { echo "bulk: set MODEL=<version id> (a job pins one version)"; exit 2; }
	$(PY) -m tools.bulk_start "$(INPUT)" "$(MODEL)" --stack wastesort-$(STAGE) $(BULK_ARGS)
