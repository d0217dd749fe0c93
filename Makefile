.PHONY: run test lint bootstrap
run:
	./scripts/run
test:
	./scripts/test
lint: bootstrap
	.venv/bin/ruff check app tests bench
bootstrap:
	./scripts/bootstrap.sh --test
