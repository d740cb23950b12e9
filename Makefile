# AtlasForge: `make demo` and `make test` are the only set-up commands a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.atlasforge-installed
DEMO   ?= datasets/demo

.PHONY: install demo test test-fast bench bench-encodings clean

install: $(STAMP)

# Idempotent: re-runs only when the dependency declarations change.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	# monailabel without its sam2 dependency; see setup.cfg for why and for the rest of its dependencies.
	$(PY) -m pip install -q --no-deps monailabel==0.8.5
	touch $@

# Phantoms, then the universal model's shipped weights on them: $(DEMO)/segmentation/<case>/ (masks, report, overview.png).
demo: install
	$(PY) datasets/phantoms.py --out $(DEMO) --cases 4 --seed 0 --dicom --preview
	cd bundles/universal_abdomen_ct_segmentation && ../../$(PY) -m monai.bundle run \
		--config_file configs/inference.json --dataset_dir ../../$(DEMO) --output_dir ../../$(DEMO)/segmentation

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) benchmarks/run_all.py

# Text-prompt vs learned class codes of the universal model at an equal budget (~1 h on 2 CPU cores; not in `bench`).
ENC ?= runs/encodings
ENC_PHANTOMS := --shape 128,128,108 --spacing 3,3,3 --quiet
bench-encodings: install
	$(PY) datasets/phantoms.py --out $(ENC)/train --cases 54 --seed 7 $(ENC_PHANTOMS)
	cd bundles/universal_abdomen_ct_segmentation && ../../$(PY) -m universal_model.partial_labels \
		--phantoms $(abspath $(ENC))/train --num_val 3 --rotation atlas --assign round_robin
	$(PY) datasets/phantoms.py --out $(ENC)/heldout --cases 24 --seed 4242 $(ENC_PHANTOMS)
	$(PY) benchmarks/compare_universal_encodings.py --train_dir $(ENC)/train --eval_dir $(ENC)/heldout --work $(ENC)/runs

clean:
	rm -rf $(DEMO) .pytest_cache
