"""Creates what the compose deployment's SQS and S3 need, once moto (or
AWS) answers: the queues compose-sqs and uploads, the buckets uploads and
thumbnails, and the notification of uploads' new objects to the uploads
queue. Run by the `setup` service; safe to run again."""
import json
import time

import boto3

ENDPOINT = "http://sqs:5000"
sqs = boto3.client("sqs", endpoint_url=ENDPOINT)
s3 = boto3.client("s3", endpoint_url=ENDPOINT)

for attempt in range(120):
    try:
        sqs.list_queues()
        break
    except Exception as e:  # not up yet
        if attempt == 119:
            raise SystemExit(f"SQS at {ENDPOINT} never answered: {e}")
        time.sleep(1)

urls = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("compose-sqs", "uploads")}
for bucket in ("uploads", "thumbnails"):
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
arn = sqs.get_queue_attributes(QueueUrl=urls["uploads"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
s3.put_bucket_notification_configuration(
    Bucket="uploads",
    NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
)
print(json.dumps({"queues": urls, "buckets": ["uploads", "thumbnails"], "notify": arn}), flush=True)
