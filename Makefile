# blocklist-proxy: `make test` and `make run` set everything up on a fresh machine.
#
# The project needs Python >= 3.12 (mitmproxy 12 requires it). We try, in order:
# $(PYTHON) if given, python3.13, python3.12, pyenv's installed 3.12/3.13, python3.
# Each candidate must actually run and report >= 3.12 (a pyenv shim that is not
# selected fails to run and is skipped).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

PYTHON_CANDIDATES := $(PYTHON) python3.13 python3.12 \
	$(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) \
	$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) \
	$(wildcard /root/.pyenv/versions/3.13*/bin/python3) \
	$(wildcard /root/.pyenv/versions/3.12*/bin/python3) \
	$(wildcard /usr/local/bin/python3.1[2-9]) python3

# `make run`: the proxy on the embedded store with the bundled sample list (reserved test
# names only). Everything it writes (the store, the last-known-good copy, mitmproxy's CA)
# stays under RUN_DIR.
RUN_HOST ?= 127.0.0.1
RUN_PORT ?= 8080
RUN_STATUS ?= 127.0.0.1:9451
RUN_DIR ?= $(CURDIR)/var
SAMPLE_FEED := $(CURDIR)/samples/sample-feed.txt

# Debian packages the tests use (tests/debian-packages.txt: chromium for the browser test,
# and what the network tests need). As root on Debian (CI, a fresh machine) `make test`
# installs the missing ones; anywhere else the tests that need them skip, saying why. On CI
# ($CI set) a failed install stops the run, and any skip but an opt-in test's is a failure
# (tests/conftest.py). SYSTEM=0 skips the install.
SYSTEM ?= 1
DEBIAN_PACKAGES := $(shell sed -e 's/\#.*//' tests/debian-packages.txt)

# `make fuzz`: each atheris target for FUZZ_SECONDS (crash-* files name any failing input).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := canonical embedded matcher pages plain uploads feeds

# `make mutate`: mutmut over the security-critical modules (MUTATE: default, all of them in
# mutate/mutate.py's table), each in a copy of the working tree (MUTATE_REV=HEAD: of a
# commit) under var/mutate/, with the tests that exercise it; fails when a surviving mutant
# is not explained in mutate/equivalent.toml. Minutes, so not part of `make test`.
MUTATE ?=
MUTATE_REV ?=
MUTATE_CHILDREN ?= 2

.PHONY: test quick lint format run bench clean venv system fuzz mutate test-container test-walk

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py blocklist_addon/hashes/_mih.c blocklist_addon/urls/_lookup.c \
		blocklist_addon/urls/embedded/_plain.c
	@set -e; found=""; \
	for c in $(PYTHON_CANDIDATES); do \
	  if "$$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then \
	    found="$$c"; break; fi; \
	done; \
	if [ -z "$$found" ]; then \
	  echo "error: no Python >= 3.12 found (tried: $(PYTHON_CANDIDATES))." >&2; \
	  echo "Install one (Debian: apt-get install python3.12 python3.12-venv; or pyenv install 3.12)" >&2; \
	  echo "or point to it with: make PYTHON=/path/to/python3.12 test" >&2; \
	  exit 1; fi; \
	echo "using $$found ($$("$$found" --version))"; \
	if [ ! -x "$(PY)" ]; then "$$found" -m venv "$(VENV)"; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

system:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ] && [ "$(SYSTEM)" = 1 ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  (flock 9; apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq $$missing) 9>/tmp/blocklist-proxy-apt.lock \
	    >/dev/null || { echo "warning: not installed:$$missing; the tests that need them skip" >&2; \
	    if [ -n "$$CI" ]; then echo "error: CI runs every test: install failed:$$missing" >&2; \
	    exit 1; fi; }; \
	fi

# The suite runs on TEST_WORKERS processes (pytest-xdist; a module's tests stay on one, so
# its proxies and origins are started once): more than the cores, since most tests wait on
# processes they started. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint system
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# `make quick`: the tests that start no process (pytest -m "not net"), for the edit loop.
quick: venv
	$(PY) -m pytest -m "not net" $(XDIST) $(PYTEST_ARGS)

# `make test-container`: deploy/compose built and run with podman on a Debian trixie base
# made from deb.debian.org (no registry needed); minutes, so not part of `make test`. Root.
CONTAINER_PACKAGES := podman podman-compose mmdebstrap runc nftables

test-container: venv
	@$(MAKE) --no-print-directory system DEBIAN_PACKAGES="$(CONTAINER_PACKAGES)"
	BLOCKLIST_CONTAINER_TESTS=1 $(PY) -m pytest -s tests/test_container.py $(PYTEST_ARGS)

# `make test-walk`: the install steps and the school, hosting and ISP (sections 2 and 4,
# both its nftables and its BGP forms) chapters of the operator's guide, run as written on a
# fresh Debian 13 made by mmdebstrap (about 25 minutes; root).
test-walk: venv
	@$(MAKE) --no-print-directory system DEBIAN_PACKAGES="mmdebstrap"
	BLOCKLIST_WALK_TESTS=1 $(PY) -m pytest -s tests/test_walk.py tests/test_walk_isp.py \
	  tests/test_walk_bgp.py $(PYTEST_ARGS)

run: venv
	@BLOCKLIST_DATA_DIR="$(RUN_DIR)/blocklist" $(VENV)/bin/blocklist-sync \
	  --feed-url "file://$(SAMPLE_FEED)" --format text --name sample
	@echo
	@echo "blocklist-proxy: listening on http://$(RUN_HOST):$(RUN_PORT), enforcing the sample list"
	@echo "($(SAMPLE_FEED): reserved test names only). In another terminal:"
	@echo
	@echo "  curl -i -x http://$(RUN_HOST):$(RUN_PORT) -H 'Accept: text/html' http://blocked.example.com/page.html"
	@echo "  curl -i -x http://$(RUN_HOST):$(RUN_PORT) -H 'Accept: text/html' --cacert $(RUN_DIR)/mitmproxy/mitmproxy-ca-cert.pem https://blocked.example.com/page.html"
	@echo "  curl http://$(RUN_STATUS)/healthz ; curl http://$(RUN_STATUS)/metrics"
	@echo
	@echo "The first shows the 451 splash page; the second the same over HTTPS (the proxy's CA,"
	@echo "made on first start, is trusted for that one command). Stop with Ctrl-C."
	@echo
	@BLOCKLIST_DATA_DIR="$(RUN_DIR)/blocklist" exec $(VENV)/bin/blocklist-proxy \
	  --listen-host $(RUN_HOST) --listen-port $(RUN_PORT) \
	  --set confdir="$(RUN_DIR)/mitmproxy" --set blocklist_status_listen=$(RUN_STATUS)

bench: venv
	$(PY) bench/matcher.py

fuzz: venv
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet -e '.[fuzz]'
	@mkdir -p var/fuzz
	@cd var/fuzz && for t in $(FUZZ_TARGETS); do \
	  if $(abspath $(PY)) $(CURDIR)/fuzz/fuzz.py $$t -max_total_time=$(FUZZ_SECONDS) \
	      -print_final_stats=1 > $$t.log 2>&1; then \
	    echo "$$t: $$(grep -E '^Done [0-9]+ runs' $$t.log || tail -1 $$t.log)"; \
	  else echo "$$t: FAILED (input saved as var/fuzz/crash-*); see var/fuzz/$$t.log"; \
	    tail -25 $$t.log; exit 1; fi; \
	done

mutate: venv
	@$(PY) -c 'import mutmut' 2>/dev/null || $(PY) -m pip install --quiet -e '.[mutate]'
	$(PY) mutate/mutate.py --children $(MUTATE_CHILDREN) $(if $(MUTATE_REV),--rev $(MUTATE_REV)) $(MUTATE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
