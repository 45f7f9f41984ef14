# make targets for the serving part
.PHONY: serve
serve: $(STAMP)  ## serve the API on the bundled model (uvicorn, :8000)
	@echo "serve: not set up yet"
