"""A Python worker (PyPI iii-sdk) that the SDK tests drive; the same commands and events as
puppet.mjs beside it: commands on stdin, one JSON object a line; events on stdout as lines
starting with "@@ " followed by JSON."""

import json
import os
import sys
import threading
import time

from iii import InitOptions, InvocationError, TriggerAction, register_worker

_out = threading.Lock()


def say(ev):
    # default=repr: the SDK hands HTTP handlers channel objects, which are not JSON.
    line = "@@ " + json.dumps(ev, default=repr) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


iii = register_worker(
    os.environ["III_URL"],
    InitOptions(worker_name=os.environ.get("PUPPET_NAME", "py-puppet")),
)
functions = {}
triggers = {}


def handler(cmd):
    def run(data):
        say({"ev": "invoked", "fn": cmd["id"], "data": data, "t": int(time.time() * 1000)})
        if cmd.get("sleep_ms"):
            time.sleep(cmd["sleep_ms"] / 1000)
            say({"ev": "woke", "fn": cmd["id"]})
        kind = cmd.get("kind")
        if kind == "add":
            return {"sum": (data or {}).get("a", 0) + (data or {}).get("b", 0)}
        if kind == "echo":
            return data
        if kind == "throw":
            raise RuntimeError(cmd.get("message", "boom"))
        if kind == "http":
            return {
                "status_code": cmd.get("status", 200),
                "headers": cmd.get("headers", {}),
                "body": {
                    "worker": "python",
                    "method": data.get("method"),
                    "path": data.get("path"),
                    "query_params": data.get("query_params"),
                    "path_params": data.get("path_params"),
                    "body": data.get("body"),
                    "has_channels": "request_body" in data and "response" in data,
                },
            }
        return cmd.get("reply")

    return run


def call(cmd):
    started = time.monotonic()
    req = {"function_id": cmd["function_id"]}
    if "payload" in cmd:
        req["payload"] = cmd["payload"]
    if cmd.get("blob_kib"):
        req["payload"] = {"blob": "x" * (1024 * cmd["blob_kib"])}
    if cmd.get("timeout_ms"):
        req["timeout_ms"] = cmd["timeout_ms"]
    if cmd.get("void"):
        req["action"] = TriggerAction.Void()
    ms = lambda: int((time.monotonic() - started) * 1000)  # noqa: E731
    try:
        ok = iii.trigger(req)
        say({"ev": "result", "tag": cmd["tag"], "ok": ok, "ms": ms()})
    except InvocationError as e:
        say({"ev": "result", "tag": cmd["tag"], "error": {"code": e.code, "message": e.message}, "ms": ms()})
    except Exception as e:  # noqa: BLE001
        say({"ev": "result", "tag": cmd["tag"], "error": {"code": "exception", "message": repr(e)}, "ms": ms()})


def run(cmd):
    op = cmd["op"]
    if op == "fn":
        functions[cmd["id"]] = iii.register_function(cmd["id"], handler(cmd), description=cmd.get("description"))
    elif op == "unfn":
        ref = functions.pop(cmd["id"], None)
        if ref is not None:
            ref.unregister()
    elif op == "trigger":
        triggers[cmd["tag"]] = iii.register_trigger(
            {"type": cmd["type"], "function_id": cmd["function_id"], "config": cmd.get("config")}
        )
    elif op == "untrigger":
        t = triggers.pop(cmd["tag"], None)
        if t is not None:
            t.unregister()
    elif op == "call":
        threading.Thread(target=call, args=(cmd,), daemon=True).start()
        return
    else:
        say({"ev": "error", "message": f"unknown op {op}"})
        return
    say({"ev": "done", "op": op, "tag": cmd.get("tag", cmd.get("id"))})


say({"ev": "ready"})
for line in sys.stdin:
    if line.strip():
        run(json.loads(line))
# stdin closed: keep serving until killed (the SDK's loop thread is not a daemon).
while True:
    time.sleep(3600)
