.PHONY: run test test-fast lint bootstrap bench cluster cluster-down
run:
	./scripts/run
test:
	./scripts/test
test-fast:
	./scripts/test --fast
lint: bootstrap
	.venv/bin/ruff check app tests bench
bootstrap:
	./scripts/bootstrap.sh --test
bench:
	.venv/bin/python -m bench.fanout $(BENCH_ARGS)
# Real test hosts (systemd containers on a private bridge, root only): lb, db, redis, app1..app3,
# deployed with ansible/site.yml; prints the URL. cluster-down removes every trace.
cluster: bootstrap
	.venv/bin/python -m tests.deploy.hosts up
cluster-down:
	.venv/bin/python -m tests.deploy.hosts down
