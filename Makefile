# local-llm-server — one entry point for developers, CI and the operator.
# `make help` lists the targets. Every target that CI workflows call is also exercised by `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
BIN         := $(VENV)/bin
# Installed-requirements stamp: re-install only when a requirements file changes.
VENV_STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible/ansible.cfg)

# The environment (staging|production: app_env in the playbooks) and the inventory of its Macs, which is the
# environment's own by default. The testbed plays both environments on one host: INVENTORY=local ENV=staging.
ENV         ?=
INVENTORY   ?= $(or $(ENV),local)
IMAGE_TAG   ?=
SETUP_ARGS  ?=
PLAYBOOK_ARGS = -i inventories/$(INVENTORY) $(if $(ENV),-e app_env=$(ENV))
# Playbooks run through ansible-runner (scripts/playbook.py): ansible-playbook's output and exit code, plus the run's
# events and stats in .artifacts/ansible/<ident>/. PROGRESS=1: one line per task instead of ansible's output;
# RUN_IDENT=name: the artifacts directory's name (default: time, playbook, random suffix).
PROGRESS    ?=
RUN_IDENT   ?=
PLAYBOOK    = $(PY) -m scripts.playbook $(if $(PROGRESS),--progress) $(if $(RUN_IDENT),--ident $(RUN_IDENT))

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV_STAMP): requirements.txt requirements-dev.txt ansible/requirements.yml scripts/link_collections.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m scripts.link_collections
	@touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## Create .venv and install both requirement files

.PHONY: lint
lint: venv ## ruff, hadolint, ansible-lint, workflow schema + actionlint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash scripts/lint-extra.sh

.PHONY: test-unit
test-unit: venv ## Service, Ollama-double, playbook-runner and workflow tests (no Docker needed)
	$(BIN)/pytest tests/unit tests/workflows tests/runner

.PHONY: testbed-up
testbed-up: venv ## Bring up the local testbed (dockerd, registry, sshd "Mac Mini", Ollama double); idempotent, root
	bash testbed/up.sh

.PHONY: testbed-down
testbed-down: ## Stop and remove exactly what testbed-up created
	bash testbed/down.sh

.PHONY: test-image
test-image: testbed-up ## Image and compose-stack tests on the testbed
	$(BIN)/pytest tests/image

.PHONY: test-molecule
test-molecule: testbed-up ## molecule converge/idempotence/verify for every role
	bash scripts/molecule-all.sh

.PHONY: test-e2e
test-e2e: testbed-up ## The real playbooks over SSH against the testbed
	$(BIN)/pytest tests/e2e

.PHONY: test
test: lint test-unit test-image test-molecule test-e2e ## Everything CI runs (installs and starts what it needs)

.PHONY: image
image: testbed-up ## Build the service image and push :sha-<hash> (+ :staging) to the testbed registry
	bash scripts/build-push.sh

.PHONY: setup
setup: venv ## Set INVENTORY's Macs up (ansible/setup.yml as their admin account; asks for its password unless MAC_ADMIN_PASSWORD is set)
	$(PLAYBOOK) --ask-env MAC_ADMIN_PASSWORD ansible/setup.yml -i inventories/$(INVENTORY) $(SETUP_ARGS)

.PHONY: deploy
deploy: venv ## Deploy IMAGE_TAG with ansible/deploy.yml to ENV (staging|production) on INVENTORY's Macs
	@test -n "$(IMAGE_TAG)" || { echo "IMAGE_TAG is required, e.g. make deploy ENV=staging IMAGE_TAG=sha-abc1234" >&2; exit 2; }
	$(PLAYBOOK) ansible/deploy.yml $(PLAYBOOK_ARGS) -e image_tag=$(IMAGE_TAG)

.PHONY: verify
verify: venv ## Read-only health report of INVENTORY's Macs: Docker, Ollama, cloudflared and both stacks
	$(PLAYBOOK) ansible/verify.yml -i inventories/$(INVENTORY)

.PHONY: rollback
rollback: venv ## Roll ENV back on INVENTORY's Macs to the previous successful release, or to IMAGE_TAG when given
	$(PLAYBOOK) ansible/rollback.yml $(PLAYBOOK_ARGS) $(if $(IMAGE_TAG),-e image_tag=$(IMAGE_TAG))

.PHONY: ssh-setup
ssh-setup: ## CI: write DEPLOY_SSH_KEY and the pinned DEPLOY_KNOWN_HOSTS into ~/.ssh (or SSH_DIR)
	bash scripts/ci-ssh-setup.sh

.PHONY: promote
promote: ## CI: retag IMAGE_REPOSITORY:IMAGE_TAG as :latest without rebuilding (digest checked)
	bash scripts/promote.sh

.PHONY: run-local
run-local: venv ## Run the service with hot reload on :8080 (APP_ENV=local)
	cd service && APP_ENV=local ../$(BIN)/uvicorn app.main:app --reload --port 8080

.PHONY: double
double: venv ## Run the Ollama double on 127.0.0.1:11434
	$(PY) -m tests.fakes.ollama --port 11434 --model $${MODEL_NAME:-llama3.2:1b}

.PHONY: bench-service
bench-service: venv ## The double, nginx, the service and LiteLLM side by side, one run (installs wrk, nginx, LiteLLM)
	$(PY) bench/service.py $(BENCH_ARGS)

.PHONY: bench-isolation
bench-isolation: venv ## Production's time to first token alone and under a staging flood, with and without slot shares
	$(PY) bench/isolation.py $(BENCH_ARGS)

.PHONY: bench-image
bench-image: testbed-up ## Image size over base and start-to-healthy time
	$(PY) bench/image.py

.PHONY: bench-deploy
bench-deploy: testbed-up ## Deploy, rerun, rollback timings and unavailability on the testbed
	$(PY) bench/deploy.py

.PHONY: demo
demo: venv ## The whole pipeline on the local testbed: build, push, deploy both envs, verify, chat, rollback
	$(PY) scripts/demo.py

.PHONY: demo-down
demo-down: ## Remove what make demo started (stacks and testbed)
	$(if $(wildcard $(PY)),$(PY),python3) scripts/demo.py down
