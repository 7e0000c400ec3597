# kthw build, test and maintenance targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PKG       := github.com/kthw/kthw
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
TOOLS     := $(BIN)/tools
PROTO_DIR := proto/kthw/agent/v1

.PHONY: all build test e2e bench proto proto-check lint tools clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kthw-agent ./agent/cmd/kthw-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kthw-controller ./controller/cmd/kthw-controller
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kthw-pvesim ./controller/cmd/kthw-pvesim

# Unit, integration and e2e tests. Integration and e2e tests need root, sshd
# and the lab tools (scripts/setup.sh installs them); they skip with a reason
# otherwise.
test: build lint proto-check
	$(GO) test -count=1 -timeout 30m ./...

e2e: build
	$(GO) test -count=1 -timeout 60m -run 'E2E' ./...

bench: build
	$(GO) run ./scripts/bench -agent $(BIN)/kthw-agent -controller $(BIN)/kthw-controller -doc docs/benchmarks.md $(BENCHFLAGS)

tools:
	$(GO) build -o $(TOOLS)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(TOOLS)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc

proto: tools
	protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
		-I proto --go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTO_DIR)/*.proto

# Regenerates the protos into a temporary directory and fails when the code
# in the tree differs from what the .proto files generate.
proto-check: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
		-I proto --go_out=$$tmp --go_opt=paths=source_relative \
		--go-grpc_out=$$tmp --go-grpc_opt=paths=source_relative \
		$(PROTO_DIR)/*.proto && \
	for f in $$tmp/kthw/agent/v1/*.go; do \
		diff -u proto/kthw/agent/v1/$$(basename $$f) $$f >/dev/null || \
		{ echo "generated proto code is stale: run make proto" >&2; exit 1; }; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
