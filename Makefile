# Every target bootstraps .venv by itself, so `make dev` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The local stack imports the core layer, exactly as the functions get it from /opt/python.
LOCAL := PYTHONPATH=$(CURDIR)/layers/core/python $(PY)
BENCHPATH := PYTHONPATH=$(CURDIR)/layers/core/python:$(CURDIR)/functions/stream $(PY)

.PHONY: dev test lint typecheck invoke event sign bench fuzz audit screenshots build tools lock backend clean

$(STAMP): requirements/dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	@touch $(STAMP)

# SAM CLI, cfn-lint, actionlint and scanners pin their own dependencies: they get their own venv.
$(TOOLS_STAMP): requirements/tools.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r requirements/tools.txt
	@touch $(TOOLS_STAMP)

# exec: the stack is make's own child, so a SIGTERM to make (which make passes on to its children) reaches it.
dev: $(STAMP)
	exec env $(LOCAL) -m local dev

tools: $(TOOLS_STAMP)

# The example signing backend (examples/flask_backend) against a running `make dev`: http://127.0.0.1:8000/
backend: $(STAMP)
	$(PY) -m examples.flask_backend

# The dependency layer's lock: every package pinned with its hashes, resolved for the Lambda target
# (aarch64 manylinux, CPython 3.12), not this machine. Re-run after editing layers/dependencies/requirements.txt.
LOCK := layers/dependencies/requirements.lock
lock: $(TOOLS_STAMP)
	$(TOOLS)/bin/uv pip compile --quiet --python-version 3.12 --python-platform aarch64-manylinux_2_28 \
		--only-binary :all: --generate-hashes --no-strip-extras --custom-compile-command "make lock" \
		-o $(LOCK) layers/dependencies/requirements.txt

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy --strict layers/streaming-runtime/python
	MYPYPATH=layers/core/python $(PY) -m mypy --strict -p sigstream
	MYPYPATH=layers/core/python:functions/stream:layers/streaming-runtime/python $(PY) -m mypy --strict functions/stream/stream_handler.py functions/stream/stream_app
	MYPYPATH=layers/core/python:functions/stream:layers/streaming-runtime/python:. $(PY) -m mypy --strict --follow-imports=silent -p bench
	$(PY) -m mypy --strict -p examples
	MYPYPATH=layers/core/python $(PY) -m mypy --strict -p local
	MYPYPATH=layers/core/python $(PY) -m mypy --strict functions/sign/sign_handler.py

test: lint typecheck $(TOOLS_STAMP)
	$(PY) -m pytest

invoke: $(STAMP)
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	@exec env $(LOCAL) -m local invoke $(FN) $(EVENT)

event: $(STAMP)
	@test -n "$(EVENT)" || { echo "usage: make event EVENT=events/<file>.json (needs a running make dev; see events/README.md)"; exit 2; }
	@$(LOCAL) -m local event $(EVENT)

sign: $(STAMP)
	@test -n "$(SUBJECT)" || { echo "usage: make sign SUBJECT=<user> [ARGS='--stateless --model gpt-4o-mini']"; exit 2; }
	@$(LOCAL) -m local sign $(SUBJECT) $(ARGS)

bench: $(STAMP)
	$(BENCHPATH) -m bench

FUZZ_SECONDS ?= 30
fuzz: $(STAMP)
	@for target in signed_url sw1 event chat_body sse prelude; do \
		echo "fuzz: $$target ($(FUZZ_SECONDS) s)"; \
		PYTHONPATH=$(CURDIR):$(CURDIR)/layers/core/python:$(CURDIR)/functions/stream \
			$(PY) tests/fuzz/fuzz_entry_points.py $$target -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Scanners. bandit, detect-secrets and cfn-lint also run offline in `make test` (tests/integration/test_scanners.py);
# pip-audit needs PyPI's JSON API (vulnerability data), so it lives here.
audit: $(STAMP) $(TOOLS_STAMP)
	$(TOOLS)/bin/bandit -q -r functions layers local bench -ll
	git ls-files -z | xargs -0 $(TOOLS)/bin/detect-secrets-hook --baseline .secrets.baseline
	$(TOOLS)/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(TOOLS)/bin/cfn-lint -- bootstrap/*.yaml
	$(TOOLS)/bin/pip-audit --strict --progress-spinner off --require-hashes --no-deps -r $(LOCK)
	$(TOOLS)/bin/pip-audit --strict --progress-spinner off -r requirements/dev.txt

screenshots: $(STAMP)
	SIGSTREAM_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/browser -q

build: $(TOOLS_STAMP)
	$(TOOLS)/bin/sam build --cached

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .local .pytest_cache .mypy_cache .ruff_cache
