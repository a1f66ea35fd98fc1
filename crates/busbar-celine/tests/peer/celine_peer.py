"""A celine-sdk peer for busbar's CELINE interop tests, run with the Python of the venv that
holds celine-sdk 2.2.0:

    celine_peer.py HOST PORT ISSUER MODE ARGS...

The peer is a real `MqttBroker` logging in the CELINE way: an access token from the real
`OidcClientCredentialsProvider` (against the test's issuer at ISSUER, client `celine-peer`)
as the user name, and the password `jwt`. It prints `READY` once connected (and subscribed),
then one JSON object per line of its own, marked `@@ `.

Modes:
    sub PREFIX FILTER COUNT   subscribe to FILTER under PREFIX; print COUNT messages
    pub PREFIX TOPIC          publish a plain payload with a correlation id, then an event
                              through publish_event, then exit
"""

import asyncio
import json
import os
import sys

from celine.sdk.auth.oidc import OidcClientCredentialsProvider
from celine.sdk.broker.contracts import BrokerMessage
from celine.sdk.broker.mqtt import MqttBroker, MqttConfig


def say(obj):
    # One write per line, so that log output from other threads cannot split it.
    sys.stdout.flush()
    os.write(1, ("@@ " + json.dumps(obj, ensure_ascii=False) + "\n").encode())


class Event:
    """What celine-sdk's publish_event reads: `type`, `payload.community_id`, and a pydantic-
    like `model_dump`."""

    class Payload:
        community_id = "rec-1"

    type = "dt.community.updated"
    payload = Payload()
    correlation_id = "c-2"
    timestamp = None

    def model_dump(self, mode="json", by_alias=True):
        return {"@type": self.type, "payload": {"community_id": "rec-1", "members": 3}}


async def main():
    host, port, issuer, mode, *args = sys.argv[1:]
    provider = OidcClientCredentialsProvider(
        base_url=issuer, client_id="celine-peer", client_secret="peer-secret"
    )
    prefix = args[0]
    broker = MqttBroker(
        MqttConfig(host=host, port=int(port), topic_prefix=prefix, reconnect_interval=0.2),
        token_provider=provider,
    )
    await asyncio.wait_for(broker.connect(), 20)
    if mode == "sub":
        topic_filter, count = args[1], int(args[2])
        done = asyncio.Event()
        got = []

        async def handler(msg):
            say({"topic": msg.topic, "payload": msg.payload})
            got.append(1)
            if len(got) >= count:
                done.set()

        result = await broker.subscribe([topic_filter], handler)
        if not result.success:
            raise SystemExit(f"subscribe failed: {result.error}")
        say("READY")
        await asyncio.wait_for(done.wait(), 20)
        say({"stats": {k: v for k, v in broker.get_stats().items() if k != "subscriptions"}})
    elif mode == "pub":
        topic = args[1]
        say("READY")
        sys.stdin.readline()
        plain = BrokerMessage(topic=topic, payload={"v": 1, "text": "caf\u00e9"}, correlation_id="c-1")
        for result in [await broker.publish(plain), await broker.publish_event(Event())]:
            if not result.success:
                raise SystemExit(f"publish failed: {result.error}")
        say("DONE")
    else:
        raise SystemExit(f"unknown mode {mode}")
    await broker.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
