# The two commands of the quick start: `make run` and `make test`. Each sets up .venv first when
# it is missing or older than the files that define it (installer/setup_venv.sh installs torch
# first, pinned, so pip never pulls a multi-GB CUDA build by surprise).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stylecam-stamp
# Where `make run` writes when there is no display.
OUT ?= out/stylecam-demo.mp4

.PHONY: run test soak venv clean package

$(STAMP): pyproject.toml installer/constraints.txt installer/setup_venv.sh
	bash installer/setup_venv.sh

venv: $(STAMP)

# The main job: the tray app where a display exists, else a headless run of the bundled clip
# through the default style into a video file. ARGS passes extra options to `stylecam run`.
run: $(STAMP)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ -z "$$STYLECAM_HEADLESS" ]; then \
		$(VENV)/bin/stylecam-tray; \
	else \
		echo "stylecam: no display; painting the bundled clip to $(OUT)"; \
		$(VENV)/bin/stylecam run --source demo --sink file:$(OUT) --overwrite --style oil $(ARGS); \
	fi

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Long runs with the resident memory sampled (20,000 classic and 2,000 tiny-diffusion frames,
# in-process and through the CLI; several minutes, so not part of `test`). Results in
# out/soak.json; docs/reliability.md quotes them. SOAK_ARGS passes options to tests/soak.py.
soak: $(STAMP)
	$(PY) tests/soak.py $(SOAK_ARGS)

clean:
	rm -rf out .pytest_cache

# The frozen tray app (PyInstaller) in PACKAGE_DIR, outside the repository, then its headless
# smoke test. Not part of `test`: it freezes torch (minutes, about a GB; see docs/install.md).
# FLAVOR: cpu | cu130 | classic (no torch). Reuses PACKAGE_DIR/venv when it is there.
PACKAGE_DIR ?= /tmp/stylecam-package
FLAVOR ?= cpu
package:
	bash installer/package.sh --out $(PACKAGE_DIR) --flavor $(FLAVOR)
