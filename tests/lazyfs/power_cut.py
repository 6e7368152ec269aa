#!/usr/bin/env python3
"""Power cuts of the real walrus binary on LazyFS, checked against every
acknowledged write.

LazyFS (https://github.com/dsrhaslab/lazyfs) is a FUSE file system that keeps
written data in its own cache until the writer syncs it; `lazyfs::clear-cache`
on its control FIFO drops whatever was not synced, as a power cut does. This
script runs walrus with its data on LazyFS mounts, writes through HTTP (PUT)
and RESP (SET, INCR) from several clients, kills the server with SIGKILL,
clears the cache, starts it again, and reads every key back:

- a write answered as done (HTTP 200, RESP OK or an integer) must read back,
  unless a later write to the key replaced it;
- a write whose outcome the client could not learn (the connection broke, or
  an answer saying the outcome is unknown) may read back as itself or as the
  value before it, and is settled by that read;
- an INCR counter reads between its acknowledged count and the increments
  sent.

Modes:
  single       one server on one mount; every round cuts its power.
  cluster-all  three nodes sharing one mount; every round cuts all at once.
  cluster-one  three nodes, one mount each; every round cuts one node's power
               (the leader on even rounds) while the other two serve.

`run.sh` builds LazyFS, mounts it and runs all three modes. Every loop is
bounded by `--rounds` and the seconds each round writes for.
"""

import argparse
import atexit
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Resp:
    """The smallest RESP2 client that SET, GET and INCR need."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def call(self, *args):
        frame = b"*%d\r\n" % len(args)
        for arg in args:
            arg = arg if isinstance(arg, bytes) else str(arg).encode()
            frame += b"$%d\r\n%s\r\n" % (len(arg), arg)
        self.sock.sendall(frame)
        return self.reply()

    def reply(self):
        line = self.reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            return None if length < 0 else self.reader.read(length + 2)[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self):
        self.sock.close()


class Unknown:
    """A write whose outcome the client did not learn."""

    def __init__(self, value, before):
        self.value, self.before = value, before


class History:
    """What each key must read as: one writer per key at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.expected = {}  # key -> value, or Unknown
        self.counters = {}  # key -> [acknowledged, sent]
        self.tally = {}

    def count(self, what):
        with self.lock:
            self.tally[what] = self.tally.get(what, 0) + 1

    def acknowledged(self, key, value):
        with self.lock:
            self.expected[key] = value
        self.count("acknowledged")

    def unknown(self, key, value):
        with self.lock:
            self.expected[key] = Unknown(value, self.expected.get(key))
        self.count("outcome unknown")

    def check(self, resp_port, node):
        """Reads every key through one server; returns the problems found and
        settles unknown outcomes to what was read."""
        client = Resp(resp_port)
        problems, checked = [], 0
        with self.lock:
            for key, want in list(self.expected.items()):
                got = client.call("GET", key)
                got = None if got is None else got.decode()
                if isinstance(want, Unknown):
                    before = want.before
                    while isinstance(before, Unknown):
                        before = before.before
                    if got not in (want.value, before):
                        problems.append(f"{node}: {key} reads {show(got)}, neither the write of "
                                        f"unknown outcome {show(want.value)} nor {show(before)}")
                    else:
                        self.expected[key] = got
                    continue
                checked += 1
                if got != want:
                    problems.append(f"{node}: acknowledged {key}={show(want)} lost: reads {show(got)}")
            for key, (low, high) in list(self.counters.items()):
                got = int(client.call("GET", key) or 0)
                if not low <= got <= high:
                    problems.append(f"{node}: counter {key} reads {got}, not within [{low}, {high}]")
                self.counters[key] = [got, got]
        client.close()
        return problems, checked


def show(value):
    return "nothing" if value is None else repr(value[:32] + ("…" if len(value) > 32 else ""))


def http_writer(history, port, writer, stop, rng):
    """PUTs of values from 10 bytes to 64 KiB until stopped or refused."""
    connection, index = None, 0
    while not stop.is_set():
        key = f"{writer}-{rng.randrange(400)}"
        value = f"{writer}:{index}:{time.time()}:" + "x" * rng.choice([10, 200, 3000, 64 << 10])
        index += 1
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("PUT", f"/kv/{key}", body=value.encode())
            response = connection.getresponse()
            body = response.read()
        except OSError:
            history.unknown(key, value)
            return
        if response.status == 200:
            history.acknowledged(key, value)
        elif b"nothing was written" in body:
            history.count(f"refused ({response.status}, nothing written)")
            return
        else:
            # A 503 that says the outcome is unknown, or anything unforeseen.
            history.unknown(key, value)
            history.count(f"HTTP {response.status}")
            return


def resp_writer(history, port, writer, stop, rng):
    """SETs, and INCRs of a counter of this writer's own."""
    try:
        client = Resp(port)
    except OSError:
        return
    counter = f"counter-{writer}"
    with history.lock:
        history.counters.setdefault(counter, [0, 0])
    index = 0
    while not stop.is_set():
        index += 1
        if index % 3 == 0:
            with history.lock:
                history.counters[counter][1] += 1
            try:
                count = client.call("INCR", counter)
            except (OSError, RuntimeError):
                history.count("outcome unknown")
                return
            with history.lock:
                history.counters[counter][0] = count
            history.count("acknowledged")
            continue
        key = f"{writer}-{rng.randrange(300)}"
        value = f"{writer}:{index}:{time.time()}:" + "y" * rng.choice([5, 100, 1000])
        try:
            client.call("SET", key, value)
        except (OSError, RuntimeError):
            # A broken connection, or -CLUSTERDOWN / -TRYAGAIN about a write
            # of unknown outcome: either way it may have been applied.
            history.unknown(key, value)
            return
        history.acknowledged(key, value)
    client.close()


class Server:
    """One walrus process: a single node, or node `node_id` of a cluster."""

    def __init__(self, args, mount, data_dir, node_id=None):
        self.args, self.mount, self.data_dir, self.node_id = args, mount, data_dir, node_id
        self.http_port, self.resp_port = free_port(), free_port()
        self.process = None

    def start(self, peers=None):
        command = [self.args.walrus, "serve", "--data-dir", self.data_dir,
                   "--listen", f"127.0.0.1:{self.http_port}",
                   "--resp-listen", f"127.0.0.1:{self.resp_port}"]
        if self.node_id is not None:
            command += ["--node-id", str(self.node_id), "--peers", peers, "--threads", "1"]
        log = open(os.path.join(self.args.logs, f"walrus-{self.node_id or 1}.log"), "a")
        self.process = subprocess.Popen(command + self.args.walrus_args, stdout=log, stderr=log)

    def wait_ready(self, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"walrus exited with {self.process.returncode}; see {self.args.logs}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
                connection.request("GET", "/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"walrus (node {self.node_id}) not ready after {seconds} s")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def leader(self):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
            connection.request("GET", "/cluster/status")
            return json.loads(connection.getresponse().read()).get("leader_id")
        except (OSError, ValueError):
            return None


def cache_usage(mount):
    """How full the mount's LazyFS cache is, in percent of its pages, as
    LazyFS reports it in its log when asked."""
    with open(mount["log"], "rb") as log:
        log.seek(0, os.SEEK_END)
        start = log.tell()
    with open(mount["fifo"], "w") as fifo:
        fifo.write("lazyfs::display-cache-usage\n")
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(mount["log"], "rb") as log:
            log.seek(start)
            said = log.read().decode(errors="replace")
        match = re.search(r"cache usage \(%pages\) is ([0-9.]+)%", said)
        if match:
            return float(match.group(1))
        time.sleep(0.05)
    sys.exit(f"LazyFS at {mount['dir']} did not report its cache usage")


# LazyFS without eviction writes around a full cache, straight to the file
# below, and then loses data that was synced: past this, a run proves nothing.
CACHE_USAGE_LIMIT = 80.0


def clear_cache(mount):
    """Drops the mount's unsynced data and waits until LazyFS says it has."""
    drain(mount)
    with open(mount["fifo"], "w") as fifo:
        fifo.write("lazyfs::clear-cache\n")
    said, deadline = b"", time.time() + 30
    while b"finished" not in said:
        if time.time() > deadline:
            sys.exit(f"LazyFS at {mount['dir']} did not finish clearing its cache")
        said += drain(mount)
        time.sleep(0.05)


def listen_for_completions(mount):
    """Opens the FIFO where LazyFS says a command finished, for the whole run:
    LazyFS's command thread opens its end for writing, which blocks (and
    leaves every command unread) until a reader has opened it."""
    mount["done_fd"] = os.open(mount["done"], os.O_RDONLY | os.O_NONBLOCK)


def drain(mount):
    said = b""
    while True:
        try:
            chunk = os.read(mount["done_fd"], 4096)
        except BlockingIOError:
            return said
        if not chunk:
            return said
        said += chunk


def write_for(history, servers, seconds, rng):
    """Writers spread over the servers, for `seconds`; returns a stopper."""
    stop = threading.Event()
    threads = []
    for writer in range(6):
        server = servers[writer % len(servers)]
        for target, port in ((http_writer, server.http_port), (resp_writer, server.resp_port)):
            threads.append(threading.Thread(
                target=target, args=(history, port, f"{target.__name__[0]}{writer}", stop,
                                     random.Random(rng.random()))))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    return stop, threads


def mounts_of(servers):
    """The mounts the servers' data lie on, each once (nodes may share one)."""
    return list({id(server.mount): server.mount for server in servers}.values())


def finish(stop, threads):
    stop.set()
    for thread in threads:
        thread.join()


def check_all(history, servers, round_number):
    problems = []
    for server in servers:
        found, checked = history.check(server.resp_port, f"node {server.node_id or 1}")
        problems += found
        print(f"  round {round_number}, node {server.node_id or 1}: {checked} acknowledged "
              f"values read back, {len(found)} problems", flush=True)
    for problem in problems:
        print("  PROBLEM", problem, flush=True)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["single", "cluster-all", "cluster-one"])
    parser.add_argument("--walrus", required=True)
    parser.add_argument("--mounts", required=True,
                        help="LazyFS mounts as DIR:FIFO:DONE_FIFO:LOG, comma-separated "
                             "(three for cluster-one)")
    parser.add_argument("--logs", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    argv = sys.argv[1:]
    extra = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:extra])
    args.walrus_args = argv[extra + 1:]  # more `walrus serve` flags, after --
    rng = random.Random(args.seed)
    mounts = [dict(zip(("dir", "fifo", "done", "log"), spec.split(":")))
              for spec in args.mounts.split(",")]
    for mount in mounts:
        listen_for_completions(mount)
    run = f"run-{int(time.time())}-{args.mode}"
    history = History()

    if args.mode == "single":
        servers = [Server(args, mounts[0], os.path.join(mounts[0]["dir"], run))]
    else:
        placement = [mounts[i] if args.mode == "cluster-one" else mounts[0] for i in range(3)]
        servers = [Server(args, mount, os.path.join(mount["dir"], run, f"node-{i + 1}"), i + 1)
                   for i, mount in enumerate(placement)]
    peers = ",".join(f"{s.node_id}=127.0.0.1:{s.http_port}" for s in servers)
    # However this script ends, no server is left holding the mounts.
    atexit.register(lambda: [server.stop() for server in servers])
    for server in servers:
        server.start(peers)
    for server in servers:
        server.wait_ready()

    problems = []
    for round_number in range(1, args.rounds + 1):
        stop, threads = write_for(history, servers, rng.uniform(2, 4), rng)
        if args.mode == "cluster-one":
            leader = servers[0].leader() or servers[1].leader()
            victims = [servers[leader - 1] if round_number % 2 == 0 and leader else rng.choice(servers)]
        else:
            victims = servers
        for victim in victims:
            victim.kill()
        for mount in mounts_of(victims):
            clear_cache(mount)
        if args.mode == "cluster-one":
            time.sleep(rng.uniform(0.5, 2))  # the others go on without it
        finish(stop, threads)
        print(f"round {round_number}: power cut on {', '.join(f'node {v.node_id or 1}' for v in victims)}; "
              f"so far {history.tally}", flush=True)
        for victim in victims:
            victim.start(peers)
        for server in servers:
            server.wait_ready()
        problems += check_all(history, servers, round_number)
        fullest = max(cache_usage(mount) for mount in mounts_of(servers))
        print(f"  LazyFS cache: {fullest:.0f}% full at most", flush=True)
        if fullest > CACHE_USAGE_LIMIT:
            print(f"{args.mode}: stopped after {round_number} of {args.rounds} rounds: a LazyFS "
                  f"cache is {fullest:.0f}% full (give LazyFS a larger cache); "
                  f"{len(problems)} problems so far")
            sys.exit(1 if problems else 2)

    acknowledged = history.tally.get("acknowledged", 0)
    if acknowledged < 100 * args.rounds:
        sys.exit(f"only {acknowledged} writes were acknowledged: the run proves little")
    print(f"{args.mode}: {args.rounds} power cuts, {acknowledged} acknowledged writes, "
          f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
