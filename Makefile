# Build, test and benchmark targets. `make help` lists them.

GO               ?= go
BIN              := $(CURDIR)/bin
GOLANGCI_VERSION := v2.15.0
GOLANGCI         := $(BIN)/golangci-lint
BENCHTIME        ?= 2s
BENCHCOUNT       ?= 1
SOAK             ?= 10m
PG_BENCHTIME     ?= 10000x

.PHONY: help run test soak test-short test-postgres bench bench-postgres lint fmt tools clean build build-host build-ExecuteFunction build-ProjectFunction rie

FUNCTIONS := execute project
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -tags lambda.norpc -ldflags='-s -w'
RIE_VERSION := v0.0.0-20261030222936-bef5c4ba774d

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the local runner on ./data
	$(GO) run ./local

test: $(BIN)/aws-lambda-rie build-host ## vet and run every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	# The bank's invariant tests at full size (5,000 transfers from 32
	# goroutines, in one and in two processes): too slow under -race.
	$(GO) test -count=1 -timeout 10m -run 'Concurrent' ./examples/bank/
	# A one-minute soak, alone on the machine (make soak runs ten).
	EVENTCORE_SOAK_DURATION=60s $(GO) test -count=1 -timeout 10m -run '^TestSoak$$' -v ./local/

soak: ## mixed load through a local runner process for SOAK (10m): memory, goroutines, fds, p99
	EVENTCORE_SOAK_DURATION=$(SOAK) $(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v ./local/

test-postgres: ## run the PostgreSQL store's tests on a throw-away local cluster (.ci/postgres)
	.ci/postgres run $(GO) test -race -count=1 ./eventlog/postgres/...

test-short: ## run the tests without the race detector
	$(GO) test -count=1 ./...

bench: ## run the benchmarks beside their raw-SQLite baselines
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./...

PLOT_DIR  ?= docs
PLOT_RUNS := dist/bench-plot
.PHONY: bench-plot
bench-plot: $(BIN)/aws-lambda-rie build-host ## run the benchmarks that have curves (reduced sizes) and plot them into $(PLOT_DIR)/ (cmd/benchplot)
	mkdir -p $(PLOT_RUNS)
	$(GO) test -run '^$$' -bench 'BenchmarkTransfer$$' -benchtime 1500x ./examples/bank/bankbench/ > $(PLOT_RUNS)/transfer.txt || { cat $(PLOT_RUNS)/transfer.txt; exit 1; }
	# Histories up to 10,000 events: cold at 100,000 takes minutes.
	$(GO) test -run '^$$' -bench 'BenchmarkDepositByHistory/^events=(10|1000|10000)$$/' -benchtime 200x ./executor/ > $(PLOT_RUNS)/history.txt || { cat $(PLOT_RUNS)/history.txt; exit 1; }
	$(GO) test -run '^$$' -bench 'BenchmarkManagedInstances/mode=(file|litestream)$$/' -benchtime 500x ./functions/ > $(PLOT_RUNS)/managed.txt || { cat $(PLOT_RUNS)/managed.txt; exit 1; }
	$(GO) run ./cmd/benchplot -o $(PLOT_DIR) $(PLOT_RUNS)/*.txt

bench-postgres: ## run the PostgreSQL transfer benchmarks (store, executor, raw SQL) on a throw-away local cluster
	.ci/postgres run $(GO) test -p 1 -run '^$$' -bench Transfers -benchtime $(PG_BENCHTIME) -count $(BENCHCOUNT) ./eventlog/postgres/ ./examples/bank/bankbench/

lint: $(GOLANGCI) ## go vet and golangci-lint
	$(GO) vet ./...
	$(GOLANGCI) run ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

tools: $(GOLANGCI) ## install the linter into ./bin

$(GOLANGCI):
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

build: ## cross-compile both bootstraps for Lambda (linux/arm64) into dist/
	for f in $(FUNCTIONS); do GOOS=linux GOARCH=arm64 $(GOBUILD) -o dist/$$f/bootstrap ./functions/$$f || exit 1; done

build-host: ## build both bootstraps for this machine into dist/host/ (for the emulator tests)
	for f in $(FUNCTIONS); do $(GOBUILD) -o dist/host/$$f/bootstrap ./functions/$$f || exit 1; done

# sam build calls these with ARTIFACTS_DIR set (BuildMethod: makefile).
build-ExecuteFunction:
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/execute

build-ProjectFunction:
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/project

build-ExecuteManagedFunction:
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/execute

rie: $(BIN)/aws-lambda-rie ## install the Lambda Runtime Interface Emulator into ./bin

$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) $(GO) install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

clean: ## remove build output and local data
	rm -rf $(BIN) dist data
