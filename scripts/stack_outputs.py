"""Prints a deployed stack's outputs as JSON and applies what the local emulator's
CloudFormation leaves out (DynamoDB TTL specifications)."""
import json
import sys

import boto3

stack = sys.argv[1]
cloudformation = boto3.client("cloudformation")
outputs = {
    o["OutputKey"]: o["OutputValue"]
    for o in cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
}
dynamodb = boto3.client("dynamodb")
for key in ("ResumeTableName", "LedgerTableName"):
    table = outputs.get(key)
    if not table:
        continue
    current = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
        )
print(json.dumps(outputs, indent=2))
