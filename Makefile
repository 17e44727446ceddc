# Tollgate. `make run` starts the whole stack; `make test` runs every test.
.PHONY: build run test fuzz bench clean

BIN := bin

build:
	go build -o $(BIN)/ ./edge/cmd/edge ./ledgerd/cmd/ledgerd ./analytics/cmd/analytics ./bench/cmd/bench ./bench/cmd/devstack

run: build
	$(BIN)/devstack up -bin-dir $(BIN) -repo .

test:
	bash deploy/dev/test.sh

fuzz:
	bash deploy/dev/fuzz.sh $(or $(FUZZTIME),60s)

clean:
	rm -rf $(BIN)
