.PHONY: run test lint bootstrap bench
run:
	./scripts/run
test:
	./scripts/test
lint: bootstrap
	.venv/bin/ruff check app tests bench
bootstrap:
	./scripts/bootstrap.sh --test
bench:
	.venv/bin/python -m bench.fanout $(BENCH_ARGS)
