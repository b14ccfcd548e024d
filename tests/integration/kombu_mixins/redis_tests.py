# Excerpt of kombu 5.7.0 (sdist kombu-5.7.0.tar.gz, file t/integration/test_redis.py):
# its imports (lines 1-22), the redis_client fixture (lines 50-61), and the classes
# test_RedisPriority (lines 175-302) and test_RedisPublishBatch (lines 305-467),
# each copied unchanged.  sha256 of the original file:
# aca7d393ef428bfb9a08594735ca00389ec51c136d70df9133e65f79ca9c2092
# Upstream: https://github.com/celery/kombu/blob/v5.7.0/t/integration/test_redis.py
# The class names start with "test_" (kombu's pytest convention), so our pytest does
# not collect them here; tests/integration/test_kombu_mixins.py subclasses them.
# Kombu's license (BSD 3-clause):
#
# Copyright (c) 2015-2016 Ask Solem & contributors.  All rights reserved.
# Copyright (c) 2012-2014 GoPivotal Inc & contributors.  All rights reserved.
# Copyright (c) 2009-2012, Ask Solem & contributors.  All rights reserved.
#
# Redistribution and use in source and binary forms, with or without
# modification, are permitted provided that the following conditions are met:
#     * Redistributions of source code must retain the above copyright
#       notice, this list of conditions and the following disclaimer.
#     * Redistributions in binary form must reproduce the above copyright
#       notice, this list of conditions and the following disclaimer in the
#       documentation and/or other materials provided with the distribution.
#     * Neither the name of Ask Solem nor the
#       names of its contributors may be used to endorse or promote products
#       derived from this software without specific prior written permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
# AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO,
# THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
# PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL Ask Solem OR CONTRIBUTORS
# BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
# CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
# SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
# INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
# CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE)
# ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
# POSSIBILITY OF SUCH DAMAGE.
#
# ruff: noqa
# ---- excerpts of the original file follow ----
from __future__ import annotations

import os
import select
import socket
import threading
from time import monotonic, sleep
from unittest.mock import patch
from uuid import uuid4

import pytest
import redis

import kombu
import kombu.transport.redis
from kombu.asynchronous.hub import Hub
from kombu.transport.redis import (SUBCLIENT_MAX_MISSED_HEALTH_CHECKS, Channel,
                                   SentinelChannel, Transport)
from kombu.utils.json import loads

from .common import (BaseEventLoop, BaseExchangeTypes, BaseMessage,
                     BasePriority, BasicFunctionality)


@pytest.fixture()
def redis_client(connection):
    """Direct Redis client for verification."""
    conn_info = connection.info()
    host = conn_info['hostname'] or 'localhost'
    port = conn_info['port'] or 6379

    return redis.Redis(
        host=host,
        port=port,
        decode_responses=True
    )


@pytest.mark.env('redis')
@pytest.mark.flaky(reruns=5, reruns_delay=2)
class test_RedisPriority(BasePriority):

    # Comparing to py-amqp transport has Redis transport several
    # differences:
    # 1. Order of priorities is reversed
    # 2. drain_events() consumes only single value

    # redis transport has lower numbers higher priority
    PRIORITY_ORDER = 'desc'

    def test_publish_consume(self, connection):
        test_queue = kombu.Queue(
            'priority_test', routing_key='priority_test', max_priority=10
        )

        received_messages = []

        def callback(body, message):
            received_messages.append(body)
            message.ack()

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel)
                for msg, prio in [
                    [{'msg': 'first'}, 6],
                    [{'msg': 'second'}, 3],
                    [{'msg': 'third'}, 6],
                ]:
                    producer.publish(
                        msg,
                        retry=True,
                        exchange=test_queue.exchange,
                        routing_key=test_queue.routing_key,
                        declare=[test_queue],
                        serializer='pickle',
                        priority=prio
                    )
                # Sleep to make sure that queue sorted based on priority
                sleep(0.5)
                consumer = kombu.Consumer(
                    conn, [test_queue], accept=['pickle']
                )
                consumer.register_callback(callback)
                with consumer:
                    # drain_events() returns just on number in
                    # Virtual transports
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)
                # Second message must be received first
                assert received_messages[0] == {'msg': 'second'}
                assert received_messages[1] == {'msg': 'first'}
                assert received_messages[2] == {'msg': 'third'}

    def test_publish_requeue_consume(self, connection):
        test_queue = kombu.Queue(
            'priority_requeue_test',
            routing_key='priority_requeue_test', max_priority=10
        )

        received_messages = []
        received_message_bodies = []

        def callback(body, message):
            received_messages.append(message)
            received_message_bodies.append(body)
            # don't ack the message so it can be requeued

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel)
                for msg, prio in [
                    [{'msg': 'first'}, 6],
                    [{'msg': 'second'}, 3],
                    [{'msg': 'third'}, 6],
                ]:
                    producer.publish(
                        msg,
                        retry=True,
                        exchange=test_queue.exchange,
                        routing_key=test_queue.routing_key,
                        declare=[test_queue],
                        serializer='pickle',
                        priority=prio
                    )
                # Sleep to make sure that queue sorted based on priority
                sleep(0.5)
                consumer = kombu.Consumer(
                    conn, [test_queue], accept=['pickle']
                )
                consumer.register_callback(callback)
                with consumer:
                    # drain_events() consumes only one value unlike in py-amqp.
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)

                # requeue the messages
                for msg in received_messages:
                    msg.requeue()
                received_messages.clear()
                received_message_bodies.clear()

                # add a fourth higher priority message
                producer.publish(
                    {'msg': 'fourth'},
                    retry=True,
                    exchange=test_queue.exchange,
                    routing_key=test_queue.routing_key,
                    declare=[test_queue],
                    serializer='pickle',
                    priority=0  # highest priority
                )

                with consumer:
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)
                    conn.drain_events(timeout=1)

                # Fourth message must be received first
                assert received_message_bodies[0] == {'msg': 'fourth'}
                assert received_message_bodies[1] == {'msg': 'second'}
                assert received_message_bodies[2] == {'msg': 'first'}
                assert received_message_bodies[3] == {'msg': 'third'}


@pytest.mark.env('redis')
@pytest.mark.flaky(reruns=5, reruns_delay=2)
class test_RedisPublishBatch:

    def test_retry_on_timeout_keeps_publication_immediate(self, connection):
        connection.transport_options = {
            **connection.transport_options,
            'retry_on_timeout': True,
        }
        queue = kombu.Queue('batch_retry_on_timeout_queue')

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel, serializer='json')

                assert producer.supports_batch_publish is False
                with producer.batch():
                    producer.publish(
                        {'delivery': 'immediate'},
                        exchange='',
                        routing_key=queue.name,
                        declare=[queue],
                    )
                    message = queue(channel).get(no_ack=True)

        assert message.payload == {'delivery': 'immediate'}

    def test_manual_flush_sends_and_batch_continues(self, connection):
        queue = kombu.Queue('batch_manual_flush_queue')

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel, serializer='json')
                bound_queue = queue(channel)

                with producer.batch() as batch:
                    producer.publish(
                        {'position': 'first'},
                        exchange='',
                        routing_key=queue.name,
                        declare=[queue],
                    )
                    batch.flush()
                    first = bound_queue.get(no_ack=True)
                    producer.publish(
                        {'position': 'second'},
                        exchange='',
                        routing_key=queue.name,
                    )

                second = bound_queue.get(no_ack=True)

        assert first.payload == {'position': 'first'}
        assert second.payload == {'position': 'second'}

    def test_direct_priority_and_fifo(self, connection):
        exchange = kombu.Exchange('batch_direct_exchange', type='direct')
        queue = kombu.Queue(
            'batch_direct_queue',
            exchange=exchange,
            routing_key='batch.direct',
            max_priority=10,
        )

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel)
                with producer.batch():
                    for body, priority in [
                        ({'position': 'first'}, 6),
                        ({'position': 'second'}, 3),
                        ({'position': 'third'}, 6),
                    ]:
                        producer.publish(
                            body,
                            exchange=exchange,
                            routing_key='batch.direct',
                            declare=[queue],
                            serializer='json',
                            priority=priority,
                        )

                bound_queue = queue(channel)
                received = [
                    bound_queue.get(no_ack=True).payload
                    for _ in range(3)
                ]

        assert received == [
            {'position': 'second'},
            {'position': 'first'},
            {'position': 'third'},
        ]

    def test_topic_routing(self, connection):
        exchange = kombu.Exchange('batch_topic_exchange', type='topic')
        queue = kombu.Queue(
            'batch_topic_queue',
            exchange=exchange,
            routing_key='events.*',
        )

        with connection as conn:
            with conn.channel() as channel:
                producer = kombu.Producer(channel)
                with producer.batch():
                    producer.publish(
                        {'event': 'matching'},
                        exchange=exchange,
                        routing_key='events.created',
                        declare=[queue],
                        serializer='json',
                    )
                    producer.publish(
                        {'event': 'other'},
                        exchange=exchange,
                        routing_key='other.created',
                        serializer='json',
                    )

                bound_queue = queue(channel)
                message = bound_queue.get(no_ack=True)
                assert message.payload == {'event': 'matching'}
                assert bound_queue.get(no_ack=True) is None

    def test_fanout_is_deferred_until_flush(self, connection, redis_client):
        exchange = kombu.Exchange('batch_fanout_exchange', type='fanout')

        with connection as conn:
            with conn.channel() as channel:
                channel.pool
                topic = channel._get_publish_topic(
                    exchange.name,
                    'worker.created',
                )
                keyprefix = connection.transport_options.get(
                    'global_keyprefix',
                    '',
                )
                with redis_client.pubsub() as subscriber:
                    subscriber.subscribe(f'{keyprefix}{topic}')
                    subscribed = subscriber.get_message(timeout=1)
                    assert subscribed['type'] == 'subscribe'

                    producer = kombu.Producer(channel)
                    with producer.batch():
                        producer.publish(
                            {'event': 'fanout'},
                            exchange=exchange,
                            routing_key='worker.created',
                            declare=[exchange],
                            serializer='json',
                        )
                        assert subscriber.get_message(timeout=0.05) is None

                    published = subscriber.get_message(timeout=1)

        assert published['type'] == 'message'
        message = loads(published['data'])
        assert message['properties']['delivery_info'] == {
            'exchange': exchange.name,
            'routing_key': 'worker.created',
        }
