# The compose test's client: publishes to each broker from inside the
# deployment's network (the brokers are not published), with Debian's
# client libraries.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-redis python3-paho-mqtt python3-confluent-kafka python3-boto3 \
 && rm -rf /var/lib/apt/lists/*
COPY client.py /usr/local/bin/client.py
ENTRYPOINT ["python3", "/usr/local/bin/client.py"]
