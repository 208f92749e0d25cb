# masq: a mail transfer agent for small, often-offline Linux devices.
#   make run      start masq in the foreground on ./run (loopback ports, no root needed)
#   make test     install what the tests need, then run them
#   make bench    benchmarks beside Postfix and aiosmtpd (figures, not pass/fail)
#   make fuzz     the fuzzers of tests/fuzz at length (well over ten minutes); see docs/FUZZING.md
#   make install  install masq, its byte-code (a user who may not write it would compile
#                 every module on each run), its board profiles and sendmail-compatible links
#                 (PREFIX, DESTDIR)
#   make clean    remove caches; the try-out's ./run (its queue and mailboxes) stays
#   make clean-run  remove ./run too
#   make ipk      OpenWrt packages (masq, masq-src, masq-modem, luci-app-masq) in dist/,
#                 without the SDK, for this python3's version (3.11: 24.10); openwrt/README.md
#   make dist     the release tarball dist/masq-VERSION.tar.gz (reproducible) and its sha256

PREFIX  ?= /usr/local
DESTDIR ?=
PYTHON  ?= python3
BINDIR   = $(DESTDIR)$(PREFIX)/bin
SBINDIR  = $(DESTDIR)$(PREFIX)/sbin
LIBDIR   = $(PREFIX)/lib/masq
LINKS    = sendmail mailq runq rmail mailrm newaliases smtpd in.smtpd
PYTEST_ARGS ?=

.PHONY: run test deps bench soak fuzz install uninstall clean clean-run

run:
	$(PYTHON) tools/run.py

deps:
	sh tools/install-test-deps

test: deps
	$(PYTHON) -m pytest -q -m "not soak" $(PYTEST_ARGS) tests

soak: deps
	$(PYTHON) -m pytest -q -m soak tests

fuzz: deps
	HYPOTHESIS_PROFILE=fuzz $(PYTHON) -m pytest -q --hypothesis-show-statistics \
		-r fEx $(PYTEST_ARGS) tests/fuzz

bench: deps
	$(PYTHON) tools/bench_queue.py
	$(PYTHON) tools/bench_sustained.py
	$(PYTHON) tools/bench_index.py
	$(PYTHON) tools/bench_submit.py
	$(PYTHON) tools/bench_idle.py
	$(PYTHON) tools/bench_smtp.py
	$(PYTHON) tools/bench_flush.py
	$(PYTHON) tools/bench_relay.py
	$(PYTHON) tools/bench_online.py
	$(PYTHON) tools/bench_status.py
	$(PYTHON) tools/bench_hostile.py
	$(PYTHON) tools/bench_privsep.py
	$(PYTHON) tools/bench_parsing.py
	$(PYTHON) tools/bench_locality.py

install:
	install -d $(DESTDIR)$(LIBDIR) $(BINDIR) $(SBINDIR)
	cp -R masq $(DESTDIR)$(LIBDIR)/
	install -d $(DESTDIR)$(LIBDIR)/board
	install -m 644 board/*.conf board/README.md $(DESTDIR)$(LIBDIR)/board/
	find $(DESTDIR)$(LIBDIR) -name __pycache__ -prune -exec rm -rf {} +
	$(PYTHON) -m compileall -q -d $(LIBDIR)/masq $(DESTDIR)$(LIBDIR)/masq
	$(PYTHON) tools/launcher.py "$$($(PYTHON) -c 'import sys; print(sys.executable)')" \
		$(LIBDIR) > $(BINDIR)/masq
	chmod 755 $(BINDIR)/masq
	for name in $(LINKS); do ln -sf ../bin/masq $(SBINDIR)/$$name; done

.PHONY: ipk dist
ipk:
	$(PYTHON) tools/build_ipk.py

dist:
	$(PYTHON) tools/dist.py

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(BINDIR)/masq
	for name in $(LINKS); do rm -f $(SBINDIR)/$$name; done

clean:
	rm -rf .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

clean-run:
	rm -rf run
