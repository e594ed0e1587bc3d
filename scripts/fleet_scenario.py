#!/usr/bin/env python3
"""The elasticity scenario, run against the real compose stack through nginx.

Started by scripts/compose-e2e.sh once the stack is up (three replicas, Redis, nginx). It
kills, stops, restarts and scales replicas with docker and docker compose while virtual
clients read and write their carts through nginx, and checks that no client ever sees a
failure or loses a cart. Python 3 standard library only; each virtual client has its own
cookie jar, so its own session, exactly like a separate browser.

Every check prints PASS or FAIL with what it proves; the last line is "N passed, M failed",
and the exit status is 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import collections
import http.cookiejar
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# --- HTTP clients ---------------------------------------------------------------------------


class Response:
    """One answer: status (None when the request got no HTTP answer at all), the replica
    that served it (X-Served-By), the JSON body and, for failures, why."""

    def __init__(self, status, served_by=None, body=None, error=None):
        self.status = status
        self.served_by = served_by
        self.body = body
        self.error = error

    def describe(self) -> str:
        return f"status={self.status} served_by={self.served_by} error={self.error}"


class Client:
    """A virtual shopper: its own cookie jar, so its own session and cart."""

    def __init__(self, base_url: str, name: str):
        self.base_url = base_url
        self.name = name
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, payload=None, timeout: float = 20.0) -> Response:
        data = None
        headers = {"Accept": "application/json"}
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                     method=method)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
                return Response(resp.status, resp.headers.get("X-Served-By"), _json(raw))
        except urllib.error.HTTPError as err:
            raw = err.read()
            body = _json(raw)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            return Response(err.code, err.headers.get("X-Served-By"), body,
                            error=code or f"{err.code} {err.reason}")
        except Exception as err:  # connection refused/reset, timeout: no HTTP answer
            return Response(None, error=f"{type(err).__name__}: {err}")

    def cart(self) -> Response:
        return self.request("GET", "/api/cart")

    def add(self, product_id: str, quantity: int = 1) -> Response:
        return self.request("POST", "/api/cart/items",
                            {"product_id": product_id, "quantity": quantity})


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def listed(problems) -> str:
    """Problems as one line for a check's detail ("" when there are none)."""
    return "; ".join(f"{name}: {what}" for name, what in problems)


def cart_lines(body) -> dict:
    """{product_id: quantity} of a /api/cart body."""
    return {item["product_id"]: item["quantity"] for item in body["items"]}


# --- docker ----------------------------------------------------------------------------------


class Fleet:
    """The compose project's containers, and the docker / docker compose commands run on it."""

    def __init__(self, args):
        self.project = args.project
        files = args.compose_file or [f"{args.repo_root}/docker-compose.yml"]
        self.compose_base = ["docker", "compose", "--project-directory", args.repo_root]
        for file in files:
            self.compose_base += ["-f", file]
        self.up_args = args.compose_up_arg

    def run(self, *cmd: str) -> None:
        """Runs a command, showing it (without compose's file options); its output is shown
        only if it fails."""
        shown = list(cmd)
        if shown[:len(self.compose_base)] == self.compose_base:
            shown = ["docker", "compose"] + shown[len(self.compose_base):]
        print(f"      $ {' '.join(shown)}", flush=True)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            print(done.stdout, flush=True)
            raise RuntimeError(f"{' '.join(shown)} exited {done.returncode}")

    def compose(self, *args: str) -> None:
        self.run(*self.compose_base, *args)

    def compose_up(self, *args: str) -> None:
        self.compose("up", "-d", *self.up_args, *args)

    def replicas(self) -> dict:
        """Running app containers: {container id: hostname (the X-Served-By name)}."""
        ids = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc",
             "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", "label=com.docker.compose.service=app"],
            check=True, capture_output=True, text=True).stdout.split()
        if not ids:
            return {}
        names = subprocess.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", *ids],
                               check=True, capture_output=True, text=True).stdout.split()
        return dict(zip(ids, names))


# --- load ------------------------------------------------------------------------------------


class Load:
    """Continuous traffic from several clients in threads until stopped.

    Readers GET their carts and check that every answer is a 200 with exactly the cart they
    filled beforehand. Writers POST one unit at a time (cycling through products, so no
    line reaches its 99-unit limit) and count the adds that answered 200; their carts must
    end up holding exactly those."""

    def __init__(self, readers, writers=(), products=(), pause=0.005):
        self.readers = readers  # [(client, expected lines)]
        self.writers = writers  # [client]
        self.products = list(products)
        self.pause = pause
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.reads_ok = 0
        self.reads_failed = []
        self.writes_ok = collections.Counter()  # (writer name, product) -> successful adds
        self.writes_failed = []
        self.served = []  # (time, replica) of each answered read
        self.threads = []

    def __enter__(self):
        for client, expected in self.readers:
            self.threads.append(threading.Thread(target=self._read, args=(client, expected)))
        for index, client in enumerate(self.writers):
            self.threads.append(threading.Thread(target=self._write, args=(client, index)))
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    def _read(self, client, expected):
        while not self.stop_event.is_set():
            resp = client.cart()
            ok = resp.status == 200 and resp.body is not None and cart_lines(resp.body) == expected
            with self.lock:
                if ok:
                    self.reads_ok += 1
                    self.served.append((time.monotonic(), resp.served_by))
                else:
                    self.reads_failed.append(f"{client.name}: {resp.describe()} body={resp.body}")
            time.sleep(self.pause)

    def _write(self, client, index):
        n = index
        while not self.stop_event.is_set():
            product = self.products[n % len(self.products)]
            n += 1
            resp = client.add(product, 1)
            with self.lock:
                if resp.status == 200:
                    self.writes_ok[(client.name, product)] += 1
                else:
                    self.writes_failed.append(f"{client.name} +1 {product}: {resp.describe()}")
            time.sleep(self.pause * 4)

    def replicas_since(self, since: float) -> collections.Counter:
        with self.lock:
            return collections.Counter(name for t, name in self.served if t >= since)

    def expected_writer_cart(self, client) -> dict:
        return {product: count for (name, product), count in self.writes_ok.items()
                if name == client.name}


# --- the scenario ----------------------------------------------------------------------------


class Scenario:
    def __init__(self, args):
        self.args = args
        self.fleet = Fleet(args)
        self.base_url = args.base_url.rstrip("/")
        self.passed = 0
        self.failed = 0

    # Reporting ------------------------------------------------------------------------------

    def step(self, number: int, title: str, proves: str) -> None:
        print(f"\n=== Step {number}: {title}", flush=True)
        print(f"    proves: {proves}", flush=True)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  {'PASS' if ok else 'FAIL'}  {what}" + (f"  [{detail}]" if detail else ""),
              flush=True)
        return ok

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)

    # Helpers --------------------------------------------------------------------------------

    def client(self, name: str) -> Client:
        return Client(self.base_url, name)

    def wait_until(self, predicate, limit: float, interval: float = 0.2):
        """Polls predicate() until it returns a true value or limit seconds pass; returns
        (value, seconds waited)."""
        start = time.monotonic()
        while True:
            value = predicate()
            elapsed = time.monotonic() - start
            if value or elapsed >= limit:
                return value, elapsed
            time.sleep(interval)

    def sample(self, client: Client, count: int) -> collections.Counter:
        """Replicas that served `count` reads of client's cart (failed reads count as None)."""
        seen = collections.Counter()
        for _ in range(count):
            resp = client.cart()
            seen[resp.served_by if resp.status == 200 else None] += 1
        return seen

    def carts_intact(self, clients) -> list:
        """[(client name, problem)] for the clients whose cart is not what they filled."""
        problems = []
        for client, expected in clients:
            resp = client.cart()
            if resp.status != 200 or resp.body is None:
                problems.append((client.name, resp.describe()))
            elif cart_lines(resp.body) != expected:
                problems.append((client.name, f"cart {cart_lines(resp.body)} != {expected}"))
        return problems

    def check_load(self, load: Load, what: str, min_reads: int = 50) -> None:
        self.check(not load.reads_failed and load.reads_ok >= min_reads,
                   f"{what}: {load.reads_ok} reads, all 200 with the cart unchanged",
                   "; ".join(load.reads_failed[:5]) + (
                       f" (+{len(load.reads_failed) - 5} more)"
                       if len(load.reads_failed) > 5 else "")
                   if load.reads_failed else "")

    # Steps ----------------------------------------------------------------------------------

    def run(self) -> int:
        steps = [self.step1_round_robin, self.step2_sigkill, self.step3_sigterm_with_writes,
                 self.step4_restart, self.step5_scale, self.step6_redis_restart]
        for step in steps:
            try:
                step()
            except Exception as err:  # a broken step must not hide the others' results
                self.check(False, f"{step.__name__} raised {type(err).__name__}: {err}")
        print(f"\n{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1

    def step1_round_robin(self) -> None:
        self.step(1, "one session, 60 reads through nginx",
                  "round robin without stickiness: any replica serves any request of one "
                  "session, and the load spreads evenly")
        replicas = self.fleet.replicas()
        self.check(len(replicas) == 3, f"compose runs 3 app replicas: {sorted(replicas.values())}")

        shopper = self.client("shopper")
        resp = shopper.request("GET", "/api/products")
        products = [p["id"] for p in resp.body] if resp.status == 200 and resp.body else []
        self.check("ceramic-mug" in products,
                   f"GET /api/products lists {len(products)} products, ceramic-mug among them")
        self.products = products or ["ceramic-mug"]

        ok = all(shopper.add(pid, qty).status == 200
                 for pid, qty in [("ceramic-mug", 1), ("ceramic-mug", 1), ("tea-sampler", 3)])
        self.shopper = (shopper, {"ceramic-mug": 2, "tea-sampler": 3})
        self.check(ok, "POST /api/cart/items added ceramic-mug x2 and tea-sampler x3")

        header_counts = collections.Counter()
        mismatches = failures = 0
        for _ in range(60):
            resp = shopper.cart()
            if resp.status != 200 or cart_lines(resp.body) != self.shopper[1]:
                failures += 1
                continue
            header_counts[resp.served_by] += 1
            if resp.body.get("served_by") != resp.served_by:
                mismatches += 1
        self.note(f"X-Served-By counts: {dict(header_counts)}")
        self.check(failures == 0, "all 60 reads answered 200 with the same cart")
        self.check(mismatches == 0, "the JSON field served_by always equals X-Served-By")
        self.check(set(header_counts) == set(replicas.values()),
                   "all 3 replicas served this one session")
        self.check(all(10 <= n <= 30 for n in header_counts.values()) and len(header_counts) == 3,
                   "each replica served about a third (10 to 30 of 60)")

        # The clients that keep reading through the later steps, each with its own cart.
        self.readers = []
        for i in range(4):
            reader = self.client(f"reader{i}")
            product = self.products[i % len(self.products)]
            reader.add(product, i + 1)
            self.readers.append((reader, {product: i + 1}))
        problems = self.carts_intact(self.readers)
        self.check(not problems, "4 more clients filled their own carts", listed(problems))
        self.writer_carts = []  # (client, expected lines), filled in step 3

    def step2_sigkill(self) -> None:
        self.step(2, "docker kill (SIGKILL) one replica under continuous reads",
                  "a replica can die without warning: nginx moves its requests to the others "
                  "(retrying on error) and no cart lived in it")
        replicas = self.fleet.replicas()
        victim = sorted(replicas)[0]
        self.killed = (victim, replicas[victim])
        with Load(self.readers + [self.shopper]) as load:
            time.sleep(1.5)
            self.note(f"killing {replicas[victim]} while 5 clients read")
            self.fleet.run("docker", "kill", victim)
            killed_at = time.monotonic()
            time.sleep(6)
        self.check_load(load, "reads during and after the kill")
        after = load.replicas_since(killed_at + 3)
        self.note(f"served from 3 s after the kill: {dict(after)}")
        self.check(replicas[victim] not in after and len(after) == 2,
                   "from 3 s after the kill, only the 2 survivors serve")
        problems = self.carts_intact(self.readers + [self.shopper])
        self.check(not problems, "every cart is unchanged", listed(problems))

    def step3_sigterm_with_writes(self) -> None:
        self.step(3, "docker stop (SIGTERM) another replica under continuous reads and writes",
                  "a replica taken out of service drains (Connection: close for 2 s, then "
                  "closes) so not one read or write fails, and no write is lost or doubled")
        replicas = self.fleet.replicas()
        victim = next(cid for cid in sorted(replicas) if cid != self.killed[0])
        self.stopped = (victim, replicas[victim])
        writers = [self.client(f"writer{i}") for i in range(3)]
        with Load(self.readers + [self.shopper], writers, self.products) as load:
            time.sleep(1.5)
            self.note(f"stopping {replicas[victim]} while 5 clients read and 3 write")
            started = time.monotonic()
            self.fleet.run("docker", "stop", victim)
            self.note(f"docker stop took {time.monotonic() - started:.1f} s")
            time.sleep(3)
        self.check_load(load, "reads during the stop")
        writes = sum(load.writes_ok.values())
        self.check(not load.writes_failed and writes >= 30,
                   f"writes during the stop: {writes} adds, all 200",
                   "; ".join(load.writes_failed[:5]))
        lost = []
        for writer in writers:
            expected = load.expected_writer_cart(writer)
            self.writer_carts.append((writer, expected))
            resp = writer.cart()
            got = cart_lines(resp.body) if resp.status == 200 and resp.body else None
            if got != expected:
                lost.append(f"{writer.name}: cart {got} != successful adds {expected}")
        self.check(not lost, "each writer's cart holds exactly its successful adds",
                   "; ".join(lost))
        remaining = set(self.fleet.replicas().values())
        self.check(len(remaining) == 1, f"one replica left running: {sorted(remaining)}")

    def step4_restart(self) -> None:
        self.step(4, "docker start the killed replica",
                  "a returning replica is found again by nginx's DNS re-resolution and takes "
                  "traffic within seconds, without reloading nginx")
        victim, hostname = self.killed
        self.fleet.run("docker", "start", victim)
        probe = self.client("probe")

        def seen():
            return hostname in self.sample(probe, 4)

        ok, waited = self.wait_until(seen, 15)
        self.check(bool(ok), f"{hostname} serves again {waited:.1f} s after docker start "
                             f"(limit 15 s)")
        problems = self.carts_intact(self.readers + [self.shopper] + self.writer_carts)
        self.check(not problems, "every cart is unchanged", listed(problems))

    def step5_scale(self) -> None:
        self.step(5, "scale to 5 replicas, then down to 2 under continuous reads",
                  "capacity follows demand: new replicas take traffic within seconds, and "
                  "removing replicas (graceful stop) costs no request and no cart")
        self.fleet.compose_up("--scale", "app=5", "--no-recreate")
        done = time.monotonic()
        probe = self.client("probe")
        want = set(self.fleet.replicas().values())
        self.check(len(want) == 5, f"5 app replicas running: {sorted(want)}")
        seen = set()

        def all_serve():
            seen.update(self.sample(probe, 5))
            return want <= seen

        ok, _ = self.wait_until(all_serve, 10, interval=0.1)
        self.check(bool(ok), f"all 5 replicas serve within {time.monotonic() - done:.1f} s "
                             f"of the scale-up (limit 10 s)",
                   "" if ok else f"seen {sorted(x for x in seen if x)}")

        with Load(self.readers + [self.shopper]) as load:
            time.sleep(1)
            self.fleet.compose_up("--scale", "app=2", "--no-recreate")
            scaled_at = time.monotonic()
            time.sleep(4)
        self.check_load(load, "reads during the scale-down")
        left = set(self.fleet.replicas().values())
        after = load.replicas_since(scaled_at + 2.5)
        self.note(f"served from 2.5 s after the scale-down: {dict(after)}")
        self.check(len(left) == 2 and set(after) <= left,
                   f"2 replicas left, and only they serve: {sorted(left)}")
        problems = self.carts_intact(self.readers + [self.shopper] + self.writer_carts)
        self.check(not problems, "no cart lost: every client's cart is unchanged", listed(problems))

    def step6_redis_restart(self) -> None:
        self.step(6, "docker compose restart redis",
                  "carts are durable: Redis keeps them in its append-only file on a named "
                  "volume, and the replicas reconnect by themselves")
        time.sleep(1.5)  # appendfsync everysec: let the last writes reach the disk
        self.fleet.compose("restart", "redis")
        probe_client, expected = self.shopper
        resp, waited = self.wait_until(
            lambda: (lambda r: r if r.status == 200 else None)(probe_client.cart()), 30, 0.5)
        self.check(resp is not None, f"the shop answers again {waited:.1f} s after the restart")
        problems = self.carts_intact(self.readers + [self.shopper] + self.writer_carts)
        self.check(not problems,
                   f"all {len(self.readers) + 1 + len(self.writer_carts)} carts survived the "
                   f"Redis restart", listed(problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--project", required=True, help="the compose project name")
    parser.add_argument("--repo-root", required=True)
    parser.add_argument("--compose-file", action="append", default=[],
                        help="a compose file, once per file (default: the repo's)")
    parser.add_argument("--compose-up-arg", action="append", default=[],
                        help="an extra argument of `docker compose up`, once per argument, "
                             "e.g. --compose-up-arg=--pull --compose-up-arg=never")
    return Scenario(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
