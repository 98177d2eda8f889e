"""greeter: an iii worker written with the published Python SDK (PyPI iii-sdk).

It serves `greeter::hello` on GET /hello/:name through iii-http, `greeter::add` for other
workers (or `iii trigger greeter::add a=2 b=3`) to call, and `greeter::fetch`, which GETs a
URL from inside the worker's sandbox (its egress network) and returns what came back. The engine's address comes from
III_URL, which iii sets for every worker it runs.
"""

import os
import socket
import time
import urllib.request

from iii import InitOptions, register_worker

iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="greeter"))


def hello(req):
    name = (req.get("path_params") or {}).get("name", "world")
    shout = (req.get("query_params") or {}).get("shout") in ("1", "true", ["1"], ["true"])
    message = f"hello, {name}!"
    return {
        "status_code": 200,
        "headers": {"x-served-by": socket.gethostname()},
        "body": {"message": message.upper() if shout else message, "worker": "greeter"},
    }


def add(data):
    return {"sum": data["a"] + data["b"]}


def fetch(data):
    with urllib.request.urlopen(data["url"], timeout=10) as r:
        return {"status": r.status, "body": r.read().decode()}


iii.register_function("greeter::hello", hello, description="greets NAME over HTTP")
iii.register_function("greeter::add", add, description="adds a and b")
iii.register_function("greeter::fetch", fetch, description="GETs url from the sandbox")
# iii-sdk 0.25 marks register_trigger deprecated (it logs so at start) but still speaks it;
# it is the registration every published SDK release understands.
iii.register_trigger(
    {
        "type": "http",
        "function_id": "greeter::hello",
        "config": {"api_path": "/hello/:name", "http_method": "GET"},
    }
)
print(f"greeter: serving greeter::hello, greeter::add and greeter::fetch via {os.environ['III_URL']}", flush=True)
while True:
    time.sleep(3600)
