"""The compose test's client, run in the deployment's network:
    client.py SOURCE BODY...   publishes each BODY to that source's sample topic
    client.py upload DIR       stores each file of DIR in the uploads bucket, at once
    client.py get BUCKET DIR   writes each object of BUCKET into DIR
Each publish is acknowledged by its broker before this exits (NATS: by
JetStream; MQTT: QoS 1; Kafka: the delivery report)."""
import socket
import sys

ENDPOINT = "http://sqs:5000"


def nats(bodies):
    # JetStream's publish acknowledgement, over the plain NATS protocol.
    s = socket.create_connection(("nats", 4222), timeout=10)
    f = s.makefile("rb")
    f.readline()  # INFO
    s.sendall(b'CONNECT {"verbose":false}\r\nSUB _ack 1\r\n')
    for body in bodies:
        data = body.encode()
        s.sendall(b"PUB compose.nats _ack %d\r\n%s\r\n" % (len(data), data))
        while True:
            line = f.readline()
            if line.startswith(b"MSG"):
                ack = f.read(int(line.split()[-1]) + 2)
                if b'"error"' in ack:
                    raise SystemExit(f"JetStream refused: {ack!r}")
                break
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SystemExit(line.decode())


def redis(bodies):
    import redis as r

    client = r.Redis(host="redis")
    for body in bodies:
        client.xadd("compose-redis", {"payload": body})


def mqtt(bodies):
    import paho.mqtt.client as m

    client = m.Client(client_id="compose-test-client", clean_session=True)
    client.connect("mosquitto", 1883)
    client.loop_start()
    for body in bodies:
        client.publish("compose/mqtt", body, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def kafka(bodies):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": "kafka:9092"})
    if "compose-kafka" not in admin.list_topics(timeout=10).topics:
        for f in admin.create_topics([NewTopic("compose-kafka", 1, 1)]).values():
            try:
                f.result()
            except Exception as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
    producer = Producer({"bootstrap.servers": "kafka:9092"})
    failed = []
    for body in bodies:
        producer.produce("compose-kafka", body.encode(), on_delivery=lambda e, m: e and failed.append(e))
    if producer.flush(30) or failed:
        raise SystemExit(f"not delivered: {failed}")


def sqs(bodies):
    import boto3

    client = boto3.client("sqs", endpoint_url=ENDPOINT)
    url = client.get_queue_url(QueueName="compose-sqs")["QueueUrl"]
    for body in bodies:
        client.send_message(QueueUrl=url, MessageBody=body)


def upload(folder):
    import os
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client("s3", endpoint_url=ENDPOINT)

    def put(name):
        with open(os.path.join(folder, name), "rb") as f:
            s3.put_object(Bucket="uploads", Key=name, Body=f.read())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, sorted(os.listdir(folder))))


def get(bucket, folder):
    import os

    import boto3

    s3 = boto3.client("s3", endpoint_url=ENDPOINT)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            with open(os.path.join(folder, item["Key"].replace("/", "_")), "wb") as f:
                f.write(body)


PUBLISHERS = {"nats": nats, "redis": redis, "mqtt": mqtt, "kafka": kafka, "sqs": sqs}

if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command in PUBLISHERS:
        PUBLISHERS[command](args)
    elif command == "upload":
        upload(*args)
    elif command == "get":
        get(*args)
    else:
        raise SystemExit(f"unknown command {command!r}: expected one of {sorted(PUBLISHERS)}, upload, get")
