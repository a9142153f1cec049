# Dyad — the two commands of the README are `make lab` and `make test`.
# Everything they need from Debian is installed here (we run as root).
SHELL := /bin/bash
GO    ?= go
OUT   ?= out
# Tier-2 scenario tests boot PMs in QEMU; they run after the fast tier.
SCENARIOS := ./qemu-tests/scenario/...
TEST_TIMEOUT ?= 75m

DEB_PACKAGES := qemu-system-x86 qemu-utils linux-image-amd64 drbd-utils lvm2 \
	e2fsprogs fdisk gdisk iproute2 kmod cpio xz-utils chromium ca-certificates git \
	openipmi

.PHONY: all deps go-check webui-assets image quorum lab test test-fast test-qemu soak bench lint clean

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

# The consoles' browser code (xterm.js, noVNC) comes from the npm registry,
# pinned by webui/package-lock.json. The files the pages load are copied into
# the assets that go:embed builds into the agent; the stamp keeps this a no-op
# until the lock file changes. npm is looked for as a command, not a Debian
# package: NodeSource's nodejs package carries its own npm and conflicts with
# Debian's.
WEBUI_VENDOR := webui/assets/static/vendor
WEBUI_NPM    := webui/node_modules

webui-assets: $(WEBUI_VENDOR)/.installed

$(WEBUI_VENDOR)/.installed: webui/package.json webui/package-lock.json | deps
	@command -v npm >/dev/null || { \
		echo "webui-assets: installing Debian packages: nodejs npm"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; \
	}
	cd webui && npm ci --no-audit --no-fund
	rm -rf $(WEBUI_VENDOR)/xterm $(WEBUI_VENDOR)/novnc
	mkdir -p $(WEBUI_VENDOR)/xterm $(WEBUI_VENDOR)/novnc
	cp $(WEBUI_NPM)/@xterm/xterm/lib/xterm.mjs $(WEBUI_NPM)/@xterm/xterm/css/xterm.css \
		$(WEBUI_NPM)/@xterm/addon-fit/lib/addon-fit.mjs $(WEBUI_VENDOR)/xterm/
	cp $(WEBUI_NPM)/@xterm/xterm/LICENSE $(WEBUI_VENDOR)/xterm/LICENSE
	cp $(WEBUI_NPM)/@xterm/addon-fit/LICENSE $(WEBUI_VENDOR)/xterm/LICENSE.addon-fit
	cp -R $(WEBUI_NPM)/@novnc/novnc/core $(WEBUI_NPM)/@novnc/novnc/vendor \
		$(WEBUI_NPM)/@novnc/novnc/LICENSE.txt $(WEBUI_NPM)/@novnc/novnc/AUTHORS $(WEBUI_VENDOR)/novnc/
	touch $@

image: deps webui-assets
	$(GO) run ./imagebuild -o $(OUT)

# The quorum server, a static binary for any Linux host or VM.
quorum: go-check
	CGO_ENABLED=0 $(GO) build -o $(OUT)/dyad-quorum ./services/cmd/dyad-quorum

# Built, not `go run`: the lab's own exit status (0 after Ctrl-C) reaches make.
lab: image
	$(GO) build -o $(OUT)/dyad-lab ./qemu-tests/lab
	$(OUT)/dyad-lab -out $(OUT)

# Every tier that fits in CI: unit tests, fuzz seeds, then QEMU scenarios
# booted from the image just built. DYAD_REQUIRE_IMAGE turns a missing image
# into a failure instead of a skip, DYAD_REQUIRE_ASSETS missing console
# assets.
test: lint image test-fast test-qemu

test-fast: deps webui-assets
	DYAD_REQUIRE_ASSETS=1 DYAD_REQUIRE_IPMI=1 $(GO) test -timeout 20m $$($(GO) list ./... | grep -v '/qemu-tests/scenario')

test-qemu: image
	DYAD_REQUIRE_IMAGE=1 $(GO) test -v -count=1 -timeout $(TEST_TIMEOUT) $(SCENARIOS)

# The partition test a hundred times over (five in make test).
soak: image
	DYAD_REQUIRE_IMAGE=1 DYAD_PARTITION_REPS=100 $(GO) test -v -count=1 -timeout 12h -run 'TestPartitionOneWriter' $(SCENARIOS)

bench: image
	$(GO) run ./qemu-tests/bench -out $(OUT) -results bench/results

lint: go-check webui-assets
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(OUT)
