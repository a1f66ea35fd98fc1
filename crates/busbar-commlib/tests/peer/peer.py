"""A commlib-py peer for busbar's interop tests, run with the Python of a venv that holds
commlib-py 0.13.1 or 0.13.2. One endpoint per process, driven from the command line:

    peer.py BROKER MODE ARGS...

BROKER is `mqtt:HOST:PORT`, `redis:HOST:PORT` or `amqp:HOST:PORT` (guest/guest, vhost
`/`). The peer prints `READY` once its endpoint runs, then one JSON
object per line (each line of its own marked `@@ `) for what it received or was answered, and exits when done (or when its
standard input closes, for services). Publishers wait for a line on standard input before
publishing, so the Rust side can subscribe first. commlib reports a subscriber running
before the broker has its subscription, so the Rust side sends probes (`seq` -1) until one
is reported (`{"probe": true}`), then the real messages.

With `PEER_COMPRESSION=zlib` in its environment the peer's node compresses what it sends and
inflates what it receives (commlib's DEFAULT_COMPRESSION); it refuses to run where commlib
would use lz4 instead, so that the test knows what is on the wire.
"""

import os

import json
import sys
import threading

from commlib.msg import ActionMessage, PubSubMessage, RPCMessage
from commlib.node import Node


class Sample(PubSubMessage):
    seq: int = 0
    n: int = 0
    text: str = ""


class Count(ActionMessage):
    class Goal(ActionMessage.Goal):
        to: int = 0

    class Result(ActionMessage.Result):
        total: int = 0

    class Feedback(ActionMessage.Feedback):
        at: int = 0


class AddTwoInt(RPCMessage):
    class Request(RPCMessage.Request):
        a: int = 0
        b: int = 0

    class Response(RPCMessage.Response):
        c: int = 0


def say(obj):
    # Marked, so that commlib's own log lines on standard output are never taken for ours,
    # and written in one system call: `print` writes the text and its newline apart, and
    # commlib's logging threads write in between. A pipe write this short is atomic, so a
    # line of ours is never split (at worst a log fragment comes before it on its line).
    sys.stdout.flush()
    os.write(1, ("@@ " + json.dumps(obj, ensure_ascii=False) + "\n").encode())


class MqttSubscriptions:
    """The MQTT topics the broker has acknowledged (SUBACK), across every paho client of the
    process. commlib reports its endpoints running before the broker has their
    subscriptions, and its action client subscribes to status and feedback on two
    connections of its own; a peer that waits here before it reports READY cannot miss what
    the busbar side publishes next."""

    def __init__(self):
        import paho.mqtt.client as paho

        self._done = threading.Condition()
        self._acked = set()
        self._pending = {}  # (client, mid) -> topic, sent and not yet acknowledged
        self._early = set()  # (client, mid) acknowledged before subscribe() returned
        tracker = self
        subscribe, init = paho.Client.subscribe, paho.Client.__init__

        def tracked_subscribe(client, topic, *args, **kwargs):
            result = subscribe(client, topic, *args, **kwargs)
            if result[1] is not None and isinstance(topic, str):
                with tracker._done:
                    key = (id(client), result[1])
                    if key in tracker._early:
                        tracker._acked.add(topic)
                        tracker._done.notify_all()
                    else:
                        tracker._pending[key] = topic
            return result

        def tracked_init(client, *args, **kwargs):
            init(client, *args, **kwargs)

            def on_subscribe(c, _userdata, mid, *_rest):
                with tracker._done:
                    topic = tracker._pending.pop((id(c), mid), None)
                    if topic is None:
                        tracker._early.add((id(c), mid))
                    else:
                        tracker._acked.add(topic)
                        tracker._done.notify_all()

            client.on_subscribe = on_subscribe

        paho.Client.subscribe = tracked_subscribe
        paho.Client.__init__ = tracked_init

    def wait_for(self, *topics):
        with self._done:
            if not self._done.wait_for(lambda: set(topics) <= self._acked, timeout=20):
                raise SystemExit(f"the broker never acknowledged {topics}")


def params_for(broker):
    kind, host, port = broker.split(":")
    if kind == "mqtt":
        from commlib.transports.mqtt import ConnectionParameters
    elif kind == "amqp":
        from commlib.transports.amqp import ConnectionParameters
    elif kind == "redis":
        from commlib.transports.redis import ConnectionParameters
    elif kind == "kafka":
        from commlib.transports.kafka import ConnectionParameters
    else:
        raise SystemExit(f"unknown broker kind {kind}")

    return ConnectionParameters(host=host, port=int(port))


def node_for(broker, **options):
    params = params_for(broker)
    wanted = os.environ.get("PEER_COMPRESSION")
    if wanted in ("zlib", "lz4"):
        from commlib import compression

        # commlib 0.13.2 compresses with LZ4 frames when the lz4 package is installed.
        if getattr(compression, "HAS_LZ4", False) != (wanted == "lz4"):
            raise SystemExit(f"this commlib would not compress with {wanted}")
        options["compression"] = compression.CompressionType.DEFAULT_COMPRESSION
    options.setdefault("node_name", "busbar_itest_peer")
    options.setdefault("heartbeats", False)
    return Node(connection_params=params, **options)


def main():
    broker, mode, *args = sys.argv[1:]
    if mode == "heartbeats":
        # A node that only sends heartbeats, every 0.2 s, until its standard input closes.
        node = node_for(broker, node_name=args[0], heartbeats=True, heartbeat_interval=0.2)
        node.run()
        say("READY")
        sys.stdin.read()
        node.stop()
        return
    if mode == "ctrl-node":
        # A node with its start/stop services; prints its state once it has been stopped.
        # On MQTT each service has a connection of its own, subscribed after commlib says it
        # runs: READY waits for the broker's SUBACK of both.
        subscriptions = MqttSubscriptions() if broker.startswith("mqtt:") else None
        node = node_for(broker, node_name=args[0], ctrl_services=True)
        node.run()
        if subscriptions is not None:
            # commlib serves them under its own spelling of the node name.
            name = args[0].replace("-", "_")
            subscriptions.wait_for(f"{name}/start", f"{name}/stop")
        say("READY")
        import time

        while node.state.name == "RUNNING":
            time.sleep(0.01)
        say({"state": node.state.name})
        return
    if mode == "ptopic-bridge":
        # commlib's pattern bridge from BROKER (pattern FROM) to TO_BROKER, under the prefix
        # TO; runs until its standard input closes.
        from commlib.bridges import PTopicBridge

        pattern, prefix, to_broker = args
        bridge = PTopicBridge(
            from_uri=pattern,
            to_uri=prefix,
            from_broker_params=params_for(broker),
            to_broker_params=params_for(to_broker),
        )
        bridge.run()
        # commlib bug (0.13.1 and 0.13.2): PTopicBridge.run() starts only its subscriber,
        # so its publisher has no connection and every forward fails. Start it here.
        bridge._pub.run()
        say("READY")
        sys.stdin.read()
        bridge.stop()
        return
    node = node_for(broker)
    done = threading.Event()

    if mode == "pub":
        topic, count = args[0], int(args[1])
        pub = node.create_publisher(topic=topic, msg_type=Sample)
        node.run()
        say("READY")
        sys.stdin.readline()
        for i in range(count):
            pub.publish(Sample(seq=i, n=-3 - i, text="caf\u00e9"))
        # Let paho hand the last QoS 0 messages to the socket before the process ends.
        import time

        time.sleep(0.5)
    elif mode in ("sub", "sub-untyped", "psub"):
        topic, count = args[0], int(args[1])
        got = []

        def on_message(msg, *rest):
            body = msg if isinstance(msg, dict) else msg.model_dump()
            if body.get("seq") == -1:
                # A probe: the sender learns that the subscription is in place.
                say({"probe": True})
                return
            say({"topic": rest[0] if rest else topic, "msg": body})
            got.append(1)
            if len(got) >= count:
                done.set()

        msg_type = None if mode == "sub-untyped" else Sample
        if mode == "psub":
            node.create_psubscriber(topic=topic, msg_type=msg_type, on_message=on_message)
        else:
            node.create_subscriber(topic=topic, msg_type=msg_type, on_message=on_message)
        node.run()
        say("READY")
        done.wait(30)
    elif mode == "rpc-service":
        name = args[0]

        def on_request(req):
            return AddTwoInt.Response(c=req.a + req.b)

        node.create_rpc(rpc_name=name, msg_type=AddTwoInt, on_request=on_request)
        node.run()
        say("READY")
        sys.stdin.read()
    elif mode == "action-service":
        # Counts to the goal's `to`, one feedback per step, 50 ms apart; stops early when
        # cancelled.
        import time

        def on_goal(goal_h):
            total = 0
            for i in range(1, goal_h.data.to + 1):
                if goal_h.cancel_event.is_set():
                    break
                total += i
                goal_h.send_feedback(Count.Feedback(at=i))
                time.sleep(0.05)
            return Count.Result(total=total)

        node.create_action(action_name=args[0], msg_type=Count, on_goal=on_goal)
        node.run()
        say("READY")
        sys.stdin.read()
    elif mode == "action-client":
        # Sends one goal counting to `to` and reports its feedback and result; with `cancel`,
        # cancels after the first feedback past the probes.
        name, to = args[0], int(args[1])
        cancel = args[2:] == ["cancel"]
        subscriptions = MqttSubscriptions() if broker.startswith("mqtt:") else None
        first_feedback = threading.Event()

        def on_feedback(fb):
            say({"feedback": fb.at})
            # `at` 0 is the service's probe; cancel only once the goal really runs.
            if fb.at > 0:
                first_feedback.set()

        def on_result(res):
            say({"result": None if res is None else res.model_dump()})
            done.set()

        client = node.create_action_client(
            action_name=name, msg_type=Count, on_feedback=on_feedback, on_result=on_result
        )
        node.run()
        if subscriptions is not None:
            topic = name.replace(".", "/")
            subscriptions.wait_for(f"{topic}/status", f"{topic}/feedback")
        say("READY")
        sys.stdin.readline()
        resp = client.send_goal(Count.Goal(to=to))
        say({"goal": resp.model_dump()})
        if cancel:
            first_feedback.wait(10)
            reply = client.cancel_goal()
            say({"cancel": None if reply is None else reply.model_dump()})
        done.wait(20)
    elif mode == "rpc-call":
        name, a, b = args[0], int(args[1]), int(args[2])
        # `corr` (AMQP only): the client sets and checks a correlation id.
        extra = {"use_corr_id": True} if args[3:] == ["corr"] else {}
        client = node.create_rpc_client(rpc_name=name, msg_type=AddTwoInt, **extra)
        node.run()
        say("READY")
        resp = client.call(AddTwoInt.Request(a=a, b=b), timeout=10)
        say({"response": None if resp is None else resp.model_dump()})
    elif mode == "rest-call":
        # A client of commlib's REST proxy, with the proxy's message type as
        # commlib-rest-proxy defines it (fields, types and defaults).
        from typing import Any, Dict, Optional, Union

        class RESTProxyMessage(RPCMessage):
            class Request(RPCMessage.Request):
                host: Optional[str] = "localhost"
                port: Optional[int] = 8080
                ssl: Optional[bool] = False
                base_url: str = ""
                path: str = "/"
                verb: str = "GET"
                query_params: Dict = {}
                path_params: Dict = {}
                body_params: Dict = {}
                headers: Dict = {}

            class Response(RPCMessage.Response):
                data: Union[str, Dict, int]
                headers: Dict[str, Any]
                status_code: int = 200

        name, request = args[0], json.loads(args[1])
        client = node.create_rpc_client(rpc_name=name, msg_type=RESTProxyMessage)
        node.run()
        say("READY")
        resp = client.call(RESTProxyMessage.Request(**request), timeout=10)
        say({"response": None if resp is None else resp.model_dump()})
    else:
        raise SystemExit(f"unknown mode {mode}")
    node.stop()


if __name__ == "__main__":
    main()
