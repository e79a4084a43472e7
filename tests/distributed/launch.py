"""Starts worker processes for the distributed tests and always ends them.

Every worker runs `python tests/distributed/<script>` with its own
environment, so that what must be set before TensorFlow or JAX starts
(logical devices, XLA_FLAGS, TF_CONFIG) is set. Ports are picked free by
the operating system. Whatever happens (timeout, failure, an interrupted
test), every process started is killed when its `Workers` context exits.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_ports(count):
    """Returns `count` distinct ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        # Held open together so the same port is not handed out twice.
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_env(backend, **overrides):
    """A clean environment for a CPU worker of `backend`."""
    env = dict(os.environ)
    for key in ("XLA_FLAGS", "TF_CONFIG"):
        env.pop(key, None)
    env.update(
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            [HERE, ROOT, env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    )
    env.update(overrides)
    return env


class WorkerError(RuntimeError):
    pass


class Workers:
    """Worker processes started together; a context manager that kills them.

    Args:
        workers: list of `(args, env)`, where `args` are the script name in
            this folder and its arguments.
    """

    def __init__(self, workers):
        self._start = time.monotonic()
        self._processes = []
        self._logs = []
        try:
            for args, env in workers:
                log = tempfile.TemporaryFile("w+")
                self._logs.append(log)
                self._processes.append(
                    subprocess.Popen(
                        [sys.executable, os.path.join(HERE, args[0])]
                        + list(args[1:]),
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        except BaseException:
            self.kill()
            raise

    def wait(self, timeout):
        """Waits for all; kills all and raises WorkerError unless all succeed.

        Args:
            timeout: seconds since the start, for all workers together.

        Returns:
            The seconds the workers took since they started.
        """
        try:
            for process in self._processes:
                left = timeout - (time.monotonic() - self._start)
                process.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            raise WorkerError(
                f"workers still running after {timeout} s" + self._tails()
            ) from None
        failed = [p.args[1:] for p in self._processes if p.returncode != 0]
        if failed:
            self.kill()
            raise WorkerError(f"workers {failed} failed" + self._tails())
        return time.monotonic() - self._start

    def kill(self):
        """Kills every worker still running; safe to call more than once."""
        for process in self._processes:
            # Each worker leads its own process group: its children go too.
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()

    def _tails(self, chars=3000):
        """The end of every worker's output, for the failure message."""
        parts = []
        for i, log in enumerate(self._logs):
            log.flush()
            log.seek(0)
            parts.append(f"\n--- worker {i} ---\n" + log.read()[-chars:])
        return "".join(parts)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()
        for log in self._logs:
            log.close()
