"""Imported by `tests.support.forked`'s fork server alone, first: it keeps that server alive
through a SIGTERM to its process group.

`timeout make test` and CI's limit stop a run by sending SIGTERM to its whole process group, the
fork server included. pytest then stops every platform process it started, by its pid and status;
the status of a forked process comes from the fork server (it is that process's parent), and a
dead fork server would report every one of them as ended, leaving them to run on as orphans. The
fork server ignores SIGINT already; it still ends when the test process that started it ends.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
