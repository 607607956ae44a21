# Build, test and benchmark targets. `make help` lists them.

GO               ?= go
BIN              := $(CURDIR)/bin
GOLANGCI_VERSION := v2.15.0
GOLANGCI         := $(BIN)/golangci-lint
BENCHTIME        ?= 2s
BENCHCOUNT       ?= 1

.PHONY: help run test test-short bench lint fmt tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the local runner on ./data
	$(GO) run ./local

test: ## vet and run every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## run the tests without the race detector
	$(GO) test -count=1 ./...

bench: ## run the benchmarks beside their raw-SQLite baselines
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./...

lint: $(GOLANGCI) ## go vet and golangci-lint
	$(GO) vet ./...
	$(GOLANGCI) run ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

tools: $(GOLANGCI) ## install the linter into ./bin

$(GOLANGCI):
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

clean: ## remove build output and local data
	rm -rf $(BIN) data
