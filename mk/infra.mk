# make targets for the infra part (CDK app in infra/, cdk.json at the root)
# The aws-cdk CLI is an npm package; npx fetches it once. Synth needs no AWS account.
CDK ?= npx --yes aws-cdk@2
STAGE ?= dev
MODEL ?=
MODEL_ALIAS ?= production
SHA256 ?=
CDK_ARGS ?=
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
# A pinned MODEL (a version id) gets a canary deployment; without one the stage follows an alias.
CDK_CONTEXT = -c stage=$(STAGE) \
	$(if $(MODEL),-c model_version=$(MODEL),-c model_alias=$(MODEL_ALIAS)) \
	$(if $(SHA256),-c model_sha256=$(SHA256))
CDK_STACK = wastesort-$(STAGE)

.PHONY: synth diff deploy deploy-registry
synth: $(STAMP)  ## cdk synth the stage (needs `make package`; STAGE=dev MODEL=<version>)
	$(CDK) synth $(CDK_STACK) --quiet --no-notices $(CDK_CONTEXT) $(CDK_ARGS)

diff: $(STAMP)  ## cdk diff against the deployed stage (AWS credentials; STAGE, MODEL)
	$(CDK) diff $(CDK_STACK) --no-notices $(CDK_CONTEXT) $(CDK_ARGS)

deploy: $(STAMP)  ## deploy a model: make deploy MODEL=v2026... STAGE=prod (canary, auto-rollback)
	@test -n "$(MODEL)" || { echo "deploy: set MODEL=<version id> (see docs/ops.md)"; exit 2; }
	$(CDK) deploy $(CDK_STACK) --no-notices $(CDK_CONTEXT) $(CDK_ARGS)

deploy-registry: $(STAMP)  ## a new stage's first step: only the buckets and device access (STAGE)
	$(CDK) deploy $(CDK_STACK) --no-notices -c stage=$(STAGE) -c registry_only=true $(CDK_ARGS)
