"""A reference ApiGear ObjectAPI MQTT peer for busbar's interop tests, written from the
protocol notes (peers-apigear-celine-cstbox-sermas.md, A1-A3), not from ApiGear code.

    apigear_peer.py HOST PORT {service|client} CLIENT_ID MODULE_YAML [MODULE_YAML ...]
                    [--style {python,cpp}]

The peer serves, or is a client of, every interface of every module given, on the topics
`{module}/{Interface}/{prop|set|sig|rpc}/{member}`. `--style python` (the default) behaves
like ApiGear's generated paho adapters, `--style cpp` like the C++17 (Paho C) ones.

Standard output: each line meant for the test is `@@ ` plus one JSON value; the first is
"READY", once the broker has acknowledged every subscription. Standard input: one JSON
command per line, each answered by exactly one `@@` line. Events (`prop`, `sig`, `set`,
`call`, `reconnected`, `unmatched_reply`, `error`) may come in between. When standard
input closes the peer disconnects and exits 0; on a fatal error it exits non-zero.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

QOS = 2  # the Python adapters use QoS 2 for everything, and so does C++ (`#define QOS 2`)
WAIT = 20.0  # for the SUBACKs at start, before giving up
PUBLISH_WAIT = 60.0  # for a PUBCOMP; longer, as the tests may stop the broker meanwhile
PRIMITIVE_DEFAULTS = {"bool": False, "int": 0, "int32": 0, "int64": 0,
                      "float": 0.0, "float32": 0.0, "float64": 0.0, "string": ""}

_say_lock = threading.Lock()


_started = False
_held = []


def say(obj):
    # One os.write per line, so that nothing else written to standard output (by paho or
    # Python) can land inside one of our lines; the lock keeps our own threads apart.
    # "READY" is always the first line: events that come earlier (retained values arrive
    # while later subscriptions still wait for their SUBACKs) are held until it is out.
    global _started
    with _say_lock:
        if not _started and obj != "READY":
            _held.append(obj)
            return
        if obj == "READY":
            _started = True
            for line in ["READY"] + _held:
                _write(line)
            _held.clear()
            return
        _write(obj)


def _write(obj):
    # Called with _say_lock held.
    data = ("@@ " + json.dumps(obj, allow_nan=False, ensure_ascii=False) + "\n").encode()
    sys.stdout.flush()
    written = os.write(1, data)
    while written < len(data):  # only on a signal-interrupted huge write
        written += os.write(1, data[written:])


def die(message):
    # Called from paho's thread too, where raising would only end that thread.
    sys.stderr.write(f"apigear_peer: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def dumps(value):
    # As the Python adapters: NaN and Infinity cannot be sent.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(payload):
    # Python's json accepts NaN/Infinity, which no other peer can produce or read back.
    return json.loads(payload, parse_constant=_reject_constant)


def is_cpp_empty(value):
    # nlohmann::json::empty() is true for null, [] and {} (and false for scalars).
    return value is None or (isinstance(value, (list, dict)) and not value)


class CommandError(Exception):
    pass


# ---------------------------------------------------------------- module documents

class Interface:
    def __init__(self, module, name, props, ops, sigs):
        self.module, self.name = module, name
        self.key = f"{module}/{name}"
        self.props = {p["name"]: p for p in props}
        self.ops = {o["name"]: o for o in ops}
        self.sigs = {s["name"]: s for s in sigs}

    def topic(self, verb, member):
        return f"{self.key}/{verb}/{member}"


def is_void(op):
    ret = op.get("return")
    # `return: int` (shorthand) and `return: {type: int}` both mean a result.
    if ret is None:
        return True
    return (ret.get("type") if isinstance(ret, dict) else ret) == "void"


def load_interfaces(paths):
    modules = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        if not isinstance(doc, dict) or "name" not in doc:
            raise SystemExit(f"{path}: not an ApiGear module document")
        modules[doc["name"]] = doc

    def members(module, iface_name, kind, seen):
        # Base members first; a derived member of the same name replaces the base one.
        doc = modules.get(module) or {}
        iface = next((i for i in doc.get("interfaces") or [] if i["name"] == iface_name), None)
        if iface is None:
            raise SystemExit(f"interface {module}/{iface_name} not found")
        if iface_name in seen:
            raise SystemExit(f"{module}/{iface_name} extends itself")
        result = {}
        base = iface.get("extends")
        if base:
            base_module = base.get("import") or module
            for m in members(base_module, base["name"], kind, seen | {iface_name}):
                result[m["name"]] = m
        for m in iface.get(kind) or []:
            result[m["name"]] = m
        return list(result.values())

    interfaces = []
    for name, doc in modules.items():
        for iface in doc.get("interfaces") or []:
            interfaces.append(Interface(
                name, iface["name"],
                *(members(name, iface["name"], kind, frozenset())
                  for kind in ("properties", "operations", "signals"))))
    return modules, interfaces


def type_default(modules, module, node):
    if node.get("array"):
        return []
    type_name = node.get("type")
    if type_name in PRIMITIVE_DEFAULTS:
        return PRIMITIVE_DEFAULTS[type_name]
    # Resolve `import:` or a dotted `custom_types.Vector3D` to the module holding the type.
    owner = node.get("import") or module
    if isinstance(type_name, str) and "." in type_name:
        prefix, type_name = type_name.rsplit(".", 1)
        owner = node.get("import") or prefix
    for enum in (modules.get(owner) or {}).get("enums") or []:
        if enum["name"] == type_name and enum.get("members"):
            value = enum["members"][0].get("value", 0)
            return int(value, 0) if isinstance(value, str) else value
    return None  # structs, externs and unknown types: no value until one is set


# ---------------------------------------------------------------- the peer

class Pending:
    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.correlation = None


class Peer:
    def __init__(self, args, modules, interfaces):
        self.args, self.cpp = args, args.style == "cpp"
        self.service = args.role == "service"
        self.interfaces = {i.key: i for i in interfaces}
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=args.client_id, protocol=mqtt.MQTTv5)
        # The Python client builds its result topic from paho's `_client_id`, which is
        # bytes: on the wire it reads `b'<id>'`. C++ uses the plain id.
        cid = args.client_id if self.cpp else str(self.client._client_id)
        self.routes = {}  # exact topic -> (handler, interface, member); no wildcards
        self.result_topics = {}  # client: (interface key, op) -> its ResponseTopic
        self.state = {}  # service: property values per interface
        self.cache = {}  # client: last property values received per interface
        for i in interfaces:
            if self.service:
                self.state[i.key] = {p: type_default(modules, i.module, node)
                                     for p, node in i.props.items()}
                for p, node in i.props.items():
                    if not node.get("readonly"):
                        self.routes[i.topic("set", p)] = (self.on_set, i, p)
                for o in i.ops:
                    self.routes[i.topic("rpc", o)] = (self.on_call, i, o)
            else:
                self.cache[i.key] = {}
                for p in i.props:
                    self.routes[i.topic("prop", p)] = (self.on_prop, i, p)
                for s in i.sigs:
                    self.routes[i.topic("sig", s)] = (self.on_sig, i, s)
                for o in i.ops:
                    result = f"{i.topic('rpc', o)}/{cid}/result"
                    self.result_topics[(i.key, o)] = result
                    self.routes[result] = (self.on_reply, i, o)
        self.lock = threading.Lock()
        self.unacked = set()  # SUBSCRIBE mids of the current connection not yet acknowledged
        self.ready = threading.Event()
        self.next_id = 0  # Python correlation counter, one byte, per client
        self.pending = {}  # correlation key -> Pending
        c = self.client
        c.on_connect, c.on_subscribe = self.on_connect, self.on_subscribe
        c.on_message, c.on_disconnect = self.on_message, self.on_disconnect
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)

    # -- connection

    def start(self):
        # clean_start=True on every connect (paho's default is "first only"): the adapters
        # rely on retained values, not on a session, after a reconnect.
        self.client.connect(self.args.host, self.args.port, keepalive=60, clean_start=True)
        self.client.loop_start()
        if not self.ready.wait(WAIT):
            die(f"no SUBACK for all of {sorted(self.routes)} within {WAIT:.0f} s")
        say("READY")

    def on_connect(self, client, _userdata, _flags, reason_code, _props):
        if reason_code.is_failure:
            sys.stderr.write(f"apigear_peer: connection refused: {reason_code}\n")
            return
        # Runs on paho's thread, so no SUBACK can be handled before all mids are recorded.
        with self.lock:
            self.unacked = set()
            for topic in self.routes:
                rc, mid = client.subscribe(topic, qos=QOS)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    die(f"cannot subscribe {topic}: {mqtt.error_string(rc)}")
                self.unacked.add(mid)
            if self.service and self.cpp:
                # The C++ service republishes everything it has whenever it connects.
                for key, props in self.state.items():
                    for prop, value in props.items():
                        if value is not None:
                            self.publish(self.interfaces[key].topic("prop", prop), value, True)
            if not self.unacked:
                self._subscribed()

    def on_subscribe(self, _client, _userdata, mid, reason_codes, _props):
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            die(f"subscription refused: {failed}")
        with self.lock:
            if mid in self.unacked:
                self.unacked.discard(mid)
                if not self.unacked:
                    self._subscribed()

    def _subscribed(self):
        # READY for the first connection that got all its SUBACKs, `reconnected` after.
        if not self.ready.is_set():
            self.ready.set()
        else:
            say({"reconnected": True})

    def on_disconnect(self, _client, _userdata, _flags, reason_code, _props):
        # Unless we asked for it, paho's loop reconnects by itself (reconnect_delay_set).
        sys.stderr.write(f"apigear_peer: disconnected ({reason_code})\n")

    def publish(self, topic, value, retain=False, props=None):
        return self.client.publish(topic, dumps(value), qos=QOS, retain=retain, properties=props)

    @staticmethod
    def wait_published(info):
        # Not info.wait_for_publish(): it raises for a message published while offline,
        # which paho still keeps and sends after reconnecting.
        with info._condition:
            if not info._condition.wait_for(lambda: info._published, PUBLISH_WAIT):
                raise CommandError(f"publish of mid {info.mid} not completed "
                                   f"in {PUBLISH_WAIT:.0f} s")

    # -- incoming messages

    def on_message(self, _client, _userdata, msg):
        route = self.routes.get(msg.topic)
        if route is None:
            return  # not one of ours (exact topic dispatch, like the adapters)
        handler, iface, member = route
        try:
            handler(iface, member, msg)
        except Exception as e:  # keep paho's thread alive: report and go on
            say({"error": f"{type(e).__name__}: {e}", "topic": msg.topic})

    def on_set(self, iface, prop, msg):
        value = loads(msg.payload)
        event = {"topic": msg.topic, "value": value, "retained": bool(msg.retain)}
        if self.cpp and is_cpp_empty(value):
            say({"set": {**event, "ignored": True}})
            return
        say({"set": event})
        state = self.state[iface.key]
        # Publish only on change: an equal value is not echoed back.
        if state.get(prop) != value or prop not in state:
            state[prop] = value
            self.publish(iface.topic("prop", prop), value, retain=True)

    def on_call(self, iface, op, msg):
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        args = loads(msg.payload)
        say({"call": {"topic": msg.topic, "args": args, "response_topic": response_topic,
                      "correlation_hex": None if correlation is None else correlation.hex()}})
        if response_topic is None:
            say({"error": "no response topic", "topic": msg.topic})
            return
        node = iface.ops[op]
        if is_void(node):
            if self.cpp:
                return  # the C++ service never answers a void operation
            result = 0  # the Python service answers void operations with `0`
        else:
            # Generic behaviour: echo the first argument (null when there is none).
            result = args[0] if isinstance(args, list) and args else None
        reply = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            reply.CorrelationData = correlation  # echoed byte for byte
        self.publish(response_topic, result, props=reply)

    def on_prop(self, iface, prop, msg):
        if not msg.payload:
            return  # an empty retained message clears the value; it carries none
        value = loads(msg.payload)
        event = {"topic": msg.topic, "value": value, "retained": bool(msg.retain)}
        if self.cpp and is_cpp_empty(value):
            event["ignored"] = True
        else:
            with self.lock:  # before the event, so that a `cache` command sees it
                self.cache[iface.key][prop] = value
        say({"prop": event})

    def on_sig(self, _iface, _sig, msg):
        say({"sig": {"topic": msg.topic, "args": loads(msg.payload)}})

    def on_reply(self, _iface, _op, msg):
        correlation = getattr(msg.properties, "CorrelationData", None)
        value = loads(msg.payload) if msg.payload else None
        key = None
        if correlation is not None:
            if self.cpp:
                try:
                    key = int(correlation.decode())  # std::stoi
                except (UnicodeDecodeError, ValueError):
                    key = None
            else:
                key = int.from_bytes(correlation, "big")
        with self.lock:
            entry = self.pending.pop(key, None)
        if entry is None:  # a late reply, or one to a fire-and-forget call
            say({"unmatched_reply": {"topic": msg.topic, "value": value,
                                     "correlation_hex": None if correlation is None
                                     else correlation.hex()}})
            return
        entry.value, entry.correlation = value, correlation
        entry.done.set()

    # -- commands

    def interface(self, spec):
        iface = self.interfaces.get(spec.get("interface"))
        if iface is None:
            raise CommandError(f"unknown interface {spec.get('interface')!r}")
        return iface

    def command(self, line):
        cmd = json.loads(line)
        if not isinstance(cmd, dict) or len(cmd) != 1:
            raise CommandError("a command is an object with exactly one key")
        (name, spec), = cmd.items()
        handlers = ({"set_local": self.cmd_set_local, "signal": self.cmd_signal,
                     "clear_retained": self.cmd_clear_retained} if self.service else
                    {"call": self.cmd_call, "calls": self.cmd_calls, "set": self.cmd_set,
                     "cache": self.cmd_cache})
        if name not in handlers:
            raise CommandError(f"unknown command {name!r} for a {self.args.role}")
        return handlers[name](spec)

    def cmd_set_local(self, spec):
        iface = self.interface(spec)
        prop = spec["prop"]
        if prop not in iface.props:
            raise CommandError(f"no property {prop} in {iface.key}")
        with self.lock:  # paho's thread reads the state on reconnect (style cpp)
            self.state[iface.key][prop] = spec["value"]
        # Published even when unchanged: the test asks for it explicitly.
        self.wait_published(self.publish(iface.topic("prop", prop), spec["value"], True))
        return {"done": "set_local"}

    def cmd_signal(self, spec):
        iface = self.interface(spec)
        if spec["name"] not in iface.sigs:
            raise CommandError(f"no signal {spec['name']} in {iface.key}")
        info = self.publish(iface.topic("sig", spec["name"]), spec.get("args", []))
        self.wait_published(info)
        return {"done": "signal"}

    def cmd_clear_retained(self, spec):
        iface = self.interface(spec)
        infos = [self.client.publish(iface.topic("prop", p), b"", qos=QOS, retain=True)
                 for p in iface.props]
        for info in infos:
            self.wait_published(info)
        return {"done": "clear_retained"}

    def operation(self, spec):
        iface = self.interface(spec)
        op = spec["op"]
        if op not in iface.ops:
            raise CommandError(f"no operation {op} in {iface.key}")
        return iface, op

    def send_request(self, iface, op, args, correlation):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.result_topics[(iface.key, op)]
        props.CorrelationData = correlation
        return self.publish(iface.topic("rpc", op), args, props=props)

    def request(self, iface, op, args):
        """Sends one rpc request and returns (correlation key, Pending entry)."""
        with self.lock:
            if self.cpp:
                # Random decimal ids like C++; 0 is kept for fire-and-forget calls and
                # ids still pending are skipped so concurrent calls stay distinguishable.
                key = random.randint(1, 100000)
                while key in self.pending:
                    key = random.randint(1, 100000)
                correlation = str(key).encode()
            else:
                if self.next_id > 255:  # bytes([256]) raises in the Python adapter too
                    raise CommandError("one-byte correlation ids exhausted (256 calls)")
                key, self.next_id = self.next_id, self.next_id + 1
                correlation = bytes([key])
            entry = self.pending[key] = Pending()
        self.send_request(iface, op, args, correlation)
        return key, entry

    def fire_and_forget(self, iface, op, args):
        # The C++ client sends void calls with responseId 0 and never waits for a reply.
        self.wait_published(self.send_request(iface, op, args, b"0"))

    def cmd_call(self, spec):
        iface, op = self.operation(spec)
        args = spec.get("args", [])
        if self.cpp and is_void(iface.ops[op]):
            self.fire_and_forget(iface, op, args)
            return {"reply": None, "fire_and_forget": True}
        key, entry = self.request(iface, op, args)
        got = entry.done.wait(spec.get("timeout", 10))
        with self.lock:
            self.pending.pop(key, None)  # no leak when it timed out
        if not got:
            return {"timeout": op}
        return {"reply": entry.value, "correlation_hex": entry.correlation.hex()}

    def cmd_calls(self, spec):
        iface, op = self.operation(spec)
        args_list = spec["args_list"]
        if not self.cpp and self.next_id + len(args_list) > 256:
            raise CommandError(f"{len(args_list)} calls exceed the 256 one-byte correlation "
                               f"ids ({self.next_id} used)")
        if self.cpp and is_void(iface.ops[op]):
            for args in args_list:
                self.fire_and_forget(iface, op, args)
            return {"replies": [None] * len(args_list), "timeouts": 0}
        sent = [self.request(iface, op, args) for args in args_list]  # all before any wait
        deadline = time.monotonic() + spec.get("timeout", 10)
        replies, timeouts = [], 0
        for key, entry in sent:
            entry.done.wait(max(0.0, deadline - time.monotonic()))
            with self.lock:
                self.pending.pop(key, None)
            if entry.done.is_set():
                replies.append(entry.value)
            else:
                replies.append(None)
                timeouts += 1
        return {"replies": replies, "timeouts": timeouts}

    def cmd_set(self, spec):
        iface = self.interface(spec)
        prop, value = spec["prop"], spec["value"]
        node = iface.props.get(prop)
        if node is None:
            raise CommandError(f"no property {prop} in {iface.key}")
        if node.get("readonly"):
            raise CommandError(f"{iface.key}/{prop} is readonly: the adapters have no setter")
        cache = self.cache[iface.key]
        # Like the Python setter: nothing is sent for the value already known, and the
        # cache changes only when the service's `prop` message comes back.
        if prop in cache and cache[prop] == value:
            return {"sent": False}
        self.wait_published(self.publish(iface.topic("set", prop), value))
        return {"sent": True}

    def cmd_cache(self, spec):
        with self.lock:
            return {"cache": dict(self.cache[self.interface(spec).key])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("role", choices=["service", "client"])
    parser.add_argument("client_id")
    parser.add_argument("modules", nargs="+", metavar="MODULE_YAML")
    parser.add_argument("--style", choices=["python", "cpp"], default="python")
    args = parser.parse_args()
    modules, interfaces = load_interfaces(args.modules)
    peer = Peer(args, modules, interfaces)
    try:
        peer.start()
    except OSError as e:
        die(f"cannot connect to {args.host}:{args.port}: {e}")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = peer.command(line)
        except Exception as e:  # a bad command gets an answer, never a dead peer
            answer = {"error": f"{type(e).__name__}: {e}"}
        say(answer)
    peer.client.disconnect()
    peer.client.loop_stop()


if __name__ == "__main__":
    main()
