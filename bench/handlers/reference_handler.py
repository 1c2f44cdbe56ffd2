"""Baseline: a chat handler written the way tutorials do it (eager clients, sequential calls, buffered)."""

import json
import os
from typing import Any

import boto3
import openai
from aws_lambda_powertools import Logger, Metrics, Tracer
from boto3.dynamodb.conditions import Key

logger = Logger(service="reference")
metrics = Metrics(namespace="Reference", service="reference")
tracer = Tracer(service="reference", disabled=True)
secrets = boto3.client("secretsmanager")
table = boto3.resource("dynamodb").Table(os.environ["SIGSTREAM_TABLE"])
api_key = None
client = openai.OpenAI(api_key="placeholder", base_url=os.environ["SIGSTREAM_UPSTREAM_BASE_URL"])


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global api_key, client
    if api_key is None:
        api_key = secrets.get_secret_value(SecretId=os.environ["SIGSTREAM_PROVIDER_KEY_SECRET"])["SecretString"]
        client = openai.OpenAI(api_key=api_key, base_url=os.environ["SIGSTREAM_UPSTREAM_BASE_URL"])
    body = json.loads(event.get("body") or "{}")
    history = table.query(KeyConditionExpression=Key("pk").eq("CONV#reference"), ScanIndexForward=False, Limit=20)
    messages = [{"role": i["role"], "content": i["content"]} for i in reversed(history["Items"]) if "role" in i]
    stream = client.chat.completions.create(model="local-echo-1", messages=messages + body["messages"], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    metrics.add_metric(name="Turns", unit="Count", value=1)
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps({"text": text})}
