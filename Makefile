# Dyad — the two commands of the README are `make lab` and `make test`.
# Everything they need from Debian is installed here (we run as root).
SHELL := /bin/bash
GO    ?= go
OUT   ?= out
# Tier-2 scenario tests boot PMs in QEMU; they run after the fast tier.
SCENARIOS := ./qemu-tests/scenario/...
TEST_TIMEOUT ?= 75m

DEB_PACKAGES := qemu-system-x86 qemu-utils linux-image-amd64 drbd-utils lvm2 \
	e2fsprogs fdisk gdisk iproute2 kmod cpio chromium ca-certificates git

.PHONY: all deps go-check image lab test test-fast test-qemu bench lint clean

all: image

deps: go-check
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

go-check:
	@command -v $(GO) >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/dl, or the go toolchain of this machine)"; exit 1; }

image: deps
	$(GO) run ./imagebuild -o $(OUT)

# Built, not `go run`: the lab's own exit status (0 after Ctrl-C) reaches make.
lab: image
	$(GO) build -o $(OUT)/dyad-lab ./qemu-tests/lab
	$(OUT)/dyad-lab -out $(OUT)

# Every tier that fits in CI: unit tests, fuzz seeds, then QEMU scenarios
# booted from the image just built. DYAD_REQUIRE_IMAGE turns a missing image
# into a failure instead of a skip.
test: lint image test-fast test-qemu

test-fast: deps
	$(GO) test -timeout 20m $$($(GO) list ./... | grep -v '/qemu-tests/scenario')

test-qemu: image
	DYAD_REQUIRE_IMAGE=1 $(GO) test -v -count=1 -timeout $(TEST_TIMEOUT) $(SCENARIOS)

bench: image
	$(GO) run ./qemu-tests/bench -out $(OUT) -results bench/results

lint: go-check
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(OUT)
