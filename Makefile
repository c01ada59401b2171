# sluice — two commands do everything on a fresh machine:
#   make demo   runs the orders pipeline end to end for two dates
#   make test   runs every unit and integration test against real servers
SHELL := /bin/bash
ROOT := $(CURDIR)
BIN := $(ROOT)/.sluice/bin
VENV := $(ROOT)/.venv
VERSITYGW_VERSION := v1.8.0
MODULES := pkg schemas cmd/sluice services/sensor services/fetcher services/validator services/partitioner services/dbtrunner services/alerter
GOTEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all tools build test demo check-versions fmt clean

all: build

## tools: versitygw (S3 server for tests and the demo) and dbt in a pinned virtualenv
tools: $(BIN)/versitygw $(VENV)/bin/dbt

$(BIN)/versitygw:
	mkdir -p $(BIN)
	GOBIN=$(BIN) go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(VENV)/bin/dbt: dbt_project/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r dbt_project/requirements.txt
	touch $@

## build: every binary into .sluice/bin
build:
	mkdir -p $(BIN)
	cd cmd/sluice && go build -o $(BIN)/sluice .
	for s in sensor fetcher validator partitioner dbtrunner alerter; do \
		(cd services/$$s && go build -o $(BIN)/sluice-$$s ./cmd/sluice-$$s) || exit 1; done

## check-versions: every module requires the same version of each shared dependency
check-versions:
	go run ./cmd/sluice/internal/checkversions $(MODULES)

## test: vet, version check, and every module's tests against real PostgreSQL, S3 and dbt
test: tools
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	$(MAKE) --no-print-directory check-versions
	scripts/with-infra.sh $(ROOT)/.sluice/test bash -c 'set -e; for m in $(MODULES); do (cd $$m && go test $(GOTEST_FLAGS) ./...); done'

## demo: the orders pipeline for two consecutive dates on a local PostgreSQL, S3 and dbt
demo: tools build
	scripts/demo.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf .sluice/test .sluice/demo
